"""The sandbox itself: documented rate limits, the provider's error bodies, auth.

Contract: docs/providers/listingrva.md (cited below as "contract §N").
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from providers.errors import RateLimited
from providers.listingrva.client import ListingRVAClient
from providers.listingrva.sandbox import ListingRVASandbox

from .conftest import KEY

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def strict() -> Iterator[ListingRVASandbox]:
    """The documented limits (default_config), untouched."""
    sb = ListingRVASandbox()
    assert sb.config.rate_limits == {"ai": (30, 60.0), "products": (120, 60.0), "global": (200, 60.0)}
    sb.start()
    yield sb
    sb.stop()


async def test_ai_bucket_is_30_per_minute(strict: ListingRVASandbox, http: httpx.AsyncClient) -> None:
    for _ in range(30):
        assert (await http.get(f"{strict.api_url}/ai/jobs/job_missing", headers=AUTH)).status_code == 404
    limited = await http.get(f"{strict.api_url}/ai/jobs/job_missing", headers=AUTH)
    assert limited.status_code == 429
    assert limited.json() == {"error": "rate_limit_exceeded", "message": "Rate limit exceeded for /api/ai"}
    # ASSUMPTION (contract §4): no rate-limit headers are documented, so none are sent
    assert not any(h.lower().startswith(("retry-after", "x-ratelimit")) for h in limited.headers)
    assert (await http.get(f"{strict.api_url}/products", headers=AUTH)).status_code == 200  # other bucket
    client = ListingRVAClient(http, base_url=strict.api_url, token_provider=lambda: KEY)
    with pytest.raises(RateLimited) as info:
        await client.get_job("job_missing")
    assert info.value.retry_after is None
    assert strict.max_requests_in_window("ai", 60) == 30
    strict.clock.advance(61)  # the sliding window empties
    assert (await http.get(f"{strict.api_url}/ai/jobs/job_missing", headers=AUTH)).status_code == 404


async def test_global_bucket_counts_every_route(strict: ListingRVASandbox, http: httpx.AsyncClient) -> None:
    strict.clock.advance(61)
    for i in range(200):
        path = "/billing/credits" if i % 2 else "/products"
        assert (await http.get(f"{strict.api_url}{path}", headers=AUTH)).status_code == 200
    limited = await http.get(f"{strict.api_url}/assets", headers=AUTH)
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limit_exceeded"
    assert strict.max_requests_in_window("global", 60) == 200


@pytest.mark.parametrize(
    ("path", "payload", "words"),
    [
        ("/ai/image", {"style": "CLEAN_WHITE_BG"}, "productId"),
        ("/ai/image", {"productId": "PRODUCT", "style": "WATERCOLOR"}, "style"),
        (
            "/ai/image",
            {"productId": "PRODUCT", "style": "CLEAN_WHITE_BG", "outputSize": {"w": 1000, "h": 1500}},
            "outputSize",
        ),
        ("/ai/image", {"productId": "PRODUCT", "style": "CLEAN_WHITE_BG", "platform": "ebay"}, "platform"),
        ("/ai/image", {"productId": "PRODUCT", "style": "CLEAN_WHITE_BG", "aiModel": "x"}, "aiModel"),
        ("/ai/listing", {"productId": "PRODUCT", "components": ["title", "title"]}, "components"),
        ("/ai/listing", {"productId": "PRODUCT", "tone": "shouty"}, "tone"),
        ("/ai/listing", {"productId": "PRODUCT", "seedKeywords": 3}, "seedKeywords"),
        ("/products", {"title": ""}, "title"),
        ("/webhooks", {"url": "https://h.test", "events": []}, "events"),
    ],
)
async def test_sandbox_validates_with_its_own_body(
    sandbox: ListingRVASandbox, http: httpx.AsyncClient, path: str, payload: dict, words: str
) -> None:
    if payload.get("productId") == "PRODUCT":
        created = await http.post(f"{sandbox.api_url}/products", json={"title": "Raw"}, headers=AUTH)
        payload = {**payload, "productId": created.json()["id"]}
    charges = len(sandbox.charges)
    response = await http.post(f"{sandbox.api_url}{path}", json=payload, headers=AUTH)
    assert response.status_code == 400
    body = response.json()
    assert (
        set(body) == {"error", "message"} and body["error"] == "validation_error" and words in body["message"]
    )
    assert len(sandbox.charges) == charges


async def test_missing_token_is_401(sandbox: ListingRVASandbox, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{sandbox.api_url}/billing/credits")
    assert response.status_code == 401 and set(response.json()) == {"error", "message"}


async def test_job_lifecycle_statuses(sandbox: ListingRVASandbox, http: httpx.AsyncClient) -> None:
    product = (
        await http.post(f"{sandbox.api_url}/products", json={"title": "Lifecycle"}, headers=AUTH)
    ).json()
    sandbox.reconfigure(job_seconds_by_kind={"listing": 100})
    try:
        queued = await http.post(
            f"{sandbox.api_url}/ai/listing", json={"productId": product["id"]}, headers=AUTH
        )
    finally:
        sandbox.reconfigure(job_seconds_by_kind={})
    assert queued.status_code == 202 and queued.json()["creditCost"] == 6
    job_url = f"{sandbox.api_url}/ai/jobs/{queued.json()['jobId']}"
    assert (await http.get(job_url, headers=AUTH)).json()["status"] == "queued"
    sandbox.clock.advance(30)
    assert (await http.get(job_url, headers=AUTH)).json()["status"] == "processing"
    sandbox.clock.advance(80)
    done = (await http.get(job_url, headers=AUTH)).json()
    assert done["status"] == "completed" and done["type"] == "listing_generation"
    assert set(done["result"]) == {"title", "bullets", "description", "keywords"}
    assert done["created_at"] < done["updated_at"]
