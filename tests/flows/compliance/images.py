"""Images synthesized with Pillow for the compliance tests."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from flows.compliance import CheckedOutput, ImageFacts, measure


def product_image(
    size: tuple[int, int] = (1500, 1500),
    *,
    background: tuple[int, ...] = (255, 255, 255),
    fill: float = 0.9,
    fmt: str = "PNG",
    mode: str = "RGB",
) -> bytes:
    """A dark product (an ellipse) centred on ``background``, spanning ``fill`` of the frame."""
    width, height = size
    image = Image.new(mode, size, background)
    mx, my = width * (1 - fill) / 2, height * (1 - fill) / 2
    ImageDraw.Draw(image).ellipse(
        (mx, my, width - mx - 1, height - my - 1), fill=(40, 60, 160, 255)[: len(mode)]
    )
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def checked(
    data: bytes | None = None,
    *,
    step: str = "images",
    label: str = "white_bg-1",
    provider: str = "prodvisual",
    facts: ImageFacts | None = None,
) -> CheckedOutput:
    """An archived output as the rules see it, measured from ``data``."""
    data = data if data is not None else product_image()
    return CheckedOutput(
        key=f"US/B0TEST0001/{step}/{provider}-{label}.png",
        step=step,
        label=label,
        provider=provider,
        sha256="x" * 64,
        size=len(data),
        content_type="image/png",
        facts=facts if facts is not None else measure(data),
    )
