"""submit / wait / refresh / balance against a running sandbox, including faults, failing ASINs,
partial batches, timeouts and expired outputs.

Contract: docs/providers/prodvisual.md (cited below as "contract §N").
"""

from __future__ import annotations

import asyncio

import pytest

from providers.contract import JobRef, Step
from providers.errors import MalformedResponse, OutputExpired, ServerError, WaitTimeout
from providers.prodvisual.plugin import ProdVisualProvider, build_batch, labeled_items
from providers.sandbox.core import Fault, FaultRule

from .conftest import count, ctx, make_settings


async def run(provider: ProdVisualProvider, context) -> tuple[JobRef, object]:
    [request] = provider.build_requests(Step.IMAGES, context)
    ref = await provider.submit(Step.IMAGES, request)
    ref = JobRef.model_validate_json(ref.model_dump_json())  # refs must survive persistence
    return ref, await provider.wait(ref)


def charges_for(sandbox, job_id: str) -> list[int]:
    return [c.credits for c in sandbox.charges if c.job_id == job_id]


async def test_single_completes_inside_the_post(provider, clean, http) -> None:
    polls = count(clean, "generation")
    ref, result = await run(provider, ctx("B0SINGLE01"))
    assert (
        ref.kind == "generation"
        and ref.job_id.startswith("gen_")
        and ref.meta["response"]["status"] == "completed"
    )
    assert count(clean, "generation") == polls  # no status request was needed
    assert result.status == "completed" and result.credits_charged == 1 and result.credits_refunded == 0
    [out] = result.outputs
    assert out.label == "white_bg-1" and out.content_type == "image/png" and out.expires_at
    image = await http.get(out.url)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert charges_for(clean, ref.job_id) == [1]


async def test_single_pending_is_polled(provider, clean) -> None:
    clean.sync_limit_seconds = 0  # "under load": the POST answers before the job is done
    polls = count(clean, "generation")
    ref, result = await run(provider, ctx("B0PENDING1"))
    assert ref.meta["response"]["status"] in ("pending", "processing")
    assert count(clean, "generation") > polls
    assert (
        result.status == "completed"
        and result.outputs[0].label == "white_bg-1"
        and result.credits_charged == 1
    )


async def test_batch_for_several_styles(provider, clean, http) -> None:
    ref, result = await run(provider, ctx("B0BATCH001", styles=["white_bg", "lifestyle", "infographic"]))
    assert ref.kind == "batch" and ref.meta["labels"] == ["white_bg-1", "lifestyle-1", "infographic-1"]
    assert result.status == "completed" and not result.errors
    assert [o.label for o in result.outputs] == ["white_bg-1", "lifestyle-1", "infographic-1"]
    assert result.credits_charged == 3 and result.credits_refunded == 0
    bodies = {(await http.get(o.url)).content for o in result.outputs}
    assert len(bodies) == 3  # a different image per style


async def test_merged_batch_maps_outputs_back_to_products(provider, clean) -> None:
    pairs = []
    for asin in ("B0MERGEA01", "B0MERGEB01"):
        [req] = provider.build_requests(Step.IMAGES, ctx(asin, styles=["white_bg", "mockup"]))
        pairs += labeled_items(req, prefix=f"US/{asin}/")
    [batch] = build_batch(pairs)
    ref = await provider.submit(Step.IMAGES, batch)
    result = await provider.wait(ref)
    assert [o.label for o in result.outputs] == [
        "US/B0MERGEA01/white_bg-1",
        "US/B0MERGEA01/mockup-1",
        "US/B0MERGEB01/white_bg-1",
        "US/B0MERGEB01/mockup-1",
    ]


async def test_failing_asin_single_is_refunded(provider, clean) -> None:
    clean.reconfigure(fail_asins=["B0FAILS001"])
    ref, result = await run(provider, ctx("B0FAILS001"))
    assert result.status == "failed" and result.error_code == "generation_failed" and result.error_message
    assert result.net_credits == 0 and not result.outputs
    assert charges_for(clean, ref.job_id) == [1, -1]
    assert [c.kind for c in clean.charges if c.job_id == ref.job_id] == ["charge", "refund"]


async def test_failing_asin_batch_is_refunded_in_full(provider, clean) -> None:
    clean.reconfigure(fail_asins=["B0FAILS002"])
    before = await provider.balance()
    ref, result = await run(provider, ctx("B0FAILS002", styles=["white_bg", "lifestyle"]))
    assert result.status == "failed" and len(result.errors) == 2 and result.error_code == "generation_failed"
    assert result.credits_charged == 2 and result.credits_refunded == 2
    assert charges_for(clean, ref.job_id) == [2, -2]
    assert await provider.balance() == before


