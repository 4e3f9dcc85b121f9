"""Every documented request rule is enforced locally: a RequestValidationError names the field and
nothing reaches the sandbox."""

from __future__ import annotations

import pytest

from providers.contract import Step
from providers.errors import RequestValidationError
from providers.prodvisual.client import KIT
from providers.prodvisual.models import BatchRequest, GenerateRequest
from providers.prodvisual.plugin import ProdVisualProvider, build_batch, labeled_items

from .conftest import count, ctx

OK = {"image_url": "https://img.example.com/B0TESTAAA1/main.jpg", "style": "white_bg"}

BAD_GENERATE = [
    ({"style": "white_bg"}, "image_url"),
    ({**OK, "image_url": ""}, "image_url"),
    ({**OK, "image_url": "ftp://img.example.com/a.jpg"}, "image_url"),
    ({**OK, "image_url": "img.example.com/a.jpg"}, "image_url"),
    ({**OK, "image_url": "https://img.example.com/a b.jpg"}, "image_url"),
    ({"image_url": OK["image_url"]}, "style"),
    ({**OK, "style": ""}, "style"),
    ({**OK, "style": "white bg"}, "style"),
    ({**OK, "platform": "walmart"}, "platform"),
    ({**OK, "platform": ""}, "platform"),
    ({**OK, "dimensions": "1500"}, "dimensions"),
    ({**OK, "dimensions": "0x1500"}, "dimensions"),
    ({**OK, "dimensions": "1500x"}, "dimensions"),
    ({**OK, "dimensions": ""}, "dimensions"),
    ({**OK, "background": "red"}, "background"),
    ({**OK, "background": "#12345"}, "background"),
    ({**OK, "background": ""}, "background"),
    ({**OK, "format": "gif"}, "format"),
    ({**OK, "format": "PNG"}, "format"),
    ({**OK, "quality": 0}, "quality"),
    ({**OK, "quality": 101}, "quality"),
    ({**OK, "quality": True}, "quality"),
    ({**OK, "quality": "90"}, "quality"),
    ({**OK, "webhook_url": "not a url"}, "webhook_url"),
    ({**OK, "webhook_url": ""}, "webhook_url"),
    ({**OK, "seed": 3}, "seed"),
]


@pytest.mark.parametrize(("body", "field"), BAD_GENERATE)
async def test_generate_rules(provider, sandbox, body, field) -> None:
    before = count(sandbox)
    with pytest.raises(RequestValidationError) as exc:
        await provider.client.generate(body)
    assert exc.value.field == field
    assert field in str(exc.value)
    assert not exc.value.retryable
    assert count(sandbox) == before


def test_valid_generate_serializes_only_given_fields() -> None:
    req = GenerateRequest(**OK, quality=80, label="x")
    assert req.body() == {**OK, "quality": 80}
    assert GenerateRequest(**OK, background="transparent", format="webp", platform="mercadolibre").body()[
        "platform"
    ]


