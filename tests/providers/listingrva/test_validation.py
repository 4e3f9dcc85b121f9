"""Every documented request rule fails locally, names the field, and sends nothing."""

from __future__ import annotations

from typing import Any

import pytest

from providers.contract import CopyOptions, ImageOptions, ListingCopy, Step, StepContext
from providers.errors import RequestValidationError
from providers.listingrva.client import ListingRVAClient
from providers.listingrva.plugin import ListingRVAProvider
from providers.listingrva.sandbox import ListingRVASandbox

from .conftest import product

IMG = {"productId": "prod_1", "style": "CLEAN_WHITE_BG"}
LST = {"productId": "prod_1"}

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("generate_image", {"style": "CLEAN_WHITE_BG"}, "productId"),
    ("generate_image", {**IMG, "productId": ""}, "productId"),
    ("generate_image", {"productId": "prod_1"}, "style"),
    ("generate_image", {**IMG, "style": "WATERCOLOR"}, "style"),
    ("generate_image", {**IMG, "platform": "tiktok"}, "platform"),
    ("generate_image", {**IMG, "outputSize": {"w": 1000, "h": 1200}}, "outputSize"),
    ("generate_image", {**IMG, "outputSize": {"w": 800, "h": 800}}, "outputSize.w"),
    ("generate_image", {**IMG, "outputSize": {"w": 1000}}, "outputSize.h"),
    ("generate_image", {**IMG, "primaryImageUrl": "file:///etc/passwd"}, "primaryImageUrl"),
    ("generate_image", {**IMG, "customPrompt": "  "}, "customPrompt"),
    ("generate_image", {**IMG, "context": ""}, "context"),
    ("generate_image", {**IMG, "season": ""}, "season"),
    ("generate_image", {**IMG, "aiModel": "dalle"}, "aiModel"),
    ("generate_image", {**IMG, "variants": 2}, "variants"),  # undocumented: never sent
    ("generate_listing", {}, "productId"),
    ("generate_listing", {**LST, "platform": "ebay"}, "platform"),
    ("generate_listing", {**LST, "tone": "angry"}, "tone"),
    ("generate_listing", {**LST, "components": []}, "components"),
    ("generate_listing", {**LST, "components": ["title", "title"]}, "components"),
    ("generate_listing", {**LST, "components": ["slogan"]}, "components.0"),
    ("generate_listing", {**LST, "seedKeywords": " , ,"}, "seedKeywords"),
    ("generate_listing", {**LST, "targetAudience": ""}, "targetAudience"),
    ("create_product", {}, "title"),
    ("create_product", {"title": "  "}, "title"),
    ("create_product", {"title": "x", "imageUrl": "not-a-url"}, "imageUrl"),
    ("create_product", {"title": "x", "category": ""}, "category"),
    ("create_webhook", {"url": "https://x.test/h", "events": []}, "events"),
    ("create_webhook", {"url": "https://x.test/h", "events": ["a", "a"]}, "events"),
    ("create_webhook", {"url": "https://x.test/h", "events": [" "]}, "events"),
    ("create_webhook", {"url": "ftp://x.test/h", "events": ["image.generated"]}, "url"),
]


@pytest.mark.parametrize(("method", "payload", "field"), CASES)
async def test_request_rules(
    client: ListingRVAClient, sandbox: ListingRVASandbox, method: str, payload: dict[str, Any], field: str
) -> None:
    before = len(sandbox.requests)
    with pytest.raises(RequestValidationError) as info:
        await getattr(client, method)(payload)
    assert info.value.field == field, str(info.value)
    assert info.value.code == "LOCAL_VALIDATION"
    assert len(sandbox.requests) == before


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.list_products(page=0), "page"),
        (lambda c: c.list_products(limit=101), "limit"),
        (lambda c: c.get_job(""), "jobId"),
        (lambda c: c.delete_webhook(""), "webhookId"),
    ],
)
async def test_other_rules(
    client: ListingRVAClient, sandbox: ListingRVASandbox, call: Any, field: str
) -> None:
    before = len(sandbox.requests)
    with pytest.raises(RequestValidationError) as info:
        await call(client)
    assert info.value.field == field
    assert len(sandbox.requests) == before


