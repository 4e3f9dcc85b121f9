"""Amazon's listing rules, for every Amazon marketplace (the catalog's country codes).

Sources: Amazon's product image requirements (main image on pure white RGB 255, product filling at
least 85% of the frame, 1,000 px or more on the longest side for zoom, at most 10,000 px and 10 MB;
JPEG, PNG, GIF or TIFF), its title policy (200 characters for most categories, no promotional
wording, no special characters such as ``! $ ? _ { } ^ ¬ ¦``, no word more than twice), product
detail limits (at most 5 bullets, each within 500 characters; descriptions within 2,000 characters;
search terms within 249 bytes) and A+ content's module image sizes (JPEG, PNG or BMP, at most 2 MB).
Limits are parameters (``AmazonLimits``), per marketplace where Amazon's differ (``MARKETPLACE_LIMITS``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from providers.contract import MARKETPLACES, ListingCopy

from .model import CheckedOutput, Finding, ProductContent, Severity
from .rules import RuleSet

MB = 1024 * 1024


class AmazonLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    title_max_chars: int = 200
    bullets_max: int = 5
    bullet_max_chars: int = 500
    description_max_chars: int = 2000
    keywords_max_bytes: int = 249
    image_min_side: int = 1000
    image_max_side: int = 10000
    image_max_bytes: int = 10 * MB
    main_min_fill: float = 0.85
    image_types: tuple[str, ...] = ("JPEG", "PNG", "GIF", "TIFF")
    aplus_types: tuple[str, ...] = ("JPEG", "PNG", "BMP")
    aplus_max_bytes: int = 2 * MB


MARKETPLACE_LIMITS: dict[str, AmazonLimits] = {
    "JP": AmazonLimits(keywords_max_bytes=500),  # Amazon.co.jp's search terms allow 500 bytes
}

WHITE_MAIN_STYLES: dict[str, tuple[str, ...]] = {
    "prodvisual": ("white_bg",),
    "listingrva": ("CLEAN_WHITE_BG",),
    "pixii": ("amazon_listing", "amazon_main_images", "amazon_mobile_listing"),  # image 1 is the main image
}
"""Image styles (output label prefixes) whose first image is a white-background main image. A provider
not listed here has its first image checked as the main image."""

APLUS_MODULE_SIZES: dict[str, tuple[tuple[int, int], ...]] = {
    # Standard (Basic) modules: image header 970x600, light/dark text overlay 970x300, company logo
    # 600x180, single image & sidebar 300x400 and 350x175, three images / highlights / single image
    # 300x300, four images 220x220, comparison chart 150x300, four-image quadrant 135x135.
    "a-plus-basic": (
        (970, 600),
        (970, 300),
        (600, 180),
        (300, 400),
        (350, 175),
        (300, 300),
        (220, 220),
        (150, 300),
        (135, 135),
    ),
    # Premium modules: full-width image, carousel, background image with text 1464x600; single or
    # dual image with text 650x350.
    "a-plus-premium": ((1464, 600), (650, 350)),
    # Premium on mobile: the full-width image's mobile crop 600x450 (an assumption: Pixii's "A+ Premium
    # Mobile" is documented only by name), or the desktop sizes.
    "a-plus-premium-mobile": ((600, 450), (1464, 600), (650, 350)),
}
ASPECT_TOLERANCE = 0.02

PROMOTIONAL = re.compile(
    r"best[\s-]?sell(?:er|ers|ing)\b|#\s?1\b|\bno\.?\s?1\b|\bnumber one\b|\bfree (?:shipping|delivery)\b"
    r"|\bon sale\b|\bsale\b|\d+\s?%\s?off\b|\bdiscount(?:ed)?\b|\blimited[- ]time\b|\bcheapest\b"
    r"|\b(?:lowest|best) price\b|[$€£¥₹]\s?\d|\d(?:[.,]\d{1,2})?\s?(?:[€£¥₹$]|\b(?:usd|eur|gbp|jpy|inr)\b)"
    r"|\bkostenlose[nr]? versand\b|\bgratisversand\b|\blivraison gratuite\b|\bmeilleure vente\b"
    r"|\benv[ií]o gratis\b|\bm[aá]s vendido\b|\bspedizione gratuita\b|\bpi[uù] venduto\b"
    r"|送料無料|ベストセラー|セール",
    re.IGNORECASE,
)
"""Promotional wording and price claims: Amazon refuses them in titles and bullets."""
TITLE_SPECIAL = re.compile(r"[!$?_{}^¬¦]")
STOP_WORDS = frozenset(
    "and the for with of to in an or by on at und für mit der die das den ein eine"
    " et pour avec le la les de des du y para con el los las e per il di da".split()
)


class AmazonRules(RuleSet):
    """The built-in rule set: every marketplace of the catalog is an Amazon marketplace."""

    name: ClassVar[str] = "amazon"
    marketplaces: ClassVar[frozenset[str]] = MARKETPLACES

    def check(self, content: ProductContent) -> list[Finding]:
        limits = MARKETPLACE_LIMITS.get(content.marketplace, AmazonLimits())
        findings: list[Finding] = []
        if content.copy_result is not None:
            findings += check_copy(content.copy_result, limits, content.copy_key)
        for n, image in enumerate(content.images):
            findings += check_image(image, limits)
            if n == 0:
                findings += check_main_image(image, limits)
        for image in content.scale:
            findings += check_image(image, limits)
        for module in content.aplus:
            findings += check_aplus(module, limits)
        return findings


# --- copy -----------------------------------------------------------------------------------------


def check_copy(copy: ListingCopy, limits: AmazonLimits, key: str | None) -> list[Finding]:
    """The listing copy: title, bullets, description and backend keywords."""
    found: list[tuple[str, str, Severity]] = []
    title = (copy.title or "").strip()
    if title:
        found += _over("title-length", "title", len(title), limits.title_max_chars)
        found += _promotion("title-promotional", "title", title, "fail")
        if special := sorted(set(TITLE_SPECIAL.findall(title))):
            found.append(("title-characters", f"title has special characters {' '.join(special)}", "warn"))
        if repeated := _repeated_words(title):
            found.append(("title-repeats", f"title repeats {', '.join(repeated)} more than twice", "warn"))
    found += _over("bullets-count", "bullets", len(copy.bullets), limits.bullets_max, "")
    for n, bullet in enumerate(copy.bullets, start=1):
        found += _over("bullet-length", f"bullet {n}", len(bullet), limits.bullet_max_chars)
        found += _promotion("bullet-promotional", f"bullet {n}", bullet, "fail")
    description = copy.description or ""
    found += _over("description-length", "description", len(description), limits.description_max_chars)
    found += _promotion("description-promotional", "description", description, "warn")
    size = len(" ".join(k.strip() for k in copy.keywords if k.strip()).encode("utf-8"))
    found += _over("keywords-bytes", "backend keywords", size, limits.keywords_max_bytes, " bytes")
    return [Finding(rule=r, severity=s, message=m, output_key=key, step="copy") for r, m, s in found]


def _over(
    rule: str, what: str, value: int, limit: int, unit: str = " characters"
) -> list[tuple[str, str, Severity]]:
    """``title: 201 characters (at most 200)`` when ``value`` is past ``limit``."""
    return [(rule, f"{what}: {value}{unit} (at most {limit})", "fail")] if value > limit else []


def _promotion(rule: str, where: str, text: str, severity: Severity) -> list[tuple[str, str, Severity]]:
    """One finding naming every promotional phrase of ``text``."""
    phrases = list(dict.fromkeys(m.group(0).strip() for m in PROMOTIONAL.finditer(text)))
    if not phrases:
        return []
    return [(rule, f"{where} has promotional wording " + ", ".join(repr(p) for p in phrases), severity)]


def _repeated_words(title: str) -> list[str]:
    words = Counter(w for w in re.findall(r"\w+", title.lower()) if len(w) > 1 and w not in STOP_WORDS)
    return sorted(w for w, n in words.items() if n > 2)


# --- images ---------------------------------------------------------------------------------------


def _finding(image: CheckedOutput, rule: str, message: str, severity: Severity = "fail") -> Finding:
    return Finding(
        rule=rule,
        severity=severity,
        message=f"{image.name}: {message}",
        output_key=image.key,
        step=image.step,
    )


def check_image(image: CheckedOutput, limits: AmazonLimits) -> list[Finding]:
    """Every product image (main, gallery, variation): readable, an accepted type, big enough."""
    facts = image.facts
    if image.unchecked or facts is None:
        return [
            _finding(image, "image-unchecked", f"not checked: {image.unchecked or 'not measured'}", "warn")
        ]
    if facts.error or facts.format is None:
        return [_finding(image, "image-type", facts.error or "not a readable image")]
    out = []
    if facts.format not in limits.image_types:
        out.append(
            _finding(
                image,
                "image-type",
                f"file type {facts.format} is not accepted ({', '.join(limits.image_types)})",
            )
        )
    if facts.longest_side < limits.image_min_side:
        out.append(
            _finding(
                image,
                "image-size",
                f"longest side {facts.longest_side} px (at least {limits.image_min_side})",
            )
        )
    elif facts.longest_side > limits.image_max_side:
        out.append(
            _finding(
                image, "image-size", f"longest side {facts.longest_side} px (at most {limits.image_max_side})"
            )
        )
    if image.size > limits.image_max_bytes:
        out.append(
            _finding(
                image,
                "image-bytes",
                f"{image.size / MB:.1f} MB (at most {limits.image_max_bytes / MB:.0f} MB)",
            )
        )
    return out


def is_white_main_style(image: CheckedOutput) -> bool | None:
    """Whether the image's style is a white-background main style; None for a provider not listed."""
    styles = WHITE_MAIN_STYLES.get(image.provider)
    if styles is None:
        return None
    return any(image.label == s or image.label.startswith(f"{s}-") for s in styles)


