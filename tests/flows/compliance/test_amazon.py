"""Amazon's rules on synthesized images and copy fixtures."""

from __future__ import annotations

import pytest

from flows.compliance import ComplianceResult, ProductContent
from flows.compliance.amazon import AmazonRules
from providers.contract import ListingCopy

from .images import checked, product_image


def rules_of(content: ProductContent) -> dict[str, str]:
    """rule -> severity of every finding (one per rule in these tests)."""
    return {f.rule: f.severity for f in AmazonRules().check(content)}


def images(*outputs: object, marketplace: str = "US") -> ProductContent:
    return ProductContent(marketplace=marketplace, asin="B0TEST0001", images=list(outputs))  # type: ignore[arg-type]


# --- images -------------------------------------------------------------------------------------


def test_compliant_main_image_passes() -> None:
    content = images(
        checked(product_image((1500, 1500))), checked(product_image((2000, 2000)), label="white_bg-2")
    )
    assert AmazonRules().check(content) == []
    result = ComplianceResult.of([], ruleset="amazon", content=content)
    assert result.status == "pass" and {o.status for o in result.outputs} == {"pass"}


@pytest.mark.parametrize(
    ("data", "rule", "says"),
    [
        (product_image(background=(200, 200, 200)), "main-background", "darkest value 200, must be 255"),
        (product_image(background=(255, 255, 255, 0), mode="RGBA"), "main-background", "transparent"),
        (product_image(fill=0.6), "main-fill", "fills 60% of the frame (at least 85%)"),
        (product_image((800, 800)), "image-size", "longest side 800 px (at least 1000)"),
        (product_image(fmt="WEBP"), "image-type", "file type WEBP is not accepted"),
        (b"not an image", "image-type", "not a readable image"),
    ],
)
def test_noncompliant_main_image_fails_with_the_reason(data: bytes, rule: str, says: str) -> None:
    main = checked(data)
    findings = AmazonRules().check(images(main))
    assert [f.rule for f in findings] == [rule]
    assert findings[0].severity == "fail" and says in findings[0].message
    assert findings[0].output_key == main.key and findings[0].step == "images"
    assert findings[0].message.startswith("images/prodvisual-white_bg-1.png: ")


def test_only_the_first_image_is_held_to_the_main_image_rules() -> None:
    grey_gallery = checked(product_image(background=(200, 200, 200), fill=0.5), label="lifestyle-1")
    assert rules_of(images(checked(), grey_gallery)) == {}
    small_gallery = checked(product_image((500, 500)), label="lifestyle-1")
    assert rules_of(images(checked(), small_gallery)) == {"image-size": "fail"}  # size and type: every image


def test_main_image_style_decides_whether_background_is_checked() -> None:
    lifestyle = checked(product_image(background=(90, 120, 90)), label="lifestyle-1")
    assert rules_of(images(lifestyle)) == {"main-image-style": "warn"}
    for provider, label in [
        ("listingrva", "CLEAN_WHITE_BG-1"),
        ("pixii", "amazon_listing-1"),
        ("acme", "hero-1"),
    ]:
        grey = checked(product_image(background=(200, 200, 200)), provider=provider, label=label)
        assert rules_of(images(grey)) == {"main-background": "fail"}, provider


def test_variation_images_get_size_and_type_checks() -> None:
    content = ProductContent(
        marketplace="US",
        asin="B0TEST0001",
        scale=[
            checked(
                product_image((256, 256), background=(90, 90, 90)),
                step="scale",
                label="scale-1",
                provider="pixii",
            )
        ],
    )
    findings = AmazonRules().check(content)
    assert [(f.rule, f.step) for f in findings] == [("image-size", "scale")]
    assert findings[0].message.startswith("B0TEST0001/scale/pixii-scale-1.png: ")


@pytest.mark.parametrize(
    ("label", "size", "expected"),
    [
        ("a-plus-basic-module-1", (970, 600), {}),
        ("a-plus-basic-module-2", (1940, 1200), {}),  # larger, same proportions
        ("a-plus-basic-module-3", (300, 300), {}),
        ("a-plus-basic-module-4", (1000, 1000), {}),  # square: the 300x300 modules
        ("a-plus-basic-module-5", (1200, 500), {"aplus-dimensions": "warn"}),  # no module has 2.4:1: cropped
        ("a-plus-basic-module-6", (100, 100), {"aplus-dimensions": "fail"}),
        ("a-plus-premium-module-1", (1464, 600), {}),
        ("a-plus-premium-module-2", (970, 600), {"aplus-dimensions": "warn"}),
        ("a-plus-premium-module-3", (600, 300), {"aplus-dimensions": "fail"}),
        ("a-plus-premium-mobile-module-1", (600, 450), {}),
        ("a-plus-basic-preview", (64, 64), {}),  # the composite preview is not uploaded
    ],
)
def test_aplus_module_dimensions(label: str, size: tuple[int, int], expected: dict[str, str]) -> None:
    module = checked(
        product_image(size, background=(240, 230, 200)), step="aplus", label=label, provider="pixii"
    )
    assert rules_of(ProductContent(marketplace="US", asin="B0TEST0001", aplus=[module])) == expected


def test_aplus_module_type() -> None:
    module = checked(
        product_image((970, 600), fmt="GIF", mode="P"),
        step="aplus",
        label="a-plus-basic-module-1",
        provider="pixii",
    )
    assert rules_of(ProductContent(marketplace="US", asin="B0TEST0001", aplus=[module])) == {
        "aplus-type": "fail"
    }


