"""Batches finished by ProdVisual's signed webhook instead of status polls (contract §11).

Contract: docs/providers/prodvisual.md (cited below as "contract §N").
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from providers.contract import JobRef, Step
from providers.prodvisual.plugin import ProdVisualProvider, build_batch
from providers.prodvisual.webhooks import PATH

from .conftest import KEY, count, ctx, make_settings


async def _batch(provider: ProdVisualProvider, asin: str) -> tuple[JobRef, object]:
    [request] = provider.build_requests(
        Step.IMAGES, ctx(asin, styles=["white_bg", "lifestyle", "infographic"])
    )
    ref = await provider.submit(Step.IMAGES, request)
    return ref, await provider.wait(JobRef.model_validate_json(ref.model_dump_json()))


@pytest.fixture
async def hooked(http, clean):
    provider = ProdVisualProvider(
        http, make_settings(clean.public_url, webhook_url="auto", webhook_reconcile_seconds=30)
    )
    yield provider
    await provider.aclose()


async def test_a_batch_finishes_on_its_webhook_without_a_status_request(hooked, clean) -> None:
    polls = count(clean, "generation")
    ref, result = await _batch(hooked, "B0HOOK0001")
    assert ref.meta["webhook"] is True
    assert count(clean, "generation") == polls  # the event carried the finished batch
    assert result.status == "completed" and [o.label for o in result.outputs] == [
        "white_bg-1",
        "lifestyle-1",
        "infographic-1",
    ]
    assert hooked._inbox is not None and hooked._inbox.received == 1


async def test_the_webhook_url_is_not_part_of_what_is_paid_for(hooked) -> None:
    """Reruns find earlier submissions by the request's canonical form: the receiver's address, which
    changes from run to run, must not be in it."""
    [request] = hooked.build_requests(Step.IMAGES, ctx("B0HOOK0002", styles=["white_bg", "lifestyle"]))
    [merged] = build_batch([(f"a{n}", item) for n, item in enumerate(request.items)])
    assert merged.webhook_url is None
    await hooked.submit(Step.IMAGES, merged)
    assert merged.webhook_url is None  # submit sends a copy


async def test_unsigned_or_forged_events_are_refused(hooked, http) -> None:
    await hooked._webhooks()
    inbox = hooked._inbox
    body = json.dumps(
        {"event": "batch.completed", "data": {"id": "batch_forged", "status": "completed"}}
    ).encode()
    inbox.expect("batch_forged")
    unsigned = await http.post(inbox.url, content=body)
    forged = await http.post(
        inbox.url,
        content=body,
        headers={"X-ProdVisual-Signature": hmac.new(b"someone-else", body, hashlib.sha256).hexdigest()},
    )
    garbled = await http.post(inbox.url, content=body, headers={"X-ProdVisual-Signature": b"\xe9" * 64})
    assert unsigned.status_code == forged.status_code == garbled.status_code == 401
    signed = await http.post(
        inbox.url,
        content=body,
        headers={
            "X-ProdVisual-Signature": "sha256=" + hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
        },
    )
    assert signed.status_code == 200
    assert await inbox.wait("batch_forged", 5) is not None and inbox.refused == 3


async def test_a_webhook_that_never_comes_falls_back_to_polling(http, clean) -> None:
    provider = ProdVisualProvider(
        http, make_settings(clean.public_url, webhook_url="auto", webhook_reconcile_seconds=0.3)
    )
    try:
        await provider._webhooks()
        provider._inbox.url = "http://127.0.0.1:9" + PATH  # ProdVisual cannot reach us: nothing is delivered
        polls = count(clean, "generation")
        _, result = await _batch(provider, "B0HOOK0003")
        assert result.status == "completed" and len(result.outputs) == 3
        assert count(clean, "generation") > polls  # confirmed by a status request after the reconcile delay
    finally:
        await provider.aclose()


async def test_an_event_without_the_results_only_wakes_the_waiter(hooked, clean, http) -> None:
    """Only ``generation.completed`` is documented; a batch event without per-item results is
    confirmed with one status request instead of being trusted."""
    clean.reconfigure(job_seconds_by_kind={"batch": 1.0})
    [request] = hooked.build_requests(Step.IMAGES, ctx("B0HOOK0004", styles=["white_bg", "lifestyle"]))
    ref = await hooked.submit(Step.IMAGES, request)
    body = json.dumps(
        {"event": "batch.completed", "data": {"id": ref.job_id, "status": "completed"}}
    ).encode()
    sig = hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    assert (
        await http.post(hooked._inbox.url, content=body, headers={"X-ProdVisual-Signature": sig})
    ).status_code == 200
    polls = count(clean, "generation")
    result = await hooked.wait(ref)
    assert result.status == "completed" and len(result.outputs) == 2
    assert count(clean, "generation") >= polls + 1


def test_a_webhook_url_must_be_a_url() -> None:
    with pytest.raises(ValueError, match="PRODVISUAL_WEBHOOK_URL"):
        make_settings("http://127.0.0.1:1", webhook_url="hooks.example.com/x")
    assert make_settings("http://127.0.0.1:1", webhook_url="").webhook_url is None


async def test_the_first_batches_of_a_run_all_carry_the_receivers_url(hooked, clean) -> None:
    """They are submitted together, while the receiver is still starting."""
    import asyncio

    requests = [
        hooked.build_requests(Step.IMAGES, ctx(f"B0HOOKC{n:03d}", styles=["white_bg", "lifestyle"]))[0]
        for n in range(6)
    ]
    refs = await asyncio.gather(*(hooked.submit(Step.IMAGES, r) for r in requests))
    assert all(ref.meta["webhook"] for ref in refs)
    results = await asyncio.gather(*(hooked.wait(ref) for ref in refs))
    assert all(r.status == "completed" for r in results)
