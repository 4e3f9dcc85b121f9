"""Measurements of one image, taken once from its archived bytes and kept in the product's manifest.

Type and size come from the header alone (no decoding). Pixels are decoded only where a rule needs
them (the main image's border and fill), and measured by Pillow on whole images or strips
(``getextrema`` on the frame, ``getbbox`` on a thresholded copy), never per pixel in Python: a
2000x2000 PNG takes about its decoding time plus 25 ms.
"""

from __future__ import annotations

import io
from typing import cast

from PIL import Image
from pydantic import BaseModel, Field

BORDER_PX = 2
"""Width of the frame whose pixels must all be exactly white (255, 255, 255)."""
PRODUCT_THRESHOLD = 250
"""A pixel belongs to the product when any of its channels is below this (near-white is background)."""
MAX_PIXELS = 100_000_000
"""Larger images are not decoded (Pillow's decompression-bomb guard would refuse them anyway)."""


class ImageFacts(BaseModel):
    """What the rules need to know about an image, independent of any marketplace's limits."""

    format: str | None = Field(None, description="the type its bytes are (Pillow's sniffing), e.g. 'PNG'")
    width: int = 0
    height: int = 0
    border_white: bool | None = Field(None, description="every pixel of the outer frame is exactly RGB 255")
    border_darkest: int | None = Field(
        None, description="lowest channel value in the frame (255: pure white)"
    )
    border_transparent: bool | None = Field(None, description="the frame has (partly) transparent pixels")
    fill: float | None = Field(
        None, description="max(bbox_w / width, bbox_h / height) of the non-white pixels"
    )
    error: str | None = Field(None, description="why the bytes could not be measured")
    """The pixel fields are None when only the header was read (``measure(pixels=False)``)."""

    @property
    def pixels_measured(self) -> bool:
        return self.fill is not None

    @property
    def longest_side(self) -> int:
        return max(self.width, self.height)


def measure(data: bytes, *, pixels: bool = True) -> ImageFacts:
    """The facts of one image (type and size only, unless ``pixels``); an unreadable file has ``error``
    set and no format."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
            if not pixels:
                return ImageFacts(format=fmt, width=width, height=height)
            if width * height > MAX_PIXELS:
                return ImageFacts(format=fmt, width=width, height=height, error="too many pixels to measure")
            image.load()
            return _measure_pixels(image, fmt, width, height)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types (SyntaxError, EOFError...): unreadable
        return ImageFacts(error=f"not a readable image ({type(exc).__name__})")


def _measure_pixels(image: Image.Image, fmt: str | None, width: int, height: int) -> ImageFacts:
    alpha = _alpha(image)
    rgb = image.convert("RGB")
    if alpha is not None:  # transparent pixels are background for the fill, never white for the border
        rgb = Image.composite(rgb, Image.new("RGB", rgb.size, (255, 255, 255)), alpha)
    frame = _frame(width, height, min(BORDER_PX, width, height))
    border_min = _lowest(rgb, frame)
    transparent = alpha is not None and _lowest(alpha, frame) < 255
    # a pixel is product when any channel is below the threshold: getbbox of an RGB image spans the
    # pixels with any non-zero band
    product = rgb.point(lambda v: 255 if v < PRODUCT_THRESHOLD else 0).getbbox()
    fill = 0.0
    if product is not None:
        left, top, right, bottom = product
        fill = max((right - left) / width, (bottom - top) / height)
    return ImageFacts(
        format=fmt,
        width=width,
        height=height,
        border_white=border_min == 255 and not transparent,
        border_darkest=border_min,
        border_transparent=transparent,
        fill=round(fill, 4),
    )


def _lowest(image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> int:
    """The lowest value of any band of ``image`` within ``boxes``."""
    lows = []
    for box in boxes:
        extrema = image.crop(box).getextrema()
        bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
        lows += [int(cast(tuple[int, int], band)[0]) for band in bands]
    return min(lows)


def _alpha(image: Image.Image) -> Image.Image | None:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return None


def _frame(width: int, height: int, k: int) -> list[tuple[int, int, int, int]]:
    """The four strips of a ``k``-pixel frame (top, bottom, left, right)."""
    return [
        (0, 0, width, k),
        (0, height - k, width, height),
        (0, 0, k, height),
        (width - k, 0, width, height),
    ]
