"""Sandbox images look like what they stand for: the right size, the right background, the product
filling a main image, the variation's colour, the same bytes for the same request."""

from __future__ import annotations

import pytest

from providers.sandbox.render import (
    NONCOMPLIANT_GREY,
    Look,
    _render_cached,
    colour_for,
    render,
    scene_for,
    shape_for,
)

from .images import border_colours, centre, fill, off_white_outside_the_product, open_rgb

PRODUCTS = [
    "Stainless Steel Insulated Water Bottle, 32 oz",
    "Ergonomic Office Chair with Lumbar Support",
    "Organic Matcha Green Tea Powder",
    "Bamboo Cutting Board Set of 3",
    "Wireless Charging Pad, 15W",
    "Natural Soy Wax Scented Candle",
    "Trail Running Shoe",
    "Ceramic Coffee Mug",
    "Gizmo 3000",
]


@pytest.mark.parametrize("subject", PRODUCTS)
@pytest.mark.parametrize("size", [(1500, 1500), (2000, 1200)])
def test_white_background_is_pure_white_and_the_product_fills_the_frame(
    subject: str, size: tuple[int, int]
) -> None:
    image = open_rgb(render(Look(subject=subject, scene="white", size=size, badge="XL")))
    assert image.size == size
    assert border_colours(image) == {(255, 255, 255)}
    assert not off_white_outside_the_product(image), "no soft edge or shadow outside the product"
    assert fill(image) >= 0.9


@pytest.mark.parametrize("size", [(1000, 1000), (1500, 1500), (2000, 2000), (970, 300), (1080, 1920)])
def test_images_come_at_the_requested_size(size: tuple[int, int]) -> None:
    assert open_rgb(render(Look(subject="bottle", scene="lifestyle", size=size))).size == size


def test_a_cap_keeps_the_aspect_ratio() -> None:
    assert open_rgb(render(Look(subject="bottle", size=(970, 300)), max_side=32)).size == (32, 10)
    assert open_rgb(render(Look(subject="bottle", size=(99_999, 99_999)))).size == (4096, 4096)


@pytest.mark.parametrize(
    "style",
    [
        "lifestyle",
        "LIFESTYLE_CONTEXTUAL",
        "kitchen",
        "outdoor",
        "luxury",
        "marble_surface",
        "MODEL_LIFESTYLE",
        "hero_banner",
    ],
)
def test_lifestyle_styles_put_a_scene_behind_the_product(style: str) -> None:
    image = open_rgb(render(Look(subject="Water Bottle", scene=scene_for(style), size=(600, 600))))
    assert (255, 255, 255) not in border_colours(image)
    top, bottom = image.getpixel((5, 5)), image.getpixel((5, 595))
    assert top != bottom, "a wall and a floor (or sky and ground), not one flat colour"


@pytest.mark.parametrize(
    ("style", "scene"),
    [
        ("white_bg", "white"),
        ("CLEAN_WHITE_BG", "white"),
        ("transparent_cutout", "transparent"),
        ("MODEL_STUDIO", "studio"),
        ("LIFESTYLE_INFOGRAPHIC", "lifestyle"),
        ("infographic", "layout"),
        ("COMPARISON_CHART", "layout"),
    ],
)
def test_styles_name_their_scene(style: str, scene: str) -> None:
    assert scene_for(style) == scene


def test_the_shape_comes_from_the_products_words() -> None:
    assert shape_for("Stainless Steel Insulated Water Bottle") == "bottle"
    assert (
        shape_for("https://m.media-amazon.com/images/I/61bottle-main.jpg") == "bottle"
    )  # all ProdVisual sees
    assert shape_for("Ergonomic Office Chair") == "chair"
    assert shape_for("Organic Matcha Green Tea Powder") == "pouch"
    assert shape_for("Gizmo 3000") == shape_for("Gizmo 3000")  # unknown: stable


def test_the_variations_colour_wins() -> None:
    blue, green = (
        Look(subject="Water Bottle", colour=c, size=(400, 400)) for c in ("Ocean Blue", "Forest Green")
    )
    assert colour_for("Water Bottle", "Ocean Blue") != colour_for("Water Bottle", "Forest Green")
    assert centre(open_rgb(render(blue))) != centre(open_rgb(render(green)))
    assert colour_for("x", "Mauve Mist") == colour_for("y", "Mauve Mist")  # unknown names: a stable colour


def test_same_look_same_bytes() -> None:
    look = Look(subject="Water Bottle", scene="kitchen", size=(800, 800), caption="Stays cold\n24 h")
    first = render(look)
    _render_cached.cache_clear()
    assert render(look) == first
    assert render(Look(subject="Water Bottle", scene="kitchen", size=(800, 800), shot="other")) != first


def test_noncompliant_main_image_is_on_light_grey() -> None:
    image = open_rgb(
        render(Look(subject="Water Bottle", scene="white", size=(500, 500), backdrop=NONCOMPLIANT_GREY))
    )
    assert border_colours(image) == {NONCOMPLIANT_GREY}


def test_formats() -> None:
    assert render(Look(subject="mug", size=(200, 200), fmt="jpeg")).startswith(b"\xff\xd8")
    assert render(Look(subject="mug", size=(200, 200), fmt="webp"))[8:12] == b"WEBP"
    from io import BytesIO

    from PIL import Image

    cutout = Image.open(BytesIO(render(Look(subject="mug", scene="transparent", size=(200, 200))))).convert(
        "RGBA"
    )
    assert cutout.getpixel((0, 0))[3] == 0 and cutout.getpixel((100, 100))[3] == 255
