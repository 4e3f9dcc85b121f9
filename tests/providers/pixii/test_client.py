"""PixiiClient: every endpoint against the running sandbox, and error parsing from exact bodies."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from providers.errors import (
    AuthenticationError,
    ContentRefused,
    InsufficientCredits,
    MalformedResponse,
    NotFound,
    PermanentError,
    ProviderConnectionError,
    QuotaExhausted,
    RateLimited,
    RequestValidationError,
    RetryableError,
    ServerError,
)
from providers.http import BearerAuth
from providers.pixii.client import PixiiClient
from providers.pixii.models import parse_time
from providers.pixii.plugin import PixiiProvider

from .conftest import KEY, settings_for

LB = {
    "asin": "B0CLIENT01",
    "country_code": "DE",
    "listing_type": "amazon_listing",
    "main_image_url": "https://img.example.com/a.jpg",
}
SECRET = "pk_live_Sup3rSecretKeyValue"


# --- against the sandbox ---------------------------------------------------------------------------


async def test_listing_builder_and_get_job(sandbox, provider) -> None:
    sub = await provider.client.listing_builder(LB)
    assert sub.job_type == "Listing Builder" and sub.status == "pending"
    assert sub.remaining_credits == sandbox.balance and parse_time(sub.created_at) is not None
    job = await provider.client.get_job(sub.job_id)
    assert job.id == sub.job_id and job.status in ("pending", "processing") and job.output is None
    assert job.credit_cost == 15 and job.credits_refunded == 0
    record = sandbox.requests[-2]
    assert (record.method, record.path, record.groups) == ("POST", "/v1/api/listing_builder", ["submit"])
    assert sandbox.requests[-1].groups == []  # polls are not rate-limited


async def test_a_plus_and_scale_submit(sandbox, provider) -> None:
    sub = await provider.client.a_plus(
        {
            "asin": "B0CLIENT02",
            "country_code": "UK",
            "types": ["A+ Basic", "A+ Premium Mobile"],
            "user_prompt": "A bottle",
        }
    )
    assert sub.job_id and sandbox.jobs[sub.job_id].charged == 50
    sub = await provider.client.scale(
        {
            "asin": "B0CLIENT03",
            "country_code": "US",
            "scale_mode": "catalog",
            "items": [
                {
                    "preview_url": "https://img.example.com/r.png",
                    "platform": "TikTok",
                    "asset_type": "Product Photo",
                }
            ],
        }
    )
    assert sub.job_type == "Scale" and sandbox.jobs[sub.job_id].charged == 6


async def test_list_jobs_pages(sandbox, provider) -> None:
    ids = [(await provider.client.listing_builder({**LB, "asin": "B0PAGING01"})).job_id for _ in range(3)]
    page1 = await provider.client.list_jobs("B0PAGING01", limit=2)
    assert (page1.total, page1.page, page1.limit, len(page1.data)) == (3, 1, 2, 2) and page1.has_more
    assert [j.id for j in page1.data] == ids[::-1][:2]  # most recent first
    seen = [j.id async for j in provider.client.iter_jobs("B0PAGING01", limit=2)]
    assert seen == ids[::-1]
    assert sandbox.requests[-1].path == "/v1/api/jobs"
    assert (await provider.client.list_jobs("B0NOJOBS01")).data == []


async def test_unknown_job_is_not_found(sandbox, provider) -> None:
    with pytest.raises(NotFound) as info:
        await provider.client.get_job("job_nope")
    assert info.value.code == "JOB_NOT_FOUND" and info.value.status == 404


async def test_wrong_key_is_authentication_error(sandbox, http) -> None:
    bad = PixiiProvider(http, settings_for(sandbox.public_url, api_key=SECRET))
    with pytest.raises(AuthenticationError) as info:
        await bad.client.listing_builder(LB)
    assert info.value.code == "UNAUTHORIZED" and info.value.status == 401
    assert SECRET not in str(info.value) and SECRET not in repr(bad) and SECRET not in repr(bad.client)


async def test_sandbox_speaks_pixii_error_bodies(sandbox, http) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    bad_item = {
        "preview_url": "https://img.example.com/r.png",
        "platform": "Shopify",
        "asset_type": "Main Image",
    }
    r = await http.post(
        f"{sandbox.public_url}/v1/api/scale",
        headers=headers,
        json={"asin": "B0RAWBODY1", "country_code": "US", "scale_mode": "inspire", "items": [bad_item]},
    )
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"code", "message", "detail", "retry_after"}
    assert body["code"] == "VALIDATION_ERROR" and body["detail"].startswith("items[0].asset_type")
    assert r.headers["X-RateLimit-Limit-Minute"] and r.headers["X-RateLimit-Remaining-Day"]
    r = await http.post(
        f"{sandbox.public_url}/v1/api/a_plus",
        headers=headers,
        json={"asin": "B0RAWBODY1", "country_code": "US", "types": ["A+ Basic"], "user_prompt": ""},
    )
    assert r.status_code == 400 and r.json()["detail"].startswith("user_prompt")
    r = await http.get(f"{sandbox.public_url}/v1/api/jobs", headers=headers, params={"asin": "B0"})
    assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"
    r = await http.get(f"{sandbox.public_url}/v1/api/jobs/job_x")
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
    assert not any(job.asin == "B0RAWBODY1" for job in sandbox.jobs.values())


async def test_no_active_brand_and_insufficient_credits(sandbox, provider) -> None:
    sandbox.active_brand = False
    with pytest.raises(AuthenticationError) as info:
        await provider.client.listing_builder(LB)
    assert info.value.code == "NO_ACTIVE_BRAND"
    sandbox.active_brand = True
    sandbox.balance = 10
    with pytest.raises(InsufficientCredits) as info2:
        await provider.client.listing_builder(LB)
    assert info2.value.code == "INSUFFICIENT_CREDITS" and info2.value.status == 402
    assert sandbox.balance == 10


# --- exact bodies through MockTransport ---------------------------------------------------------


def mock_client(handler: Any) -> PixiiClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return PixiiClient(
        http,
        base_url="https://api.pixii.ai",
        auth=BearerAuth(settings_for("x", api_key=SECRET).api_key),
        secrets=[SECRET],
    )


def answer(
    status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers or {})

    return handler


ERRORS = [
    (
        429,
        {"code": "RATE_LIMIT_MINUTE_EXCEEDED", "message": "slow down", "retry_after": 30},
        {"Retry-After": "7"},
        RateLimited,
        7.0,
    ),
    (
        429,
        {"code": "RATE_LIMIT_MINUTE_EXCEEDED", "message": "slow down", "detail": "x", "retry_after": 12},
        {},
        RateLimited,
        12.0,
    ),
    (
        429,
        {"error": {"code": "RATE_LIMIT_DAY_EXCEEDED", "message": "daily", "retry_after": 3600}},
        {},
        QuotaExhausted,
        3600.0,
    ),
    (
        429,
        {"code": "RATE_LIMIT_DAY_EXCEEDED", "message": "daily"},
        {"Retry-After": "5400"},
        QuotaExhausted,
        5400.0,
    ),
    (429, None, {"X-RateLimit-Reset": "__RESET__"}, RateLimited, 20.0),
    (500, {"code": "INTERNAL_ERROR", "message": "boom"}, {}, ServerError, None),
    (
        503,
        {"error": {"code": "SERVICE_UNAVAILABLE", "message": "down"}},
        {"Retry-After": "3"},
        ServerError,
        3.0,
    ),
    (502, None, {}, ServerError, None),
    (
        400,
        {"code": "VALIDATION_ERROR", "message": "bad", "detail": "types: must be unique"},
        {},
        RequestValidationError,
        None,
    ),
    (400, {"code": "NO_ACTIVE_BRAND", "message": "no brand"}, {}, AuthenticationError, None),
    (422, {"code": "NO_ACTIVE_BRAND", "message": "no brand"}, {}, AuthenticationError, None),
    (402, {"code": "INSUFFICIENT_CREDITS", "message": "top up"}, {}, InsufficientCredits, None),
    (400, {"error": {"code": "INSUFFICIENT_CREDITS", "message": "top up"}}, {}, InsufficientCredits, None),
    (401, {"code": "UNAUTHORIZED", "message": "bad key"}, {}, AuthenticationError, None),
    (403, None, {}, AuthenticationError, None),
    (404, {"code": "JOB_NOT_FOUND", "message": "gone"}, {}, NotFound, None),
    (400, {"code": "INVALID_IMAGE_URL", "message": "cannot fetch image"}, {}, ContentRefused, None),
    (418, {"code": "TEAPOT", "message": "?"}, {}, PermanentError, None),
    (504, {"code": "SOMETHING_NEW", "message": "?"}, {}, ServerError, None),
]


@pytest.mark.parametrize(("status", "body", "headers", "cls", "retry_after"), ERRORS)
async def test_error_mapping(status, body, headers, cls, retry_after) -> None:
    headers = {k: (str(time.time() + 20) if v == "__RESET__" else v) for k, v in headers.items()}
    raw = b"<html>Bad gateway</html>" if body is None else None
    client = mock_client(answer(status, body, headers, raw))
    with pytest.raises(cls) as info:
        await client.get_job("job_1")
    exc = info.value
    assert type(exc) is cls or cls is PermanentError
    assert exc.retryable == issubclass(cls, RetryableError) and exc.status == status
    if retry_after is not None:
        assert exc.retry_after == pytest.approx(retry_after, abs=1.5)
    if body:
        inner = body.get("error", body)
        assert exc.code == inner["code"] and inner["message"] in str(exc)


async def test_validation_error_names_field_from_detail() -> None:
    client = mock_client(
        answer(400, {"code": "VALIDATION_ERROR", "message": "bad", "detail": "items[0].asset_type: no"})
    )
    with pytest.raises(RequestValidationError) as info:
        await client.get_job("job_1")
    assert info.value.field == "items[0].asset_type" and "items[0].asset_type" in str(info.value)


@pytest.mark.parametrize(
    "raw", [b'{"job_id": "j', b"<html>ok</html>", b"", b'{"status": "pending"}', b"[1, 2]"]
)
async def test_malformed_success_bodies(raw) -> None:
    client = mock_client(answer(200, raw=raw))
    with pytest.raises(MalformedResponse) as info:
        await client.listing_builder(LB)
    assert info.value.retryable


async def test_wrapped_and_bare_bodies_and_headers() -> None:
    seen: list[httpx.Request] = []
    sub = {
        "job_id": "job_9",
        "job_type": "Listing Builder",
        "status": "pending",
        "created_at": "2025-01-01T00:00:00Z",
        "remaining_credits": 88,
    }
    job = {
        "id": "job_9",
        "status": "completed",
        "credit_cost": 70,
        "credits_refunded": None,
        "output": {
            "ads": [{"type": "A+ Basic", "preview": "https://x/p.png", "modules": ["https://x/m.png"]}]
        },
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(200, json={"data": sub} if len(seen) == 1 else sub)
        return httpx.Response(200, json={"data": job})

    client = mock_client(handler)
    assert (await client.listing_builder(LB)).remaining_credits == 88
    assert (await client.listing_builder(LB)).job_id == "job_9"
    parsed = await client.get_job("job_9")
    assert parsed.credits_refunded == 0 and parsed.output.ads[0].url == "https://x/p.png"
    assert seen[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert seen[0].headers["Content-Type"] == "application/json"
    assert json.loads(seen[0].content) == LB
    assert str(seen[0].url) == "https://api.pixii.ai/v1/api/listing_builder"
    assert str(seen[2].url) == "https://api.pixii.ai/v1/api/jobs/job_9"


async def test_secret_never_in_errors() -> None:
    leaky = {"code": "UNAUTHORIZED", "message": f"key {SECRET} revoked", "detail": f"Bearer {SECRET}"}
    handlers = [
        answer(401, leaky),
        answer(400, {"error": {**leaky, "code": "VALIDATION_ERROR"}}),
        answer(500, raw=f"<html>{SECRET}</html>".encode()),
        answer(429, {**leaky, "code": "RATE_LIMIT_DAY_EXCEEDED"}),
        answer(200, raw=SECRET.encode()),
    ]

    def connect_fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach with {SECRET}")

    for handler in [*handlers, connect_fail]:
        client = mock_client(handler)
        with pytest.raises(Exception) as info:
            await client.listing_builder(LB)
        exc = info.value
        assert SECRET not in str(exc) and SECRET not in repr(exc) and SECRET not in json.dumps(exc.to_dict())
        assert SECRET not in repr(client)
    assert isinstance(exc, ProviderConnectionError)
