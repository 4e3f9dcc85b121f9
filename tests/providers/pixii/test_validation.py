"""Every documented request rule is enforced locally: RequestValidationError names the field and
nothing reaches the (sandbox) server."""

from __future__ import annotations

from typing import Any

import pytest

from providers.contract import (
    APlusOptions,
    ListingCopy,
    ScaleOptions,
    ScaleTarget,
    Step,
    Variation,
)
from providers.errors import RequestValidationError
from providers.pixii.models import APlusRequest, ListingBuilderRequest, ListJobsQuery, ScaleRequest

from .conftest import ctx

LB = {"asin": "B0TEST0001", "country_code": "US", "listing_type": "amazon_listing"}
AP = {"asin": "B0TEST0001", "country_code": "US", "types": ["A+ Basic"]}
ITEM = {"preview_url": "https://img.example.com/ref.png", "platform": "Amazon", "asset_type": "Main Image"}
SC = {"asin": "B0TEST0001", "country_code": "US", "scale_mode": "variation", "items": [ITEM]}

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("listing_builder", {**LB, "listing_type": "amazon_gallery"}, "listing_type"),
    ("listing_builder", {**LB, "country_code": "us"}, "country_code"),
    ("listing_builder", {**LB, "country_code": "XX"}, "country_code"),
    ("listing_builder", {**LB, "asin": "B0T1"}, "asin"),
    ("listing_builder", {**LB, "asin": "B" * 16}, "asin"),
    ("listing_builder", {k: v for k, v in LB.items() if k != "listing_type"}, "listing_type"),
    ("listing_builder", {**LB, "other_image_urls": []}, "other_image_urls"),
    ("listing_builder", {**LB, "main_image_url": "not a url"}, "main_image_url"),
    ("listing_builder", {**LB, "other_image_urls": ["ftp://x/y.png"]}, "other_image_urls.0"),
    ("listing_builder", {**LB, "user_prompt": "hi"}, "user_prompt"),  # not a Listing Builder field
    ("a_plus", {**AP, "types": []}, "types"),
    ("a_plus", {**AP, "types": ["A+ Basic", "A+ Premium", "A+ Premium Mobile", "A+ Basic"]}, "types"),
    ("a_plus", {**AP, "types": ["A+ Basic", "A+ Basic"]}, "types"),
    ("a_plus", {**AP, "types": ["A+ premium mobile"]}, "types.0"),
    ("a_plus", {**AP, "user_prompt": ""}, "user_prompt"),
    ("a_plus", {**AP, "user_prompt": "   "}, "user_prompt"),
    ("a_plus", {**AP, "other_image_urls": []}, "other_image_urls"),
    ("scale", {**SC, "items": []}, "items"),
    ("scale", {**SC, "items": [{**ITEM, "platform": "Shopify"}]}, "items.0"),
    ("scale", {**SC, "items": [{**ITEM, "platform": "TikTok"}]}, "items.0"),
    ("scale", {**SC, "items": [{**ITEM, "platform": "Amazon mobile"}]}, "items.0.platform"),
    ("scale", {**SC, "items": [{**ITEM, "asset_type": "Lifestyle"}]}, "items.0.asset_type"),
    (
        "scale",
        {**SC, "items": [{k: v for k, v in ITEM.items() if k != "preview_url"}]},
        "items.0.preview_url",
    ),
    ("scale", {**SC, "scale_mode": "translate"}, "scale_mode"),
    ("scale", {**SC, "scale_mode": "language"}, "user_prompt"),
    ("scale", {**SC, "other_images_input": []}, "other_images_input"),
    ("scale", {**SC, "user_prompt": ""}, "user_prompt"),
    ("scale", {**SC, "main_image_url": "https://img.example.com/a.png"}, "main_image_url"),
]


