"""Error parsing with exact bodies and headers (httpx.MockTransport), and secret hygiene."""

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
from providers.listingrva.client import ListingRVAClient
from providers.listingrva.plugin import ListingRVAProvider, ListingRVASettings

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtdXNlciJ9.c2VjcmV0LXNpZ25hdHVyZQ"


def mock(handler: Any) -> tuple[ListingRVAClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return ListingRVAClient(
        http, base_url="https://api.test/api", token_provider=lambda: TOKEN, secrets=[TOKEN]
    ), seen


def body(status: int, payload: Any, headers: dict[str, str] | None = None) -> Any:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return lambda request: httpx.Response(status, content=content, headers=headers)


def err(code: str, message: str = "oops") -> dict[str, str]:
    return {"error": code, "message": f"{message} (token {TOKEN})"}  # echoes the credential


@pytest.mark.parametrize(
    ("status", "payload", "headers", "exc", "retry_after"),
    [
        (429, err("rate_limited"), {"Retry-After": "7"}, RateLimited, 7.0),
        (429, err("rate_limited"), {"X-RateLimit-Reset": "NOW+30"}, RateLimited, 30.0),
        (429, err("rate_limited"), {"X-RateLimit-Reset": "12"}, RateLimited, 12.0),
        (429, {"error": "rate_limited", "message": "slow", "retryAfter": 4}, {}, RateLimited, 4.0),
        (429, err("rate_limit_exceeded"), {}, RateLimited, None),
        (429, err("daily_limit_exceeded"), {"Retry-After": "3600"}, QuotaExhausted, 3600.0),
        (500, err("internal_error"), {}, ServerError, None),
        (502, b"<html>Bad gateway</html>", {}, ServerError, None),
        (503, err("unavailable"), {"Retry-After": "2"}, ServerError, 2.0),
        (504, b"", {}, ServerError, None),
        (400, err("validation_error"), {}, RequestValidationError, None),
        (401, err("unauthorized"), {}, AuthenticationError, None),
        (403, err("plan_required"), {}, AuthenticationError, None),
        (402, err("insufficient_credits"), {}, InsufficientCredits, None),
        (400, err("insufficient_credits"), {}, InsufficientCredits, None),
        (404, err("not_found"), {}, NotFound, None),
        (422, err("unprocessable"), {}, ContentRefused, None),
        (400, err("content_policy_violation"), {}, ContentRefused, None),
        (409, err("conflict"), {}, PermanentError, None),
        (418, b"teapot", {}, PermanentError, None),
    ],
)
async def test_error_mapping(
    status: int, payload: Any, headers: dict[str, str], exc: type, retry_after: float | None
) -> None:
    if headers.get("X-RateLimit-Reset") == "NOW+30":  # a Unix timestamp 30 s from now
        headers = {"X-RateLimit-Reset": str(time.time() + 30)}
    client, _ = mock(body(status, payload, headers))
    with pytest.raises(exc) as info:
        await client.credits()
    error = info.value
    assert type(error) is exc
    assert error.status == status and error.provider == "listingrva"
    assert error.retryable == issubclass(exc, RetryableError)
    if retry_after is None:
        assert getattr(error, "retry_after", None) is None
    else:
        assert error.retry_after == pytest.approx(retry_after, abs=1)
    if isinstance(payload, dict):
        assert error.code == payload["error"]
    for text in (str(error), repr(error), json.dumps(error.to_dict()), repr(client), repr(client.token_auth)):
        assert TOKEN not in text


async def test_malformed_json_is_retryable() -> None:
    client, _ = mock(body(200, b'{"creditsRemaining": 3'))
    with pytest.raises(MalformedResponse) as info:
        await client.credits()
    assert info.value.retryable


async def test_wrong_shape_is_malformed() -> None:
    client, _ = mock(body(202, {"status": "queued"}))  # no jobId
    with pytest.raises(MalformedResponse):
        await client.generate_listing({"productId": "prod_1"})


async def test_connection_error_is_retryable_and_clean() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused while sending Bearer {TOKEN}")

    client, _ = mock(boom)
    with pytest.raises(ProviderConnectionError) as info:
        await client.credits()
    assert TOKEN not in str(info.value)


async def test_401_refreshes_token_once() -> None:
    client, seen = mock(body(401, err("unauthorized")))
    with pytest.raises(AuthenticationError):
        await client.get_job("job_1")
    assert len(seen) == 2 and all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in seen)


