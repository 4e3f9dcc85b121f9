"""Sandbox images that look like what they stand for.

The sandboxes' outputs feed everything downstream of a run (compliance checks, the review gallery,
a person's eye), so they must resemble the real thing: a product-like shape chosen from the
product's words (a bottle for "Water Bottle", a chair for "Office Chair"), in the product's or the
variation's colour, on the background its style names, at the size the request asked for.

``Look`` says what one image stands for; ``render`` draws it. Everything is deterministic (same
``Look`` -> same bytes) and cheap: a handful of Pillow primitives drawn at the target size, gradients
stretched from one pixel column, PNG at a low compression level. White-background looks keep every
pixel outside the product exactly (255, 255, 255) (no antialiasing, no shadow) and the product's box
spans 92% of the frame on its limiting axis, so a main-image "fill >= 85%" check passes.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
Scene = Literal[
    "white",
    "transparent",
    "studio",
    "lifestyle",
    "kitchen",
    "outdoor",
    "dark",
    "gradient",
    "solid",
    "marble",
    "layout",
]
Format = Literal["png", "jpeg", "webp"]

WHITE: RGB = (255, 255, 255)
NONCOMPLIANT_GREY: RGB = (235, 235, 235)
"""The backdrop of a deliberately non-compliant "white" main image (SandboxConfig.noncompliant_asins)."""
FILL = 0.92
"""Share of the frame the product spans on white backgrounds (on its limiting axis)."""
MAX_SIDE = 4096
"""Largest side the sandbox renders; a bigger request (ProdVisual accepts 5 digits) is scaled down."""

# words in the product's text -> shape; the first match in this order wins
SHAPE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chair", ("chair", "stool", "seat", "stuhl")),
    ("shoe", ("shoe", "sneaker", "boot", "trainer", "sandal", "schuh")),
    ("mug", ("mug", "cup", "tasse")),
    ("bottle", ("bottle", "flask", "tumbler", "flasche", "spray", "shampoo", "serum")),
    ("jar", ("candle", "jar", "cream", "balm", "kerze")),
    ("pad", ("charg", "pad", "speaker", "puck", "scale", "router")),
    ("board", ("board", "tray", "plate", "brett")),
    ("pouch", ("powder", "tea", "matcha", "coffee", "snack", "pouch", "bag", "food", "grocery")),
)
FALLBACK_SHAPES = ("box", "bottle", "jar", "pouch", "box")
SHAPE_ASPECT = {
    "chair": 0.62,
    "shoe": 2.1,
    "mug": 1.15,
    "bottle": 0.36,
    "jar": 0.78,
    "pad": 1.9,
    "board": 1.45,
    "pouch": 0.72,
    "box": 0.8,
}  # width / height of the drawn product
SHAPE_COLOURS: dict[str, RGB] = {
    "chair": (52, 56, 64),
    "shoe": (200, 60, 50),
    "mug": (40, 110, 170),
    "bottle": (70, 120, 160),
    "jar": (190, 120, 40),
    "pad": (45, 48, 55),
    "board": (196, 150, 95),
    "pouch": (90, 140, 60),
    "box": (60, 90, 150),
}
COLOUR_WORDS: dict[str, RGB] = {
    "ocean": (20, 90, 160),
    "navy": (25, 40, 90),
    "blue": (40, 100, 190),
    "teal": (20, 130, 130),
    "forest": (30, 100, 50),
    "green": (50, 150, 70),
    "olive": (110, 120, 50),
    "matcha": (110, 160, 60),
    "black": (25, 25, 28),
    "grey": (125, 128, 132),
    "gray": (125, 128, 132),
    "silver": (170, 175, 180),
    "steel": (150, 158, 165),
    "white": (236, 236, 232),
    "red": (190, 35, 40),
    "pink": (220, 110, 150),
    "purple": (110, 60, 150),
    "lavender": (160, 130, 200),
    "yellow": (225, 190, 40),
    "orange": (230, 120, 30),
    "brown": (110, 70, 40),
    "beige": (215, 195, 160),
    "bamboo": (196, 150, 95),
    "wood": (160, 110, 60),
    "gold": (200, 160, 50),
    "amber": (190, 120, 40),
    "rose": (210, 120, 130),
    "schwarz": (25, 25, 28),
    "grau": (125, 128, 132),
    "blau": (40, 100, 190),
    "rot": (190, 35, 40),
}


# rooms: wall gradient (top, bottom) and the floor the product stands on
WALLS: dict[str, tuple[RGB, RGB]] = {
    "lifestyle": ((236, 226, 210), (214, 200, 180)),
    "kitchen": ((232, 236, 236), (210, 216, 218)),
    "outdoor": ((150, 200, 240), (220, 236, 248)),
    "marble": ((240, 238, 236), (222, 220, 218)),
}
FLOORS: dict[str, RGB] = {
    "lifestyle": (150, 110, 75),
    "kitchen": (90, 92, 96),
    "outdoor": (96, 150, 70),
    "marble": (236, 234, 232),
}


@dataclass(frozen=True)
class Look:
    """What one sandbox image stands for."""

    subject: str
    """The product's words (title, category, image URL, prompt): pick the shape and default colour."""
    scene: Scene = "white"
    size: tuple[int, int] = (1500, 1500)
    colour: str = ""
    """A colour name (the variation's colour attribute) overriding the product's colour."""
    caption: str = ""
    """Headline of layouts, A+ modules and scenes; never drawn on white or transparent looks."""
    badge: str = ""
    """Printed on the product itself (a variation's size), so even a white main image shows it."""
    fmt: Format = "png"
    backdrop: RGB = WHITE
    """Background of the white scene: (235, 235, 235) for a deliberately non-compliant main image."""
    shot: str = ""
    """Which shot of the product this is (style, position in the job): shots differ a little (the
    product's proportions, which way it faces, the room's details) as two photos would."""


