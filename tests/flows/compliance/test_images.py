"""Image measurements on bytes: type by content, size, white border, product fill."""

from __future__ import annotations

from flows.compliance import measure

from .images import product_image


def test_compliant_main_image_is_white_at_the_border_and_filled() -> None:
    facts = measure(product_image((1500, 1500), fill=0.9))
    assert (facts.format, facts.width, facts.height) == ("PNG", 1500, 1500)
    assert facts.border_white and facts.border_darkest == 255 and not facts.border_transparent
    assert 0.89 <= facts.fill <= 0.91


def test_grey_or_off_white_border_is_not_white() -> None:
    grey = measure(product_image(background=(200, 200, 200)))
    assert not grey.border_white and grey.border_darkest == 200
    off_white = measure(product_image(background=(255, 255, 254)))
    assert not off_white.border_white and off_white.border_darkest == 254
    assert off_white.fill > 0.85  # near-white counts as background for the fill


def test_one_dark_pixel_in_the_frame_is_enough_to_fail() -> None:
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(product_image((1000, 1000))))
    image.putpixel((999, 500), (128, 128, 128))
    out = BytesIO()
    image.save(out, "PNG")
    assert not measure(out.getvalue()).border_white


def test_transparent_background_is_not_white() -> None:
    facts = measure(product_image(background=(255, 255, 255, 0), mode="RGBA"))
    assert facts.border_transparent and not facts.border_white
    assert 0.89 <= facts.fill <= 0.91  # transparent pixels are background


def test_fill_is_the_larger_side_of_the_product_box() -> None:
    assert 0.49 <= measure(product_image(fill=0.5)).fill <= 0.51
    assert measure(product_image(fill=0.01)).fill < 0.02


def test_type_is_sniffed_from_the_bytes() -> None:
    assert measure(product_image(fmt="WEBP")).format == "WEBP"
    assert measure(product_image(fmt="JPEG")).format == "JPEG"
    assert measure(product_image(fmt="JPEG")).border_white  # flat white survives JPEG
    assert measure(product_image(fmt="GIF", mode="P")).format == "GIF"
    broken = measure(b"\x89PNG\r\n\x1a\n not really")
    assert broken.format is None and broken.error


def test_header_only_gives_type_and_size_without_decoding() -> None:
    facts = measure(product_image((1500, 1000), fmt="JPEG"), pixels=False)
    assert (facts.format, facts.width, facts.height) == ("JPEG", 1500, 1000)
    assert not facts.pixels_measured and facts.border_white is None and facts.fill is None