@pytest.mark.parametrize(("endpoint", "body", "field"), BAD_REQUESTS)
async def test_client_rejects_bad_request_before_sending(sandbox, provider, endpoint, body, field) -> None:
    before = len(sandbox.requests)
    with pytest.raises(RequestValidationError) as info:
        await getattr(provider.client, endpoint)(body)
    assert info.value.field is not None and info.value.field.startswith(field.split(".")[0])
    assert field in str(info.value)
    assert info.value.code == "LOCAL_VALIDATION" and not info.value.retryable
    assert len(sandbox.requests) == before


async def test_list_jobs_validates_asin_locally(sandbox, provider) -> None:
    before = len(sandbox.requests)
    for asin in ("B0T1", "B" * 16):
        with pytest.raises(RequestValidationError, match="asin"):
            await provider.client.list_jobs(asin)
    assert len(sandbox.requests) == before


def test_platform_asset_type_table() -> None:
    for platform, ok in [("Amazon", True), ("Amazon Mobile", True), ("Shopify", False), ("TikTok", False)]:
        body = {**SC, "items": [{**ITEM, "platform": platform, "asset_type": "Main Image"}]}
        if ok:
            ScaleRequest.model_validate(body)
        else:
            with pytest.raises(ValueError, match="not allowed"):
                ScaleRequest.model_validate(body)
        ScaleRequest.model_validate(
            {**SC, "items": [{**ITEM, "platform": platform, "asset_type": "Product Photo"}]}
        )


def test_bodies_omit_unset_optionals() -> None:
    assert ListingBuilderRequest.model_validate(LB).body() == LB
    assert APlusRequest.model_validate(AP).body() == AP
    assert ScaleRequest.model_validate(SC).body() == SC
    assert ListJobsQuery(asin="B0TEST0001").body() == {"asin": "B0TEST0001", "page": 1, "limit": 20}
    # every documented marketplace, GB and UK both included
    for cc in "AE AU BE BR CA CN DE EG ES FR GB IE IN IT JP MX NL PL SA SE SG TR UK US ZA".split():
        ListingBuilderRequest.model_validate({**LB, "country_code": cc})


# --- build_requests ------------------------------------------------------------------------------


def test_images_default_style_and_image_urls(provider) -> None:
    [req] = provider.build_requests(Step.IMAGES, ctx())
    assert req.body() == {
        **LB,
        "main_image_url": "https://img.example.com/a.jpg",
        "other_image_urls": ["https://img.example.com/b.jpg"],
    }
    [req] = provider.build_requests(Step.IMAGES, ctx(image_urls=["https://img.example.com/only.jpg"]))
    assert "other_image_urls" not in req.body()
    [req] = provider.build_requests(Step.IMAGES, ctx(image_urls=[]))
    assert "main_image_url" not in req.body()


def test_images_one_request_per_style(provider) -> None:
    c = ctx(image_options={"styles": ["amazon_listing", "tiktok_listing", "amazon_listing"]})
    assert [r.listing_type for r in provider.build_requests(Step.IMAGES, c)] == [
        "amazon_listing",
        "tiktok_listing",
    ]
    c = ctx(style="shopify_listing", image_options={"styles": ["amazon_listing"]})
    assert [r.listing_type for r in provider.build_requests(Step.IMAGES, c)] == ["shopify_listing"]


def test_images_unknown_style_names_field_and_product(provider) -> None:
    with pytest.raises(RequestValidationError) as info:
        provider.build_requests(Step.IMAGES, ctx(style="lifestyle"))
    assert info.value.field == "products[B0TEST0001].listing_type"  # the product, then the field
    assert "products[B0TEST0001]" in str(info.value)


