"""The sandbox plays the contract: rate-limit headers and 429s, the daily cap, its own error bodies
for bad images and oversize batches, and signed webhooks."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from providers.contract import Step
from providers.errors import QuotaExhausted, RateLimited
from providers.prodvisual.client import verify_webhook_signature
from providers.prodvisual.plugin import ProdVisualProvider
from providers.prodvisual.sandbox import ProdVisualSandbox

from .conftest import KEY, ctx, fast_config, make_settings

AUTH = {"Authorization": f"Bearer {KEY}"}
IMG = "https://img.example.com/B0SANDBOX1/main.jpg"
RL_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert response.json() == {"error": {"code": code, "message": error["message"], "status": status}}
    assert all(h in response.headers for h in RL_HEADERS)


async def test_rate_limit_window_and_headers(http) -> None:
    with ProdVisualSandbox(fast_config(rate_limits={"api": (60, 60.0)})) as sb:
        responses = [await http.get(f"{sb.public_url}/v1/styles") for _ in range(60)]
        assert {r.status_code for r in responses} == {200}
        assert [int(r.headers["x-ratelimit-remaining"]) for r in responses[:3]] == [59, 58, 57]
        assert {r.headers["x-ratelimit-limit"] for r in responses} == {"60"}
        limited = await http.get(
            f"{sb.public_url}/v1/account/credits", headers=AUTH
        )  # one window for all routes
        assert_error(limited, 429, "rate_limited")
        assert limited.headers["x-ratelimit-remaining"] == "0"
        reset = int(limited.headers["x-ratelimit-reset"])
        assert time.time() < reset <= math.ceil(time.time()) + 61
        provider = ProdVisualProvider(http, make_settings(sb.public_url))
        with pytest.raises(RateLimited) as exc:
            await provider.client.credits()
        assert 0 < exc.value.retry_after <= 61
        assert sb.max_requests_in_window("api", 60) == 60


async def test_daily_cap(http) -> None:
    with ProdVisualSandbox(fast_config(daily_limit=3)) as sb:
        for _ in range(3):
            assert (await http.get(f"{sb.public_url}/v1/account/credits", headers=AUTH)).status_code == 200
        capped = await http.get(f"{sb.public_url}/v1/account/credits", headers=AUTH)
        assert_error(capped, 429, "rate_limited")
        assert "daily" in capped.json()["error"]["message"].lower()
        next_midnight = (int(sb.clock.now() // 86400) + 1) * 86400
        assert int(capped.headers["x-ratelimit-reset"]) == next_midnight
        assert capped.headers["x-ratelimit-limit"] == "3"
        sb.clock.advance(next_midnight - sb.clock.now() + 1)  # the next UTC day
        assert (await http.get(f"{sb.public_url}/v1/account/credits", headers=AUTH)).status_code == 200


async def test_daily_cap_maps_to_quota_exhausted(http) -> None:
    with ProdVisualSandbox(fast_config(daily_limit=1)) as sb:
        provider = ProdVisualProvider(http, make_settings(sb.public_url))
        await provider.client.credits()
        if (int(time.time() // 86400) + 1) * 86400 - time.time() <= 3600:
            pytest.skip("within an hour of the UTC day rollover the cap is indistinguishable from the window")
        with pytest.raises(QuotaExhausted):
            await provider.client.credits()


async def test_headers_on_every_response(sandbox, http) -> None:
    url = sandbox.public_url
    responses = [
        await http.get(f"{url}/v1/styles"),
        await http.get(f"{url}/v1/account/credits", headers=AUTH),
        await http.get(f"{url}/v1/account/credits"),  # 401
        await http.get(f"{url}/v1/generations/gen_nope", headers=AUTH),  # 404
        await http.post(f"{url}/v1/generate", headers=AUTH, json={"style": "white_bg"}),  # 400
    ]
    assert [r.status_code for r in responses] == [200, 200, 401, 404, 400]
    for r in responses:
        assert all(h in r.headers for h in RL_HEADERS), r
    assert_error(responses[2], 401, "unauthorized")
    assert_error(responses[3], 404, "not_found")
    assert_error(responses[4], 400, "invalid_request")
    assert "image_url" in responses[4].json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "code", "mentions"),
    [
        ({"image_url": "file:///etc/passwd", "style": "white_bg"}, 400, "invalid_request", "image_url"),
        (
            {"image_url": "https://img.example.com/a.gif", "style": "white_bg"},
            422,
            "invalid_image",
            "image_url",
        ),
        (
            {"image_url": "https://img.example.com/oversize.jpg", "style": "white_bg"},
            413,
            "file_too_large",
            "10MB",
        ),
        ({"image_url": IMG, "style": "watercolour"}, 400, "invalid_request", "style"),
        ({"image_url": IMG, "style": ["white_bg"]}, 400, "invalid_request", "style"),
        ({"image_url": 42, "style": "white_bg"}, 400, "invalid_request", "image_url"),
        ({"image_url": IMG, "style": "white_bg", "platform": "walmart"}, 400, "invalid_request", "platform"),
        ({"image_url": IMG, "style": "white_bg", "quality": 0}, 400, "invalid_request", "quality"),
        ({"image_url": IMG, "style": "white_bg", "dimensions": "big"}, 400, "invalid_request", "dimensions"),
        ({"image_url": IMG, "style": "white_bg", "background": "red"}, 400, "invalid_request", "background"),
        ({"image_url": IMG, "style": "white_bg", "format": "gif"}, 400, "invalid_request", "format"),
    ],
)
async def test_sandbox_validates_like_the_api(sandbox, http, body, status, code, mentions) -> None:
    charges = len(sandbox.charges)
    response = await http.post(f"{sandbox.public_url}/v1/generate", headers=AUTH, json=body)
    assert_error(response, status, code)
    assert mentions in response.json()["error"]["message"]
    assert len(sandbox.charges) == charges


async def test_batch_limits(sandbox, http) -> None:
    url = f"{sandbox.public_url}/v1/generate/batch"
    too_many = await http.post(
        url, headers=AUTH, json={"items": [{"image_url": IMG, "style": "white_bg"}] * 51}
    )
    assert_error(too_many, 400, "invalid_request")
    empty = await http.post(url, headers=AUTH, json={"items": []})
    assert_error(empty, 400, "invalid_request")
    bad_item = await http.post(
        url,
        headers=AUTH,
        json={"items": [{"image_url": IMG, "style": "white_bg"}, {"image_url": IMG, "style": "nope"}]},
    )
    assert_error(bad_item, 400, "invalid_request")
    assert "items[1].style" in bad_item.json()["error"]["message"]
    ok = await http.post(url, headers=AUTH, json={"items": [{"image_url": IMG, "style": "white_bg"}] * 50})
    assert ok.status_code == 200 and ok.json()["credits_used"] == 50


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[bytes, str]]] = []

    def do_POST(self) -> None:  # http.server API
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((raw, self.headers.get("X-ProdVisual-Signature", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


async def test_webhooks_are_signed_with_the_key(sandbox, http) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        provider = ProdVisualProvider(http, make_settings(sandbox.public_url))
        [request] = provider.build_requests(Step.IMAGES, ctx("B0WEBHOOK1"))
        ref = await provider.submit(Step.IMAGES, request.model_copy(update={"webhook_url": hook}))
        assert ref.meta["response"]["status"] == "pending"  # async because a webhook was given
        result = await provider.wait(ref)
        assert result.status == "completed"
        for _ in range(100):
            if _Receiver.received:
                break
            time.sleep(0.02)
        raw, signature = _Receiver.received[0]
        assert verify_webhook_signature(raw, signature, KEY)
        assert not verify_webhook_signature(raw, signature, "pv_test_other")
        event = json.loads(raw)
        assert event["event"] == "generation.completed" and event["data"]["id"] == ref.job_id
        assert event["data"]["output_url"] == result.outputs[0].url
    finally:
        server.shutdown()