def check_main_image(image: CheckedOutput, limits: AmazonLimits) -> list[Finding]:
    """The main image (the images step's first output): pure white at the border, product filling it."""
    facts = image.facts
    if facts is None or facts.error or image.unchecked:
        return []  # already reported by check_image
    if facts.fill is None or facts.border_white is None:
        return [_finding(image, "image-unchecked", "not checked: its pixels were not measured", "warn")]
    if is_white_main_style(image) is False:
        return [
            _finding(
                image,
                "main-image-style",
                "the first image is not a white-background style: Amazon's "
                "main image must be on pure white (not checked for background and fill)",
                "warn",
            )
        ]
    out = []
    if facts.border_transparent:
        out.append(
            _finding(
                image, "main-background", "main image is transparent at the border (must be white RGB 255)"
            )
        )
    elif not facts.border_white:
        out.append(
            _finding(
                image,
                "main-background",
                f"main image background is not pure white at the border "
                f"(darkest value {facts.border_darkest}, must be 255)",
            )
        )
    if facts.fill < limits.main_min_fill:
        out.append(
            _finding(
                image,
                "main-fill",
                f"product fills {facts.fill:.0%} of the frame (at least {limits.main_min_fill:.0%})",
            )
        )
    return out


def check_aplus(module: CheckedOutput, limits: AmazonLimits) -> list[Finding]:
    """A+ module images: an accepted type and size, and the dimensions of one of the type's modules.
    Previews (one composite per A+ type, for review) are not uploaded and not checked."""
    if module.label.endswith("-preview"):
        return []
    facts = module.facts
    if module.unchecked or facts is None:
        return [
            _finding(module, "image-unchecked", f"not checked: {module.unchecked or 'not measured'}", "warn")
        ]
    if facts.error or facts.format is None:
        return [_finding(module, "aplus-type", facts.error or "not a readable image")]
    out = []
    if facts.format not in limits.aplus_types:
        out.append(
            _finding(
                module,
                "aplus-type",
                f"file type {facts.format} is not accepted for A+ ({', '.join(limits.aplus_types)})",
            )
        )
    if module.size > limits.aplus_max_bytes:
        out.append(
            _finding(
                module,
                "aplus-bytes",
                f"{module.size / MB:.1f} MB (at most {limits.aplus_max_bytes / MB:.0f} MB)",
            )
        )
    return out + _aplus_dimensions(module, facts.width, facts.height)


def _aplus_dimensions(module: CheckedOutput, width: int, height: int) -> list[Finding]:
    kind = next(
        (k for k in sorted(APLUS_MODULE_SIZES, key=len, reverse=True) if module.label.startswith(k)), None
    )
    sizes = APLUS_MODULE_SIZES[kind] if kind else tuple(s for v in APLUS_MODULE_SIZES.values() for s in v)
    fits = [(w, h) for w, h in sizes if width >= w and height >= h]
    listed = ", ".join(f"{w}x{h}" for w, h in sizes[:3]) + (
        f" and {len(sizes) - 3} more" if len(sizes) > 3 else ""
    )
    if not fits:
        return [
            _finding(
                module,
                "aplus-dimensions",
                f"{width}x{height} px is smaller than any {kind or 'A+'} module image ({listed})",
            )
        ]
    if not any(abs(width / height - w / h) <= ASPECT_TOLERANCE * (w / h) for w, h in fits):
        return [
            _finding(
                module,
                "aplus-dimensions",
                f"{width}x{height} px matches no {kind or 'A+'} module's "
                f"proportions ({listed}): Amazon crops it",
                "warn",
            )
        ]
    return []
