"""The client against a running sandbox (every endpoint) and against exact bodies (error mapping)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest
from pydantic import SecretStr

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
from providers.prodvisual import client as client_module
from providers.prodvisual.client import ProdVisualClient, verify_webhook_signature
from providers.prodvisual.models import DOCUMENTED_STYLES, BatchStatus, Generation
from providers.prodvisual.plugin import ProdVisualProvider

from .conftest import KEY, count, make_settings

IMG = "https://img.example.com/B0CLIENT01/main.jpg"


# ---- every endpoint against the sandbox ----


async def test_styles_unauthenticated_and_cached(provider, sandbox) -> None:
    client = provider.client
    before = count(sandbox, "styles")
    styles = await client.styles()
    assert styles.total == 22 and len(styles.styles) == 22
    assert set(DOCUMENTED_STYLES) <= styles.ids()
    await client.styles()
    assert count(sandbox, "styles") == before + 1  # second call served from the 24 h cache
    assert client.cached_style_ids == styles.ids()
    records = [r for r in sandbox.requests if r.route == "styles"]
    assert records[-1].status == 200 and records[-1].counted  # counts against the 60/min window


async def test_generate_completes_synchronously(provider, sandbox) -> None:
    gen = await provider.client.generate(
        {"image_url": IMG, "style": "lifestyle", "platform": "amazon", "format": "webp", "quality": 80}
    )
    assert gen.id.startswith("gen_") and gen.status == "completed"
    assert gen.output_url and gen.credits_used == 1 and gen.credits_remaining == sandbox.balance
    assert gen.dimensions == "1500x1500" and gen.format == "webp"
    assert gen.expires_epoch() == pytest.approx(time.time() + 7 * 86400, abs=120)
    again = await provider.client.generation(gen.id)
    assert isinstance(again, Generation) and again.output_url == gen.output_url


async def test_batch_then_status(provider, sandbox) -> None:
    items = [
        {"image_url": IMG, "style": "white_bg"},
        {"image_url": IMG, "style": "mockup", "dimensions": "800x600"},
    ]
    sub = await provider.client.generate_batch({"items": items})
    assert sub.batch_id.startswith("batch_") and sub.total_items == 2 and sub.credits_used == 2
    assert sub.estimated_time_ms is not None and sub.results_url.endswith(sub.batch_id)
    state = await provider.client.generation(sub.batch_id)
    assert isinstance(state, BatchStatus) and state.status in ("pending", "processing")
    time.sleep(0.25)
    state = await provider.client.generation(sub.batch_id)
    assert state.status == "completed" and [r.status for r in state.results] == ["completed", "completed"]
    assert state.results[1].dimensions == "800x600"
    item = await provider.client.generation(state.results[0].id)  # batch items are readable on their own
    assert isinstance(item, Generation) and item.output_url == state.results[0].output_url


async def test_credits(provider, sandbox) -> None:
    credits = await provider.client.credits()
    assert credits.credits_remaining == sandbox.balance
    assert credits.credits_used_total == sandbox.net_credits()
    assert (
        credits.last_purchase is not None and credits.last_purchase.amount == sandbox.config.starting_credits
    )
    assert await provider.balance() == sandbox.balance


async def test_sandbox_errors_map_to_taxonomy(provider, sandbox, http) -> None:
    with pytest.raises(NotFound) as exc:
        await provider.client.generation("gen_doesnotexist")
    assert exc.value.code == "not_found" and exc.value.status == 404
    bad_key = ProdVisualProvider(
        http, make_settings(sandbox.public_url, api_key=SecretStr("pv_test_wrong_key_123"))
    )
    with pytest.raises(AuthenticationError) as exc:
        await bad_key.client.credits()
    assert "pv_test_wrong_key_123" not in str(exc.value) and exc.value.code == "unauthorized"
    saved = sandbox.balance
    sandbox.balance = 0
    try:
        with pytest.raises(InsufficientCredits):
            await provider.client.generate({"image_url": IMG, "style": "white_bg"})
    finally:
        sandbox.balance = saved


# ---- error mapping against exact bodies ----


def mock_client(handler, **kw) -> ProdVisualClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ProdVisualClient(http, base_url="https://api.prodvisual.com", api_key=SecretStr(SECRET), **kw)


SECRET = "pv_live_supersecretkey0123456789"


def error(status: int, code: str, message: str = "boom", headers: dict[str, str] | None = None):
    body = {"error": {"code": code, "message": message, "status": status}}
    return lambda request: httpx.Response(status, json=body, headers=headers or {})


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid_request", RequestValidationError),
        (401, "unauthorized", AuthenticationError),
        (403, "forbidden", AuthenticationError),
        (402, "insufficient_credits", InsufficientCredits),
        (404, "not_found", NotFound),
        (413, "file_too_large", ContentRefused),
        (422, "invalid_image", ContentRefused),
        (409, "conflict", PermanentError),
        (418, "teapot", PermanentError),
        (500, "server_error", ServerError),
        (502, "bad_gateway", ServerError),
        (503, "service_unavailable", ServerError),
        (504, "timeout", ServerError),
    ],
)
async def test_error_mapping(status, code, expected) -> None:
    client = mock_client(error(status, code, "Problem with the request"))
    with pytest.raises(expected) as exc:
        await client.credits()
    assert type(exc.value) is expected
    assert exc.value.retryable is (status >= 500)
    assert exc.value.code == code and exc.value.status == status
    assert "Problem with the request" in str(exc.value)


async def test_429_retry_after_from_ratelimit_reset() -> None:
    reset = str(int(time.time()) + 30)
    client = mock_client(
        error(
            429,
            "rate_limited",
            headers={"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
        )
    )
    with pytest.raises(RateLimited) as exc:
        await client.credits()
    assert exc.value.retryable and 28 <= exc.value.retry_after <= 31


async def test_429_retry_after_header_wins() -> None:
    client = mock_client(error(429, "rate_limited", headers={"Retry-After": "7"}))
    with pytest.raises(RateLimited) as exc:
        await client.credits()
    assert exc.value.retry_after == 7


async def test_429_without_hints_has_no_retry_after() -> None:
    client = mock_client(error(429, "rate_limited"))
    with pytest.raises(RateLimited) as exc:
        await client.credits()
    assert exc.value.retry_after is None


async def test_429_with_far_reset_is_the_daily_cap() -> None:
    reset = str(int(time.time()) + 5 * 3600)
    client = mock_client(error(429, "rate_limited", "Daily limit", headers={"X-RateLimit-Reset": reset}))
    with pytest.raises(QuotaExhausted) as exc:
        await client.credits()
    assert not isinstance(exc.value, RetryableError)
    assert exc.value.retry_after == pytest.approx(5 * 3600, abs=3)


async def test_5xx_html_body_is_server_error() -> None:
    client = mock_client(lambda r: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(ServerError) as exc:
        await client.credits()
    assert exc.value.status == 502


@pytest.mark.parametrize("body", [b'{"credits_remaining": 1', b"<html>oops</html>", b""])
async def test_malformed_json_is_retryable(body) -> None:
    client = mock_client(
        lambda r: httpx.Response(200, content=body, headers={"content-type": "application/json"})
    )
    with pytest.raises(MalformedResponse) as exc:
        await client.credits()
    assert exc.value.retryable


async def test_wrong_shape_is_malformed() -> None:
    client = mock_client(lambda r: httpx.Response(200, json={"balance": 3}))
    with pytest.raises(MalformedResponse) as exc:
        await client.credits()
    assert "credits_remaining" in str(exc.value)
    client = mock_client(lambda r: httpx.Response(200, json={"status": "completed"}))
    with pytest.raises(MalformedResponse):  # no id: the generation could never be polled
        await client.generate({"image_url": IMG, "style": "white_bg"})


async def test_batch_results_read_under_any_documented_name() -> None:
    for key in ("results", "items", "generations"):
        item = {"id": "gen_1", "status": "completed", "output_url": "u"}
        body = {"id": "batch_1", "status": "completed", key: [item]}
        client = mock_client(lambda r, body=body: httpx.Response(200, json=body))
        state = await client.generation("batch_1")
        assert isinstance(state, BatchStatus) and state.results[0].output_url == "u"


async def test_styles_fetch_failure_falls_back_to_server_validation() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v1/styles":
            return httpx.Response(
                500, json={"error": {"code": "server_error", "message": "x", "status": 500}}
            )
        return error(400, "invalid_request", "Invalid style")(request)

    client = mock_client(handler)
    with pytest.raises(RequestValidationError) as exc:
        await client.generate({"image_url": IMG, "style": "no_such_style"})
    assert exc.value.code == "invalid_request"  # the server's verdict, not a local one
    with pytest.raises(RequestValidationError):
        await client.generate({"image_url": IMG, "style": "no_such_style"})
    assert calls == ["/v1/styles", "/v1/generate", "/v1/generate"]  # failed fetch not retried at once


async def test_documented_styles_are_known_without_fetching_the_list() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json={"styles": [{"id": "white_bg"}, {"id": "kitchen"}], "total": 2})

    client = mock_client(handler)
    await client.check_styles(list(DOCUMENTED_STYLES), [f"s{n}" for n in range(len(DOCUMENTED_STYLES))])
    assert calls == []
    await client.check_styles(["white_bg", "kitchen"], ["s0", "s1"])  # an unpublished id: the list
    assert calls == ["/v1/styles"]


async def test_styles_cache_expires_after_24h(monkeypatch) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        assert "authorization" not in request.headers  # GET /v1/styles needs no auth
        return httpx.Response(200, json={"styles": [{"id": "white_bg"}], "total": 1})

    client = mock_client(handler)
    await client.styles()
    await client.styles()
    now = time.monotonic()
    monkeypatch.setattr(client_module.time, "monotonic", lambda: now + 24 * 3600 + 1)
    assert client.cached_style_ids is None
    await client.styles()
    assert calls == ["/v1/styles", "/v1/styles"]


async def test_throttle_sees_every_request_in_group_api() -> None:
    seen: list[list[str]] = []

    async def throttle(groups: list[str]) -> None:
        seen.append(groups)

    client = mock_client(
        lambda r: httpx.Response(200, json={"styles": [], "credits_remaining": 1}), throttle=throttle
    )
    await client.styles()
    await client.credits()
    assert seen == [["api"], ["api"]]


# ---- secrets ----


async def test_api_key_never_in_errors_or_reprs(http) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        leak = request.headers.get("authorization", "")
        return error(401, "unauthorized", f"bad key {leak}")(request)

    client = mock_client(echo)
    with pytest.raises(AuthenticationError) as exc:
        await client.credits()
    assert SECRET not in str(exc.value) and SECRET not in repr(exc.value)
    assert SECRET not in json.dumps(exc.value.to_dict())
    assert SECRET not in repr(client)

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect with {request.headers['authorization']}")

    with pytest.raises(ProviderConnectionError) as exc:
        await mock_client(broken).credits()
    assert SECRET not in str(exc.value)
    provider = ProdVisualProvider(
        http, make_settings("https://api.prodvisual.com", api_key=SecretStr(SECRET))
    )
    for thing in (provider, provider.client, provider.settings):
        assert SECRET not in repr(thing)


# ---- webhooks ----


def test_verify_webhook_signature() -> None:
    raw = b'{"event":"generation.completed","data":{"id":"gen_1"}}'
    digest = hmac.new(KEY.encode(), raw, hashlib.sha256).hexdigest()
    assert verify_webhook_signature(raw, digest, KEY)
    assert verify_webhook_signature(raw, f"sha256={digest}", KEY)
    assert verify_webhook_signature(raw, f"  {digest.upper()} ", SecretStr(KEY))
    assert not verify_webhook_signature(raw, digest, "pv_test_other")
    assert not verify_webhook_signature(raw + b" ", digest, KEY)
    assert not verify_webhook_signature(raw, "", KEY)
    assert not verify_webhook_signature(raw, "é" * 64, KEY)
    assert ProdVisualClient.verify_webhook_signature(raw, digest, KEY)