def test_aplus_request_from_copy(provider) -> None:
    copy = ListingCopy(title="Bottle Pro", bullets=["Cold 24h", " "], keywords=["bottle", "steel"])
    c = ctx(
        copy_result=copy,
        main_image_url="https://cdn.example.com/main.png",
        aplus_options=APlusOptions(types=["A+ Premium", "A+ Premium Mobile"]),
    )
    [req] = provider.build_requests(Step.APLUS, c)
    assert req.types == ["A+ Premium", "A+ Premium Mobile"]
    assert req.main_image_url == "https://cdn.example.com/main.png"
    assert req.other_image_urls == ["https://img.example.com/a.jpg", "https://img.example.com/b.jpg"]
    assert "Bottle Pro" in req.user_prompt and "- Cold 24h" in req.user_prompt and "steel" in req.user_prompt
    assert provider.estimate_credits(Step.APLUS, req) == 50


def test_aplus_prompt_falls_back_to_product(provider) -> None:
    [req] = provider.build_requests(Step.APLUS, ctx(copy_result=ListingCopy()))
    assert req.main_image_url == "https://img.example.com/a.jpg"
    assert req.other_image_urls == ["https://img.example.com/b.jpg"]
    assert "Steel water bottle" in req.user_prompt and "24 hours" in req.user_prompt
    all_three = APlusOptions(types=["A+ Basic", "A+ Premium", "A+ Premium Mobile"])
    [req] = provider.build_requests(Step.APLUS, ctx(aplus_options=all_three))
    assert provider.estimate_credits(Step.APLUS, req) == 70


def test_scale_request(provider) -> None:
    opts = ScaleOptions(
        mode="variation", targets=[ScaleTarget(), ScaleTarget(platform="Shopify", asset_type="Product Photo")]
    )
    c = ctx(
        variation=Variation(asin="B0CHILD001", attributes={"color": "Red"}),
        scale_options=opts,
        main_image_url="https://cdn.example.com/main.png",
    )
    [req] = provider.build_requests(Step.SCALE, c)
    assert req.asin == "B0CHILD001" and req.scale_mode == "variation"
    assert req.main_image_input == "https://cdn.example.com/main.png"
    assert [(i.preview_url, i.platform, i.asset_type) for i in req.items] == [
        ("https://cdn.example.com/main.png", "Amazon", "Main Image"),
        ("https://cdn.example.com/main.png", "Shopify", "Product Photo"),
    ]
    assert "color: Red" in req.user_prompt
    assert provider.estimate_credits(Step.SCALE, req) is None
    # without a generated main image the product's first image is the reference
    [req] = provider.build_requests(Step.SCALE, ctx(variation=Variation(asin="B0CHILD001")))
    assert req.items[0].preview_url == req.main_image_input == "https://img.example.com/a.jpg"


def test_scale_language_mode(provider) -> None:
    variation = Variation(asin="B0CHILD001", attributes={"size": "XL"})
    c = ctx(variation=variation, scale_options=ScaleOptions(mode="language", language="German"))
    [req] = provider.build_requests(Step.SCALE, c)
    assert (
        req.scale_mode == "language" and "Translate" in req.user_prompt and "into German" in req.user_prompt
    )
    with pytest.raises(RequestValidationError) as info:
        provider.build_requests(
            Step.SCALE, ctx(variation=variation, scale_options=ScaleOptions(mode="language"))
        )
    assert info.value.field == "scale_options.language" and "scale_options.language" in str(info.value)


def test_scale_needs_variation_and_reference(provider) -> None:
    with pytest.raises(RequestValidationError) as info:
        provider.build_requests(Step.SCALE, ctx())
    assert info.value.field == "variation"
    with pytest.raises(RequestValidationError) as info:
        provider.build_requests(Step.SCALE, ctx(image_urls=[], variation=Variation(asin="B0CHILD001")))
    assert "image" in str(info.value) and info.value.field == "items.preview_url"


def test_unsupported_step(provider) -> None:
    with pytest.raises(RequestValidationError):
        provider.build_requests(Step.COPY, ctx())


async def test_submit_rejects_model_for_wrong_step(sandbox, provider) -> None:
    before = len(sandbox.requests)
    with pytest.raises(RequestValidationError):
        await provider.submit(Step.IMAGES, APlusRequest.model_validate(AP))
    assert len(sandbox.requests) == before