# words in a style id (ListingRVA's, ProdVisual's, Pixii's) -> the scene behind the product; first match
# wins, so "MODEL_STUDIO" is a studio shot and "LIFESTYLE_INFOGRAPHIC" a scene (with callouts)
SCENE_WORDS: tuple[tuple[str, Scene], ...] = (
    ("transparent", "transparent"),
    ("white", "white"),
    ("main", "white"),
    ("studio", "studio"),
    ("shadow", "studio"),
    ("reflection", "studio"),
    ("mockup", "studio"),
    ("kitchen", "kitchen"),
    ("outdoor", "outdoor"),
    ("marble", "marble"),
    ("luxury", "dark"),
    ("premium", "dark"),
    ("gradient", "gradient"),
    ("social", "gradient"),
    ("color_pop", "solid"),
    ("lifestyle", "lifestyle"),
    ("model", "lifestyle"),
    ("context", "lifestyle"),
    ("in_hand", "lifestyle"),
    ("flat_lay", "lifestyle"),
    ("seasonal", "lifestyle"),
    ("holiday", "lifestyle"),
    ("hero", "lifestyle"),
    ("banner", "lifestyle"),
    ("photo", "lifestyle"),
)
CAPTION_WORDS = (
    "infographic",
    "callout",
    "chart",
    "spec",
    "comparison",
    "before",
    "grid",
    "ingredient",
    "dimension",
    "size",
    "multi",
    "packaging",
    "feature",
)


def scene_for(style: str) -> Scene:
    """The scene a style names; layouts (infographics, charts, A+ panels) by default."""
    text = style.lower()
    return next((scene for word, scene in SCENE_WORDS if word in text), "layout")


def caption_for(style: str, headline: str, details: str | None = None) -> str:
    """Headline and callouts for styles that carry text (infographics, charts, layouts), else ""."""
    if scene_for(style) != "layout" and not any(w in style.lower() for w in CAPTION_WORDS):
        return ""
    callouts = [s.strip() for s in (details or "").replace("\n", ". ").split(". ") if s.strip()][:3]
    return "\n".join([headline, *callouts])


def shape_for(subject: str) -> str:
    """The shape the product's words name (see SHAPE_WORDS), else one picked by its hash."""
    return _shape_word(subject) or FALLBACK_SHAPES[_digest(subject)[0] % len(FALLBACK_SHAPES)]