BAD_BATCH = [
    ({"items": []}, "items"),
    ({}, "items"),
    ({"items": [OK] * 51}, "items"),
    ({"items": [OK, {**OK, "image_url": "nope"}]}, "items.1.image_url"),
    ({"items": [OK, {**OK, "quality": 500}]}, "items.1.quality"),
    ({"items": [OK], "webhook_url": "ftp://x"}, "webhook_url"),
    ({"items": [OK, OK], "labels": ["a"]}, "labels"),
    ({"items": [OK, OK], "labels": ["a", "a"]}, "labels"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BATCH)
async def test_batch_rules(provider, sandbox, body, field) -> None:
    before = count(sandbox)
    with pytest.raises(RequestValidationError) as exc:
        await provider.client.generate_batch(body)
    assert (exc.value.field or "").startswith(field) or field in str(exc.value)
    assert count(sandbox) == before


def test_batch_never_sends_labels_or_item_webhooks() -> None:
    batch = BatchRequest(
        items=[GenerateRequest(**OK, webhook_url="https://hooks.example.com/x")], labels=["a"]
    )
    assert batch.body() == {"items": [OK]}
    assert KIT.build(BatchRequest, batch).labels == ["a"]


async def test_unknown_style_rejected_from_the_styles_list(provider, sandbox) -> None:
    before_generate = count(sandbox, "generate") + count(sandbox, "generate_batch")
    with pytest.raises(RequestValidationError) as exc:
        await provider.client.generate({**OK, "style": "watercolour"})
    assert exc.value.field == "style"
    with pytest.raises(RequestValidationError) as exc:
        await provider.client.generate_batch({"items": [OK, {**OK, "style": "watercolour"}]})
    assert exc.value.field == "items.1.style"
    assert count(sandbox, "generate") + count(sandbox, "generate_batch") == before_generate
    # the styles list was fetched once and is now cached for build_requests as well
    assert count(sandbox, "styles") == 1
    with pytest.raises(RequestValidationError) as exc:
        provider.build_requests(Step.IMAGES, ctx(styles=["white_bg", "watercolour"]))
    assert exc.value.field == "image_options.styles.1"


@pytest.mark.parametrize("bad_id", ["", "gen/1", "gen 1"])
async def test_generation_id_checked(provider, sandbox, bad_id) -> None:
    before = count(sandbox)
    with pytest.raises(RequestValidationError) as exc:
        await provider.client.generation(bad_id)
    assert exc.value.field == "id"
    assert count(sandbox) == before


# ---- build_requests ----


def test_build_requests_single_style_is_one_generate(provider) -> None:
    [req] = provider.build_requests(Step.IMAGES, ctx(size=2000))
    assert isinstance(req, GenerateRequest)
    assert req.body() == {
        "image_url": "https://img.example.com/B0TESTAAA1/main.jpg",
        "style": "white_bg",
        "platform": "amazon",
        "dimensions": "2000x2000",
    }
    assert req.label == "white_bg-1"
    assert provider.estimate_credits(Step.IMAGES, req) == 1


def test_build_requests_several_styles_is_one_batch(provider) -> None:
    context = ctx(styles=["lifestyle", "mockup", "lifestyle"], platform="Mercado Libre")
    [req] = provider.build_requests(Step.IMAGES, context)
    assert isinstance(req, BatchRequest)
    assert [i.style for i in req.items] == ["lifestyle", "mockup", "lifestyle"]
    assert {i.platform for i in req.items} == {"mercadolibre"}
    assert req.labels == ["lifestyle-1", "mockup-1", "lifestyle-2"]
    assert provider.estimate_credits(Step.IMAGES, req) == 3


def test_build_requests_ctx_style_wins(provider) -> None:
    c = ctx(styles=["lifestyle", "mockup"])
    c.style = "mockup"
    [req] = provider.build_requests(Step.IMAGES, c)
    assert isinstance(req, GenerateRequest) and req.style == "mockup"


@pytest.mark.parametrize(
    ("context", "field"),
    [
        (ctx(asin="B0NOIMAGE1", images=[]), "products[B0NOIMAGE1].image_url"),
        (ctx(asin="B0BADIMAGE", images=["ftp://img.example.com/a.jpg"]), "products[B0BADIMAGE].image_url"),
        (ctx(platform="walmart"), "image_options.platform"),
    ],
)
def test_build_requests_names_the_field(provider, context, field) -> None:
    with pytest.raises(RequestValidationError) as exc:
        provider.build_requests(Step.IMAGES, context)
    assert exc.value.field == field
    assert field in str(exc.value)


def test_build_requests_other_steps_refused(provider) -> None:
    with pytest.raises(RequestValidationError) as exc:
        provider.build_requests(Step.COPY, ctx())
    assert exc.value.field == "step"


def test_build_batch_merges_products_into_batches_of_50(provider) -> None:
    pairs = []
    for n in range(11):
        styles = ["white_bg", "lifestyle", "mockup", "infographic", "comparison"]
        requests = provider.build_requests(Step.IMAGES, ctx(asin=f"B0MERGE{n:03d}", styles=styles))
        pairs += labeled_items(requests[0], prefix=f"US/B0MERGE{n:03d}/")
    batches = ProdVisualProvider.build_batch(pairs)
    assert [len(b.items) for b in batches] == [50, 5]
    assert batches[0].labels[0] == "US/B0MERGE000/white_bg-1"
    assert batches[1].labels[-1] == "US/B0MERGE010/comparison-1"
    with pytest.raises(RequestValidationError) as exc:
        build_batch(pairs[:2] + pairs[:1])
    assert exc.value.field == "labels"
    assert build_batch([]) == []
