"""Reading sandbox images the way a marketplace check would."""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageChops

RGB = tuple[int, int, int]


def open_rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def border_colours(image: Image.Image) -> set[RGB]:
    """Every colour on the image's 1-pixel frame."""
    w, h = image.size
    strips = [
        image.crop((0, 0, w, 1)),
        image.crop((0, h - 1, w, h)),
        image.crop((0, 0, 1, h)),
        image.crop((w - 1, 0, w, h)),
    ]
    return {c for strip in strips for _, c in strip.getcolors(maxcolors=w * h) or []}


def _mask(image: Image.Image, test: Callable[[int], bool]) -> Image.Image:
    """White where any channel passes ``test``."""
    marks = [band.point(lambda v: 255 if test(v) else 0) for band in image.split()]
    return ImageChops.lighter(ImageChops.lighter(marks[0], marks[1]), marks[2])


def product_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    """The box of pixels with any channel < 250 (what a fill check measures)."""
    return _mask(image, lambda v: v < 250).getbbox()


def fill(image: Image.Image) -> float:
    """Amazon-style fill: the product's box over the frame, on its longest axis."""
    box = product_box(image)
    if box is None:
        return 0.0
    return max((box[2] - box[0]) / image.width, (box[3] - box[1]) / image.height)


def off_white_outside_the_product(image: Image.Image) -> bool:
    """Any pixel outside the product's box that is not exactly white (a soft edge, a shadow)."""
    mask = _mask(image, lambda v: v < 255)
    box = product_box(image)
    if box is not None:
        mask.paste(0, box)
    return mask.getbbox() is not None


def centre(image: Image.Image) -> RGB:
    return image.getpixel((image.width // 2, image.height // 2))  # type: ignore[return-value]
