"""Every client call against a running sandbox."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from providers.errors import AuthenticationError, InsufficientCredits, NotFound
from providers.listingrva.client import ListingRVAClient, verify_webhook_signature
from providers.listingrva.models import ImageRequest, ListingRequest, ProductCreate
from providers.listingrva.sandbox import FREE_PLAN_JWT, ListingRVASandbox

from .conftest import KEY


async def new_product(client: ListingRVAClient, title: str = "Bamboo Cutting Board", **kw: str):
    return await client.create_product(ProductCreate(title=title, category="Kitchen", **kw))


async def finished(client: ListingRVAClient, job_id: str, tries: int = 200):
    for _ in range(tries):
        job = await client.get_job(job_id)
        if job.finished:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("job did not finish")


async def test_products_create_get_and_page(client: ListingRVAClient, sandbox: ListingRVASandbox) -> None:
    created = [
        await new_product(client, f"Paged product {i}", imageUrl="https://img.example.com/a.jpg")
        for i in range(3)
    ]
    assert created[0].id.startswith("prod_") and created[0].images[0].url == "https://img.example.com/a.jpg"
    total = len(sandbox.products)
    page = await client.list_products(page=2, limit=2)
    assert page.page == 2 and page.total == total and len(page.products) == min(2, total - 2)
    ids = []
    for n in range(1, total + 1):
        ids += [p.id for p in (await client.list_products(page=n, limit=1)).products]
    assert ids == list(sandbox.products)


async def test_image_job_runs_to_a_png(client: ListingRVAClient, http: httpx.AsyncClient) -> None:
    prod = await new_product(client)
    req = ImageRequest(
        productId=prod.id,
        style="LIFESTYLE_CONTEXTUAL",
        platform="shopify",
        outputSize={"w": 1500, "h": 1500},
        context="kitchen counter",
    )
    submitted = await client.generate_image(req)
    assert submitted.status == "queued" and submitted.credit_cost == 6 + 2 == req.credits
    job = await finished(client, submitted.job_id)
    assert job.status == "completed" and job.type == "image_generation" and job.created_at
    [url] = job.image_urls()
    png = await http.get(url)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")


async def test_amazon_forces_2000px_cost(client: ListingRVAClient) -> None:
    prod = await new_product(client)
    req = ImageRequest(
        productId=prod.id, style="LIFESTYLE_CONTEXTUAL", platform="amazon", outputSize={"w": 1000, "h": 1000}
    )
    assert (await client.generate_image(req)).credit_cost == 9 == req.credits  # the contract's example


async def test_listing_job_copy(client: ListingRVAClient) -> None:
    prod = await new_product(client, "Stainless Steel Water Bottle")
    req = ListingRequest(
        productId=prod.id,
        platform="general",
        seedKeywords="insulated, bpa free",
        tone="luxury",
        targetAudience="hikers",
    )
    submitted = await client.generate_listing(req)
    assert submitted.credit_cost == 6
    copy = (await finished(client, submitted.job_id)).listing_copy()
    assert "Stainless Steel Water Bottle" in copy.title
    assert copy.bullets and copy.description
    assert copy.keywords[:2] == ["insulated", "bpa free"]  # general returns a comma string


async def test_listing_components_subset(client: ListingRVAClient) -> None:
    prod = await new_product(client, "Yoga Mat")
    req = ListingRequest(productId=prod.id, platform="shopify", components=["title", "description"])
    job = await finished(client, (await client.generate_listing(req)).job_id)
    assert set(job.result) == {"title", "description"} and job.result["description"].startswith("<p>")


async def test_credits(client: ListingRVAClient, sandbox: ListingRVASandbox) -> None:
    credits = await client.credits()
    assert credits.credits_remaining == sandbox.balance
    assert credits.subscription_credits + credits.topup_credits == credits.credits_remaining
    assert credits.plan and credits.renews_at


async def test_insufficient_credits_is_402_and_charges_nothing(
    client: ListingRVAClient, sandbox: ListingRVASandbox
) -> None:
    prod = await new_product(client)
    before, charges = sandbox.balance, len(sandbox.charges)
    sandbox.balance = 5
    try:
        with pytest.raises(InsufficientCredits) as info:
            await client.generate_listing(ListingRequest(productId=prod.id, platform="amazon"))
        assert info.value.code == "insufficient_credits" and info.value.status == 402
        assert len(sandbox.charges) == charges and sandbox.balance == 5
    finally:
        sandbox.balance = before


async def test_unknown_ids_are_not_found(client: ListingRVAClient) -> None:
    with pytest.raises(NotFound):
        await client.get_job("job_nope")
    with pytest.raises(NotFound):
        await client.generate_image(ImageRequest(productId="prod_nope", style="CLEAN_WHITE_BG"))


async def test_webhooks_lifecycle_and_signed_delivery(
    client: ListingRVAClient, sandbox: ListingRVASandbox
) -> None:
    hook = await client.create_webhook({"url": f"{sandbox.public_url}/hook", "events": ["image.generated"]})
    assert hook.secret and hook.secret not in repr(hook)
    prod = await new_product(client, "Webhook Lamp")
    job = await client.generate_image(ImageRequest(productId=prod.id, style="CLEAN_WHITE_BG"))
    await finished(client, job.job_id)
    [delivery] = [d for d in sandbox.deliveries if job.job_id in d["body"].decode()]
    assert verify_webhook_signature(delivery["body"], delivery["signature"], hook.secret)
    assert not verify_webhook_signature(delivery["body"] + b" ", delivery["signature"], hook.secret)
    assert await client.delete_webhook(hook.id) is None
    with pytest.raises(NotFound):
        await client.delete_webhook(hook.id)


def test_verify_webhook_signature() -> None:
    import hashlib
    import hmac

    body = b'{"event":"image.generated"}'
    sig = hmac.new(b"whsec_x", body, hashlib.sha256).hexdigest()
    assert verify_webhook_signature(body, sig, "whsec_x")
    assert verify_webhook_signature(body, f" {sig.upper()}\n", "whsec_x")
    assert not verify_webhook_signature(body, sig, "whsec_y")
    assert not verify_webhook_signature(body, "", "whsec_x")


async def test_token_refreshed_once_on_401(sandbox: ListingRVASandbox, http: httpx.AsyncClient) -> None:
    tokens = iter(["expired.jwt.token", KEY])
    client = ListingRVAClient(http, base_url=sandbox.api_url, token_provider=lambda: next(tokens))
    start = len(sandbox.requests)
    assert (await client.credits()).credits_remaining == sandbox.balance
    assert [r.status for r in sandbox.requests[start:]] == [401, 200]
    assert (await client.credits()).credits_remaining == sandbox.balance  # fresh token is kept


async def test_second_401_is_final(sandbox: ListingRVASandbox, http: httpx.AsyncClient) -> None:
    calls = []

    async def bad_token() -> str:
        calls.append(1)
        return f"expired.jwt.{len(calls)}"

    client = ListingRVAClient(http, base_url=sandbox.api_url, token_provider=bad_token)
    start = len(sandbox.requests)
    with pytest.raises(AuthenticationError) as info:
        await client.credits()
    assert [r.status for r in sandbox.requests[start:]] == [401, 401] and len(calls) == 2
    assert "expired.jwt" not in str(info.value) and "expired.jwt" not in repr(client)


async def test_non_pro_plan_is_403(sandbox: ListingRVASandbox, http: httpx.AsyncClient) -> None:
    client = ListingRVAClient(http, base_url=sandbox.api_url, token_provider=lambda: FREE_PLAN_JWT)
    with pytest.raises(AuthenticationError) as info:
        await client.credits()
    assert info.value.status == 403 and FREE_PLAN_JWT not in str(info.value)


async def test_root_paths_also_served(sandbox: ListingRVASandbox, http: httpx.AsyncClient) -> None:
    client = ListingRVAClient(http, base_url=sandbox.public_url, token_provider=lambda: KEY)
    assert (await client.credits()).credits_remaining == sandbox.balance