async def test_requests_carry_bearer_json_and_groups() -> None:
    groups: list[list[str]] = []

    async def throttle(g: list[str]) -> None:
        groups.append(g)

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/ai/listing"):
            return httpx.Response(200, json={"jobId": "job_1", "status": "queued", "creditCost": 6})
        if request.url.path.endswith("/products"):
            return httpx.Response(
                201, json={"product": {"id": "prod_1", "title": "T", "images": ["https://i/x"]}}
            )
        return httpx.Response(200, json={"creditsRemaining": 7})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = ListingRVAClient(
        http, base_url="https://api.test/api/", token_provider=lambda: TOKEN, throttle=throttle
    )
    job = await client.generate_listing({"productId": "prod_1", "platform": "general"})
    prod = await client.create_product({"title": "T"})  # wrapped body accepted
    await client.credits()
    assert job.job_id == "job_1" and prod.id == "prod_1" and prod.images[0].url == "https://i/x"
    assert [str(r.url) for r in seen] == [
        "https://api.test/api/ai/listing",
        "https://api.test/api/products",
        "https://api.test/api/billing/credits",
    ]
    assert json.loads(seen[0].content) == {"productId": "prod_1", "platform": "general"}
    assert seen[0].headers["content-type"] == "application/json"
    assert groups == [["ai", "global"], ["products", "global"], ["global"]]


async def test_tolerant_bodies() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/products") and request.method == "POST":
            return httpx.Response(201, json={"id": "prod_1", "title": "T", "images": None, "extra": 1})
        if path.endswith("/products"):
            return httpx.Response(200, json=[{"id": "prod_2", "title": "U"}])  # bare list
        return httpx.Response(
            200,
            json={
                "job": {
                    "id": "job_1",
                    "status": "completed",
                    "result": {
                        "imageUrl": "https://cdn/a.png",
                        "title": "T",
                        "bullets": "- one\n- two",
                        "keywords": "a, b,,c",
                    },
                }
            },
        )

    client = ListingRVAClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        base_url="https://api.test/api",
        token_provider=lambda: TOKEN,
    )
    assert (await client.create_product({"title": "T"})).images == []
    assert [p.id for p in (await client.list_products()).products] == ["prod_2"]
    job = await client.get_job("job_1")
    assert job.image_urls() == ["https://cdn/a.png"]
    copy = job.listing_copy()
    assert (copy.bullets, copy.keywords) == (["one", "two"], ["a", "b", "c"])


async def test_failed_job_fields() -> None:
    client, _ = mock(body(200, {"id": "job_1", "status": "failed"}))
    job = await client.get_job("job_1")
    assert (job.error_code(), job.error_message()) == ("job_failed", "unknown failure")


async def test_delete_accepts_204() -> None:
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        return httpx.Response(204)

    client = ListingRVAClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        base_url="https://api.test/api",
        token_provider=lambda: TOKEN,
    )
    assert await client.delete_webhook("wh_1") is None
    assert methods == ["DELETE"]


async def test_provider_never_shows_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LISTINGRVA_BASE_URL", raising=False)  # the documented default, whatever ran before
    http = httpx.AsyncClient(transport=httpx.MockTransport(body(500, err("internal_error"))))
    provider = ListingRVAProvider(http, ListingRVASettings(api_key=TOKEN))
    assert provider.settings.base_url == "https://api.listingrvaai.com/api"
    with pytest.raises(ServerError) as info:
        await provider.balance()
    for text in (str(info.value), repr(provider), repr(provider.client), repr(provider.settings)):
        assert TOKEN not in text


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTINGRVA_API_KEY", TOKEN)
    monkeypatch.setenv("LISTINGRVA_POLL_INTERVAL_SECONDS", "2.5")
    settings = ListingRVASettings()
    assert settings.api_key.get_secret_value() == TOKEN and settings.poll_interval_seconds == 2.5
    assert TOKEN not in repr(settings)


async def test_401_retry_resends_the_post_body_with_a_fresh_token() -> None:
    seen: list[tuple[str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["Authorization"], request.content))
        if len(seen) == 1:
            return httpx.Response(401, json={"error": "unauthorized", "message": "expired"})
        return httpx.Response(202, json={"jobId": "job_1", "status": "queued", "creditCost": 6})

    tokens = iter(["old.jwt.token", "new.jwt.token"])
    client = ListingRVAClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        base_url="https://api.test/api",
        token_provider=lambda: next(tokens),
    )
    assert (await client.generate_listing({"productId": "prod_1"})).credit_cost == 6
    assert seen == [
        ("Bearer old.jwt.token", b'{"productId":"prod_1"}'),
        ("Bearer new.jwt.token", b'{"productId":"prod_1"}'),
    ]