def ctx(**kw: Any) -> StepContext:
    return StepContext(product=product(), prepared={"product_id": "prod_1"}, **kw)


def test_build_requires_prepared_product(provider: ListingRVAProvider) -> None:
    with pytest.raises(RequestValidationError) as info:
        provider.build_requests(Step.COPY, StepContext(product=product()))
    assert info.value.field == "products[US/B0TEST0001].product_id"


@pytest.mark.parametrize(
    ("step", "context", "field"),
    [
        (Step.IMAGES, ctx(image_options=ImageOptions(platform="tiktok")), "products[US/B0TEST0001].platform"),
        (Step.IMAGES, ctx(image_options=ImageOptions(styles=["NOPE"])), "products[US/B0TEST0001].style"),
        (Step.IMAGES, ctx(style="NOPE"), "products[US/B0TEST0001].style"),
        (
            Step.IMAGES,
            StepContext(product=product(image_urls=["s3://bucket/x.jpg"]), prepared={"product_id": "p"}),
            "products[US/B0TEST0001].primaryImageUrl",
        ),
        (
            Step.COPY,
            ctx(copy_options=CopyOptions(target_audience="")),
            "products[US/B0TEST0001].targetAudience",
        ),
        (Step.APLUS, ctx(), "step"),
    ],
)
def test_build_rules(provider: ListingRVAProvider, step: Step, context: StepContext, field: str) -> None:
    with pytest.raises(RequestValidationError) as info:
        provider.build_requests(step, context)
    assert info.value.field == field


def test_build_copy_request(provider: ListingRVAProvider) -> None:
    options = CopyOptions(
        platform="flipkart",
        tone="casual",
        components=["title", "keywords"],
        seed_keywords=["green tea", " ", "organic"],
        target_audience="tea lovers",
    )
    [req] = provider.build_requests(Step.COPY, ctx(copy_options=options))
    assert req.body() == {
        "productId": "prod_1",
        "platform": "flipkart",
        "tone": "casual",
        "components": ["title", "keywords"],
        "seedKeywords": "green tea, organic",
        "targetAudience": "tea lovers",
    }
    assert provider.estimate_credits(Step.COPY, req) == 9


def test_build_image_requests(provider: ListingRVAProvider) -> None:
    copy = ListingCopy(title="Green Tea", bullets=["a", "b", "c", "d"], keywords=["tea", "organic"])
    reqs = provider.build_requests(Step.IMAGES, ctx(copy_result=copy, image_options=ImageOptions(size=1200)))
    [req] = reqs
    assert req.body() == {
        "productId": "prod_1",
        "style": "CLEAN_WHITE_BG",
        "platform": "amazon",
        "outputSize": {"w": 1200, "h": 1200},
        "primaryImageUrl": "https://images.example.com/B0TEST0001.jpg",
        "customPrompt": "Product: Green Tea. Highlights: a; b; c. Keywords: tea, organic",
    }
    assert provider.estimate_credits(Step.IMAGES, req) == 4 + 3  # amazon forces 2000 px
    styles = ImageOptions(
        styles=["MODEL_STUDIO", "BEFORE_AFTER", "MODEL_STUDIO"], platform="Shopify", size=1500
    )
    reqs = provider.build_requests(Step.IMAGES, ctx(image_options=styles))
    assert [(r.style, r.platform, "customPrompt" in r.body()) for r in reqs] == [
        ("MODEL_STUDIO", "shopify", False),
        ("BEFORE_AFTER", "shopify", False),
    ]
    assert [provider.estimate_credits(Step.IMAGES, r) for r in reqs] == [7 + 2, 5 + 2]
    [one] = provider.build_requests(Step.IMAGES, ctx(style="PACKAGING_DISPLAY", image_options=styles))
    assert one.style == "PACKAGING_DISPLAY"
    no_image = StepContext(product=product(image_urls=[]), prepared={"product_id": "p"})
    assert "primaryImageUrl" not in provider.build_requests(Step.IMAGES, no_image)[0].body()