async def test_partial_batch_refunds_the_failed_item(provider, clean) -> None:
    clean.reconfigure(partial_fail_asins=["B0PARTIAL1"])
    before = (await provider.client.credits()).credits_remaining
    ref, result = await run(provider, ctx("B0PARTIAL1", styles=["white_bg", "lifestyle", "mockup"]))
    assert result.status == "completed"
    assert [o.label for o in result.outputs] == ["lifestyle-1", "mockup-1"]
    assert [(e.label, e.code) for e in result.errors] == [("white_bg-1", "generation_failed")]
    assert result.credits_charged == 3 and result.credits_refunded == 1 and result.net_credits == 2
    # contract §6: verify the refund with GET /v1/account/credits rather than trusting arithmetic
    after = (await provider.client.credits()).credits_remaining
    assert before - after == result.net_credits
    assert charges_for(clean, ref.job_id) == [3, -1]


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=503),
        Fault(status=500),
        Fault(kind="malformed"),
        Fault(kind="reset"),
        Fault(status=429, retry_after=0.05),
    ],
)
async def test_poll_faults_are_retried_inside_wait(provider, clean, fault) -> None:
    clean.reconfigure(faults=[FaultRule(route="generation", sequence=[fault, fault])])
    ref, result = await run(provider, ctx("B0FAULTS01", styles=["white_bg", "mockup"]))
    assert result.status == "completed" and len(result.outputs) == 2
    faulted = [r for r in clean.requests if r.path.endswith(ref.job_id) and r.fault]
    assert len(faulted) == 2
    assert charges_for(clean, ref.job_id) == [2]  # polling never re-submits


async def test_poll_retries_are_bounded(provider, clean) -> None:
    clean.reconfigure(faults=[FaultRule(route="generation", sequence=[Fault(status=503)] * 20)])
    [request] = provider.build_requests(Step.IMAGES, ctx("B0FAULTS02", styles=["white_bg", "mockup"]))
    ref = await provider.submit(Step.IMAGES, request)
    provider.settings.poll_interval_seconds = 0.005
    with pytest.raises(ServerError):
        await provider.wait(ref)


async def test_submit_faults_surface_as_retryable_types(provider, clean) -> None:
    clean.reconfigure(
        faults=[FaultRule(route="generate", sequence=[Fault(status=500), Fault(kind="malformed")])]
    )
    [request] = provider.build_requests(Step.IMAGES, ctx("B0FAULTS03"))
    with pytest.raises(ServerError):
        await provider.submit(Step.IMAGES, request)
    with pytest.raises(MalformedResponse):
        await provider.submit(Step.IMAGES, request)


async def test_wait_timeout_keeps_the_ref_valid(http, clean) -> None:
    clean.reconfigure(job_seconds_by_kind={"batch": 1.0})
    provider = ProdVisualProvider(http, make_settings(clean.public_url, max_wait_seconds=0.2))
    [request] = provider.build_requests(Step.IMAGES, ctx("B0SLOWJOB1", styles=["white_bg", "mockup"]))
    ref = await provider.submit(Step.IMAGES, request)
    with pytest.raises(WaitTimeout) as exc:
        await provider.wait(ref)
    assert ref.job_id in str(exc.value)
    patient = ProdVisualProvider(http, make_settings(clean.public_url))
    result = await patient.wait(ref)  # resumed from the same ref
    assert result.status == "completed" and len(result.outputs) == 2


async def test_batch_cadence_waits_for_the_estimate(http, clean) -> None:
    """Without an override the first batch poll comes after estimated_time_ms, not before."""
    provider = ProdVisualProvider(http, make_settings(clean.public_url, poll_interval_seconds=None))
    [request] = provider.build_requests(Step.IMAGES, ctx("B0CADENCE1", styles=["white_bg", "mockup"]))
    polls = count(clean, "generation")
    ref = await provider.submit(Step.IMAGES, request)
    result = await provider.wait(ref)
    assert result.status == "completed" and count(clean, "generation") == polls + 1


async def test_batch_first_poll_at_the_estimate_also_with_a_poll_interval(http, clean) -> None:
    """``poll_interval_seconds`` sets the interval between polls; the first still comes when the
    estimate is up, not an interval after the submission."""
    provider = ProdVisualProvider(http, make_settings(clean.public_url, poll_interval_seconds=30.0))
    [request] = provider.build_requests(Step.IMAGES, ctx("B0CADENCE2", styles=["white_bg", "mockup"]))
    polls = count(clean, "generation")
    ref = await provider.submit(Step.IMAGES, request)
    result = await asyncio.wait_for(provider.wait(ref), timeout=15)
    assert result.status == "completed" and count(clean, "generation") == polls + 1


async def test_refresh_and_expiry(provider, clean, http) -> None:
    ref, result = await run(provider, ctx("B0EXPIRE01", styles=["white_bg", "mockup"]))
    fresh = await provider.refresh(ref)
    assert fresh is not None and [o.label for o in fresh.outputs] == [o.label for o in result.outputs]
    assert (await http.get(fresh.outputs[0].url)).status_code == 200
    clean.clock.advance(8 * 86400)
    try:
        assert (await http.get(result.outputs[0].url)).status_code == 403
        with pytest.raises(OutputExpired):
            await provider.refresh(ref)
    finally:
        clean.clock.advance(-8 * 86400)


async def test_balance(provider, clean) -> None:
    assert await provider.balance() == clean.balance


def test_declared_limits_and_prices() -> None:
    limits = ProdVisualProvider.limits
    assert limits.group("api").requests == 60 and limits.group("api").per_seconds == 60
    assert (
        limits.daily_requests == 10_000 and limits.daily_counts == "requests" and limits.max_batch_size == 50
    )
    assert [(p.step, p.credits) for p in ProdVisualProvider.prices] == [(Step.IMAGES, 1)]
    assert ProdVisualProvider.sandbox_key.startswith("pv_test_")
    assert ProdVisualProvider.default_styles == ("white_bg",)