def _shape_word(subject: str) -> str | None:
    words = _words(subject)
    for shape, affixes in SHAPE_WORDS:
        if any(w.startswith(affixes) or w.endswith(affixes) for w in words):
            return shape
    return None


def colour_for(subject: str, colour: str = "") -> RGB:
    """The named colour (first known word: 'Ocean Blue' -> ocean; an unknown name still gets a stable
    colour of its own), else a colour word of the product's, else the shape's usual colour."""
    if colour.strip():
        known = [w for w in _words(colour) if w in COLOUR_WORDS]
        if known:
            return COLOUR_WORDS[known[0]]
        d = _digest(colour.strip().lower())
        return (30 + d[0] % 180, 30 + d[1] % 180, 30 + d[2] % 180)
    known = [w for w in _words(subject) if w in COLOUR_WORDS]
    if known:
        return COLOUR_WORDS[known[0]]
    if _shape_word(subject) is None:  # a product we know nothing about: a colour of its own
        d = _digest(subject)
        return (40 + d[3] % 160, 40 + d[4] % 160, 40 + d[5] % 160)
    return SHAPE_COLOURS[shape_for(subject)]


def render(look: Look, max_side: int | None = None) -> bytes:
    """The image's bytes in ``look.fmt``; ``max_side`` caps the longest side (tests render tiny)."""
    w, h = look.size
    scale = min(1.0, (max_side or MAX_SIDE) / max(w, h), MAX_SIDE / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return _render_cached(replace(look, size=size))


def content_type(fmt: str) -> str:
    return {"jpeg": "image/jpeg", "webp": "image/webp"}.get(fmt, "image/png")


@lru_cache(maxsize=64)
def _render_cached(look: Look) -> bytes:
    image = _canvas(look)
    draw = ImageDraw.Draw(image)
    box = _product_box(look)
    if look.scene in ("lifestyle", "kitchen", "outdoor", "dark", "marble", "studio", "gradient", "solid"):
        _shadow(draw, box, look)
    _draw_product(draw, shape_for(look.subject), box, _lit(colour_for(look.subject, look.colour), look), look)
    if look.caption and look.scene not in ("white", "transparent"):
        _caption(draw, look)
    return _encode(image, look.fmt, transparent=look.scene == "transparent")


# --- backgrounds ----------------------------------------------------------------------------------


def _canvas(look: Look) -> Image.Image:
    """A palette ("P") image: these looks have a few dozen colours, and a palette PNG encodes ~5x
    faster than RGB at 1500-2000 px (measured: 3-6 ms instead of 16-40 ms)."""
    w, h = look.size
    tint = colour_for(look.subject, look.colour)
    if look.scene == "white":
        return Image.new("P", (w, h), look.backdrop)
    if look.scene in ("transparent", "studio"):
        return Image.new("P", (w, h), WHITE)  # transparent: index 0 is declared transparent at encoding
    if look.scene == "solid":
        return Image.new("P", (w, h), tuple(255 - c // 2 for c in tint[::-1]))
    if look.scene == "dark":
        return _vertical_gradient((w, h), (58, 56, 60), (12, 12, 14))
    if look.scene == "gradient":
        return _vertical_gradient((w, h), (250, 246, 240), _mix(tint, WHITE, 0.7))
    if look.scene == "layout":
        return _vertical_gradient((w, h), (252, 252, 250), (232, 236, 242))
    return _room(look, (w, h))


def _room(look: Look, size: tuple[int, int]) -> Image.Image:
    """Wall above, floor or counter below where the product stands, a detail or two on the wall."""
    w, h = size
    d = _digest(f"{look.subject}|{look.scene}|{look.shot}")
    horizon = int(h * 0.66)
    top, bottom = WALLS[look.scene]
    image = _vertical_gradient((w, h), top, bottom)
    draw = ImageDraw.Draw(image)
    floor = FLOORS[look.scene]
    draw.rectangle([0, horizon, w, h], fill=floor)
    line = _mix(floor, (0, 0, 0), 0.15)
    if look.scene == "lifestyle":  # floorboards and a window
        for x in range(-h, w, max(4, w // 7)):
            draw.line(
                [(x + (h - horizon), horizon), (x + (h - horizon) - (h - horizon) // 2, h)],
                fill=line,
                width=max(1, w // 400),
            )
        wx = int(w * (0.06 if d[0] % 2 else 0.68))
        draw.rectangle(
            [wx, int(h * 0.1), wx + int(w * 0.26), int(h * 0.48)],
            fill=(226, 240, 250),
            outline=(250, 250, 248),
            width=max(1, w // 120),
        )
        draw.line(
            [(wx + int(w * 0.13), int(h * 0.1)), (wx + int(w * 0.13), int(h * 0.48))],
            fill=(250, 250, 248),
            width=max(1, w // 160),
        )
    elif look.scene == "kitchen":  # tiles and a counter edge
        step = max(4, w // 12)
        for x in range(0, w, step):
            draw.line([(x, 0), (x, horizon)], fill=(215, 220, 222), width=1)
        for y in range(0, horizon, step // 2):
            draw.line([(0, y), (w, y)], fill=(215, 220, 222), width=1)
        draw.rectangle([0, horizon, w, horizon + max(2, h // 60)], fill=(60, 62, 66))
    elif look.scene == "outdoor":  # sun and a far hill
        r = max(2, w // 14)
        cx = int(w * 0.8)
        draw.ellipse([cx - r, int(h * 0.1), cx + r, int(h * 0.1) + 2 * r], fill=(255, 236, 160))
        draw.ellipse([-w // 3, horizon - h // 10, w, horizon + h // 10], fill=(120, 170, 90))
    else:  # marble veins
        for i in range(6):
            y0 = horizon + (d[i] % 100) * (h - horizon) // 100
            draw.line([(0, y0), (w, y0 + (d[i + 6] % 60 - 30) * h // 600)], fill=(205, 205, 208), width=1)
    return image


def _vertical_gradient(size: tuple[int, int], top: RGB, bottom: RGB, bands: int = 48) -> Image.Image:
    """Full-width bands from ``top`` to ``bottom``: a soft gradient in a few palette entries."""
    w, h = size
    image = Image.new("P", (w, h), top)
    draw = ImageDraw.Draw(image)
    bands = max(1, min(bands, h))
    for n in range(1, bands):
        draw.rectangle([0, n * h // bands, w, (n + 1) * h // bands], fill=_mix(top, bottom, n / (bands - 1)))
    return image


# --- the product ----------------------------------------------------------------------------------


def _product_box(look: Look) -> tuple[int, int, int, int]:
    """Where the product goes: centred at 92% on white, standing on the floor in scenes, on the
    left of layouts (text on the right)."""
    w, h = look.size
    aspect = SHAPE_ASPECT[shape_for(look.subject)] * (1 + (_shot(look)[1] % 13 - 6) / 100)
    if look.scene in ("white", "transparent"):
        area, cx, bottom = (w * FILL, h * FILL), w / 2, h * (1 + FILL) / 2
    elif look.scene == "layout":
        area, cx, bottom = (w * 0.42, h * 0.78), w * 0.26, h * 0.89
    elif look.scene in ("studio", "dark", "gradient", "solid"):
        area, cx, bottom = (w * 0.7, h * 0.74), w / 2, h * 0.86
    else:
        area, cx, bottom = (w * 0.5, h * 0.6), w * (0.42 + (_digest(look.subject)[1] % 16) / 100), h * 0.84
    if look.caption and look.scene not in ("white", "transparent", "layout"):
        area = (area[0], min(area[1], h * 0.55))  # leave the top 29% to the caption
    bw, bh = (area[0], area[0] / aspect) if area[0] / aspect <= area[1] else (area[1] * aspect, area[1])
    x0, y0 = int(cx - bw / 2), int(bottom - bh)
    return x0, y0, max(x0 + 2, int(cx + bw / 2)), max(y0 + 2, int(bottom))


def _shadow(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], look: Look) -> None:
    """A contact shadow under the product, a darker tone of the ground it stands on."""
    x0, y0, x1, y1 = box
    depth = max(1, (y1 - y0) // 14)
    tone = (40, 40, 44) if look.scene != "dark" else (4, 4, 6)
    ground = FLOORS.get(look.scene, (20, 20, 22) if look.scene == "dark" else (236, 236, 236))
    draw.ellipse(
        [x0 - (x1 - x0) // 10, y1 - depth, x1 + (x1 - x0) // 10, y1 + depth], fill=_mix(ground, tone, 0.35)
    )


def _draw_product(
    draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: RGB, look: Look
) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dark, light = _mix(colour, (0, 0, 0), 0.45), _mix(colour, WHITE, 0.35)
    line = max(1, min(w, h) // 60)
    pen = _Pen(draw, x0, y0, w, h, colour, dark, line, flip=bool(_shot(look)[0] % 2))
    if shape == "bottle":
        pen.rect(0.3, 0.0, 0.7, 0.09, dark)  # cap
        pen.rect(0.36, 0.08, 0.64, 0.2)  # neck
        pen.rounded(0.0, 0.17, 1.0, 1.0, 0.18)  # body
        pen.rect(0.12, 0.24, 0.2, 0.9, light)  # highlight
    elif shape == "jar":
        pen.rect(0.06, 0.0, 0.94, 0.14, dark)  # lid
        pen.rounded(0.0, 0.12, 1.0, 1.0, 0.08)
        pen.rect(0.14, 0.32, 0.86, 0.72, _mix(colour, WHITE, 0.75))  # label
    elif shape == "mug":
        pen.ring(0.62, 0.22, 1.0, 0.72)  # handle
        pen.rounded(0.0, 0.0, 0.82, 1.0, 0.06)
        pen.rect(0.08, 0.08, 0.16, 0.9, light)
    elif shape == "chair":
        _draw_chair(pen, dark)
    elif shape == "shoe":
        pen.poly(
            [
                (0.0, 0.55),
                (0.05, 0.3),
                (0.35, 0.25),
                (0.5, 0.0),
                (0.68, 0.05),
                (0.72, 0.4),
                (1.0, 0.62),
                (1.0, 0.85),
                (0.0, 0.85),
            ]
        )
        pen.rect(0.0, 0.85, 1.0, 1.0, _mix(colour, WHITE, 0.8))  # sole
    elif shape == "pad":
        pen.ellipse(0.0, 0.25, 1.0, 1.0, dark)  # edge
        pen.ellipse(0.0, 0.0, 1.0, 0.75)  # top
        pen.ellipse(0.45, 0.33, 0.55, 0.43, (80, 200, 255))  # LED
    elif shape == "board":
        pen.rounded(0.0, 0.0, 1.0, 1.0, 0.1)
        pen.rounded(0.05, 0.08, 0.95, 0.92, 0.08, light)  # juice groove
        pen.rounded(0.1, 0.15, 0.9, 0.85, 0.06)
        pen.ellipse(0.44, 0.02, 0.56, 0.1, look.backdrop if look.scene == "white" else dark)
    elif shape == "pouch":
        pen.poly([(0.06, 0.08), (0.94, 0.08), (1.0, 1.0), (0.0, 1.0)])
        pen.rect(0.04, 0.0, 0.96, 0.09, dark)  # seal
        pen.rect(0.16, 0.36, 0.84, 0.7, _mix(colour, WHITE, 0.75))  # label
    else:  # box: front, top and side faces
        pen.poly([(0.0, 0.18), (0.72, 0.18), (0.72, 1.0), (0.0, 1.0)])
        pen.poly([(0.0, 0.18), (0.28, 0.0), (1.0, 0.0), (0.72, 0.18)], light)
        pen.poly([(0.72, 0.18), (1.0, 0.0), (1.0, 0.82), (0.72, 1.0)], dark)
    if look.badge:
        _badge(draw, box, look.badge, colour)


def _draw_chair(pen: _Pen, dark: RGB) -> None:
    """An office chair: the one shape built from many parts (back, seat, column, base, castors),
    kept apart so the other shapes stay readable side by side."""
    pen.rounded(0.18, 0.0, 0.82, 0.5, 0.12)  # back
    pen.rect(0.14, 0.26, 0.22, 0.34, dark)  # lumbar knob
    pen.rect(0.44, 0.5, 0.56, 0.58, dark)
    pen.rounded(0.06, 0.56, 0.94, 0.66, 0.3)  # seat
    pen.rect(0.46, 0.66, 0.54, 0.86, dark)  # column
    pen.poly([(0.0, 0.96), (0.5, 0.86), (1.0, 0.96), (0.5, 0.9)], dark)  # base
    for cx in (0.02, 0.48, 0.94):
        pen.ellipse(cx - 0.02, 0.94, cx + 0.06, 1.0, dark)  # castors


class _Pen:
    """Draws in the product's box with coordinates as fractions of it, outlined in the dark tone (so
    the product's edge is never near-white, whatever its colour)."""

    def __init__(
        self,
        draw: ImageDraw.ImageDraw,
        x0: int,
        y0: int,
        w: int,
        h: int,
        fill: RGB,
        outline: RGB,
        line: int,
        flip: bool = False,
    ) -> None:
        self.draw, self.x0, self.y0, self.w, self.h = draw, x0, y0, w, h
        self.fill, self.outline, self.line, self.flip = fill, outline, line, flip

    def _xy(self, fx0: float, fy0: float, fx1: float, fy1: float) -> list[int]:
        if self.flip:  # mirrored: the product faces the other way
            fx0, fx1 = 1 - fx1, 1 - fx0
        x0, y0 = self.x0 + round(fx0 * self.w), self.y0 + round(fy0 * self.h)
        return [
            x0,
            y0,
            max(x0, self.x0 + round(fx1 * self.w) - 1),
            max(y0, self.y0 + round(fy1 * self.h) - 1),
        ]

    def rect(self, fx0: float, fy0: float, fx1: float, fy1: float, fill: RGB | None = None) -> None:
        self.draw.rectangle(
            self._xy(fx0, fy0, fx1, fy1), fill=fill or self.fill, outline=self.outline, width=self.line
        )

    def rounded(
        self, fx0: float, fy0: float, fx1: float, fy1: float, radius: float, fill: RGB | None = None
    ) -> None:
        xy = self._xy(fx0, fy0, fx1, fy1)
        r = max(0, int(radius * min(xy[2] - xy[0], xy[3] - xy[1])))
        self.draw.rounded_rectangle(xy, r, fill=fill or self.fill, outline=self.outline, width=self.line)

    def ellipse(self, fx0: float, fy0: float, fx1: float, fy1: float, fill: RGB | None = None) -> None:
        self.draw.ellipse(
            self._xy(fx0, fy0, fx1, fy1), fill=fill or self.fill, outline=self.outline, width=self.line
        )

    def ring(self, *f: float) -> None:
        xy = self._xy(*f)
        self.draw.ellipse(xy, outline=self.outline, width=max(2, (xy[2] - xy[0]) // 5))

    def poly(self, points: list[tuple[float, float]], fill: RGB | None = None) -> None:
        xy = [
            (
                self.x0 + round((1 - fx if self.flip else fx) * (self.w - 1)),
                self.y0 + round(fy * (self.h - 1)),
            )
            for fx, fy in points
        ]
        self.draw.polygon(xy, fill=fill or self.fill, outline=self.outline, width=self.line)


# --- text -----------------------------------------------------------------------------------------


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=32)
def _font(size: int) -> Font:
    """DejaVu Sans where the system has it (accented Latin), else Pillow's built-in font (ASCII)."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", max(6, size))
    except OSError:
        return ImageFont.load_default(size=max(6, size))


def _printable(text: str, font: Font) -> str:
    """What the font can draw: CJK dropped (neither font has it), accents folded for the built-in one."""
    text = "".join(c for c in text if ord(c) < 0x2E80).replace("–", "-").replace("—", "-")
    if getattr(font, "path", "").endswith("DejaVuSans.ttf"):
        return text
    folded = unicodedata.normalize("NFKD", text.replace("…", "..."))
    return "".join(c for c in folded if ord(c) < 128)


def _badge(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, colour: RGB) -> None:
    """The variation's label printed on the product (like a tag), inside its outline."""
    x0, y0, x1, y1 = box
    font = _font(min(x1 - x0, y1 - y0) // 8)
    text = _printable(text, font)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left, bottom - top
    cx, cy = (x0 + x1) // 2, y0 + (y1 - y0) * 3 // 5
    if tw + 8 > x1 - x0:
        return
    pad = max(1, th // 3)
    draw.rectangle(
        [cx - tw // 2 - pad, cy - th // 2 - pad, cx + tw // 2 + pad, cy + th // 2 + pad],
        fill=(250, 250, 250),
        outline=_mix(colour, (0, 0, 0), 0.45),
    )
    draw.text((cx - tw // 2 - left, cy - th // 2 - top), text, fill=(20, 20, 20), font=font)


def _caption(draw: ImageDraw.ImageDraw, look: Look) -> None:
    """Headline and a few callout lines (each wrapped to two lines at most): on the right of layouts,
    along the top of scenes."""
    w, h = look.size
    lines = [s.strip() for s in look.caption.split("\n") if s.strip()][:6]
    if not lines:
        return
    ink = (245, 240, 230) if look.scene == "dark" else (30, 34, 40)
    size = max(6, min(h // 12, w // 22) if look.scene == "layout" else min(h // 14, w // 26))
    x, y = (int(w * 0.52), int(h * 0.12)) if look.scene == "layout" else (int(w * 0.05), int(h * 0.05))
    width = int(w * (0.44 if look.scene == "layout" else 0.9))
    bottom = h * (0.95 if look.scene == "layout" else 0.27)  # scenes: above the product (see _product_box)
    for n, text in enumerate(lines):
        line_size = size if n == 0 else size * 2 // 3
        font = _font(line_size)
        if n and look.scene == "layout":  # callout bullet
            r = max(1, size // 6)
            draw.ellipse(
                [x - 3 * r, y + size // 4, x - r, y + size // 4 + 2 * r], fill=colour_for(look.subject)
            )
        for part in _wrap(draw, _printable(text, font), font, width):
            if y + line_size > bottom:
                return
            draw.text((x, y), part, fill=ink, font=font)
            y += int(line_size * 1.25)
        y += int(line_size * 0.4)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int, max_lines: int = 2) -> list[str]:
    """Words on up to ``max_lines`` lines of ``width``; the last one cut with an ellipsis if need be."""
    lines: list[str] = []
    words = text.split()
    while words and len(lines) < max_lines:
        n = len(words)
        while n > 1 and draw.textlength(" ".join(words[:n]), font=font) > width:
            n -= 1
        lines.append(" ".join(words[:n]))
        words = words[n:]
    if words or (lines and draw.textlength(lines[-1], font=font) > width):
        lines[-1] = _fit(draw, " ".join([lines[-1], *words]), font, width)
    return lines


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    ellipsis = _printable("…", font)
    while len(text) > 1 and draw.textlength(text + ellipsis, font=font) > width:
        text = text[: max(1, len(text) * 4 // 5)]
    return text + ellipsis


# --- helpers --------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, transparent: bool = False) -> bytes:
    out = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(out, format="JPEG", quality=85)
    elif fmt == "webp":
        image.convert("RGBA" if transparent else "RGB").save(out, format="WEBP", quality=80, method=0)
    elif transparent:
        image.save(out, format="PNG", compress_level=1, transparency=0)
    else:
        image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _shot(look: Look) -> bytes:
    """What makes two photos of a product differ: the product and the shot."""
    return _digest(f"{look.subject}|{look.shot}")


def _lit(colour: RGB, look: Look) -> RGB:
    """The colour under this shot's light: a little lighter or darker, never exactly the same."""
    t = (_shot(look)[2] % 8 - 3.5) / 40
    return _mix(colour, WHITE, t) if t > 0 else _mix(colour, (0, 0, 0), -t)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalpha() else " " for c in text).split()


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()