def test_unreadable_archive_leaves_an_output_unchecked_as_a_warning() -> None:
    main = checked(b"").model_copy(
        update={"facts": None, "unchecked": "archive unreadable (ArchiveUnavailable)"}
    )
    result = ComplianceResult.of(AmazonRules().check(images(main)), ruleset="amazon", content=images(main))
    assert result.status == "warn" and result.findings[0].rule == "image-unchecked"


# --- copy ---------------------------------------------------------------------------------------

GOOD = ListingCopy(
    title="Acme Stainless Steel Water Bottle, 750 ml, Leak-Proof Lid, Keeps Drinks Cold for 24 Hours",
    bullets=[
        "Double-wall vacuum insulation keeps drinks cold for 24 hours",
        "Leak-proof screw lid",
        "Fits most cup holders",
        "BPA-free materials",
        "Wholesale packs available",
    ],
    description="A bottle for every day. Size #10 lid.",
    keywords=["water bottle", "insulated", "steel flask"],
)


def copy_rules(copy: ListingCopy, marketplace: str = "US") -> dict[str, str]:
    content = ProductContent(
        marketplace=marketplace, asin="B0TEST0001", copy_result=copy, copy_key="US/x/copy.json"
    )
    return rules_of(content)


def test_compliant_copy_passes() -> None:
    assert copy_rules(GOOD) == {}


def test_title_length_is_a_limit() -> None:
    assert copy_rules(GOOD.model_copy(update={"title": "A" * 200})) == {}
    assert copy_rules(GOOD.model_copy(update={"title": "A" * 201})) == {"title-length": "fail"}


@pytest.mark.parametrize(
    "phrase",
    [
        "Best Seller",
        "bestseller",
        "#1 Rated",
        "No. 1",
        "FREE SHIPPING",
        "on Sale",
        "20% off",
        "$19.99",
        "19,99 €",
        "only 25 EUR",
        "Kostenloser Versand",
        "livraison gratuite",
        "送料無料",
    ],
)
def test_promotional_wording_in_the_title_fails(phrase: str) -> None:
    found = copy_rules(GOOD.model_copy(update={"title": f"Acme Water Bottle {phrase} 750 ml"}))
    assert found.pop("title-promotional") == "fail"
    assert found == ({"title-characters": "warn"} if "$" in phrase else {})  # "$" is also a special character


def test_promotional_wording_in_bullets_fails_and_in_the_description_warns() -> None:
    bullets = [*GOOD.bullets[:4], "Free shipping on every order"]
    assert copy_rules(GOOD.model_copy(update={"bullets": bullets})) == {"bullet-promotional": "fail"}
    assert copy_rules(GOOD.model_copy(update={"description": "Our best seller."})) == {
        "description-promotional": "warn"
    }


def test_bullets_count_and_length() -> None:
    assert copy_rules(GOOD.model_copy(update={"bullets": [*GOOD.bullets, "Sixth"]})) == {
        "bullets-count": "fail"
    }
    assert copy_rules(GOOD.model_copy(update={"bullets": ["x" * 500, "y" * 501]})) == {
        "bullet-length": "fail"
    }


def test_backend_keywords_are_counted_in_utf8_bytes() -> None:
    assert copy_rules(GOOD.model_copy(update={"keywords": ["a" * 249]})) == {}
    assert copy_rules(GOOD.model_copy(update={"keywords": ["a" * 248, "b"]})) == {
        "keywords-bytes": "fail"
    }  # + space
    assert copy_rules(GOOD.model_copy(update={"keywords": ["ü" * 125]})) == {
        "keywords-bytes": "fail"
    }  # 250 bytes
    assert (
        copy_rules(GOOD.model_copy(update={"keywords": ["ü" * 125]}), marketplace="JP") == {}
    )  # JP allows more


def test_title_characters_and_repeats_warn() -> None:
    assert copy_rules(GOOD.model_copy(update={"title": "Acme Bottle! Great {Gift}"})) == {
        "title-characters": "warn"
    }
    repeated = "Bottle Steel Bottle Cold Bottle and the and the and the"
    assert copy_rules(GOOD.model_copy(update={"title": repeated})) == {"title-repeats": "warn"}


def test_status_is_the_worst_finding_and_reasons_are_grouped() -> None:
    small = [checked(product_image((500, 500)), label=f"white_bg-{n}") for n in (1, 2, 3)]
    content = images(*small).model_copy(
        update={
            "copy_result": GOOD.model_copy(update={"title": "Acme Bottle!"}),
            "copy_key": "US/B0TEST0001/copy/x-copy.json",
        }
    )
    result = ComplianceResult.of(AmazonRules().check(content), ruleset="amazon", content=content)
    assert result.status == "fail"
    assert result.reasons() == (
        "images/prodvisual-white_bg-1.png: longest side 500 px (at least 1000) (and 2 more)",
        "title has special characters !",
    )
    assert [o.status for o in result.outputs] == ["fail", "fail", "fail"]


def test_findings_name_the_value_and_the_limit() -> None:
    copy = GOOD.model_copy(
        update={"title": "Best Seller - Free Shipping | " + "A" * 180, "keywords": ["k" * 300]}
    )
    content = ProductContent(marketplace="US", asin="B0TEST0001", copy_result=copy, copy_key="US/x/copy.json")
    assert [f.message for f in AmazonRules().check(content)] == [
        "title: 210 characters (at most 200)",
        "title has promotional wording 'Best Seller', 'Free Shipping'",
        "backend keywords: 300 bytes (at most 249)",
    ]
