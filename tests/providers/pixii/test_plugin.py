"""PixiiProvider end to end against the sandbox: submit -> wait, charges and refunds, faults,
reconciliation of lost submissions, refresh and expiry."""

from __future__ import annotations

import pytest

from providers.contract import APlusOptions, JobRef, ScaleOptions, ScaleTarget, Step, Variation
from providers.errors import (
    MalformedResponse,
    NotFound,
    ProviderConnectionError,
    ProviderTimeout,
    ServerError,
    WaitTimeout,
)
from providers.pixii.plugin import PixiiProvider
from providers.registry import load_providers
from providers.sandbox.core import Fault, FaultRule

from .conftest import FAIL_ASIN, PARTIAL_ASIN, ctx, settings_for

ALL_APLUS = APlusOptions(types=["A+ Basic", "A+ Premium", "A+ Premium Mobile"])


def charges(sandbox, job_id: str) -> list[int]:
    return [c.credits for c in sandbox.charges if c.job_id == job_id]


async def run(provider: PixiiProvider, step: Step, context) -> list:
    results = []
    for request in provider.build_requests(step, context):
        ref = await provider.submit(step, request)
        results.append(await provider.wait(ref))
    return results


async def test_listing_builder_flow(sandbox, provider, http) -> None:
    [result] = await run(provider, Step.IMAGES, ctx("B0FLOW0001"))
    assert result.status == "completed" and not result.errors
    assert [o.label for o in result.outputs] == [f"amazon_listing-{n}" for n in range(1, 6)]
    assert result.credits_charged == 15 and result.credits_refunded == 0 and result.net_credits == 15
    assert result.ref.kind == "listing_builder" and result.ref.meta["listing_type"] == "amazon_listing"
    assert result.ref.balance_after == await provider.balance()
    assert charges(sandbox, result.ref.job_id) == [15]
    png = await http.get(result.outputs[0].url)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert len({o.url for o in result.outputs}) == 5


async def test_styles_differ_and_main_images_is_smaller(sandbox, provider, http) -> None:
    c = ctx("B0FLOW0002", image_options={"styles": ["amazon_listing", "amazon_main_images"]})
    full, main = await run(provider, Step.IMAGES, c)
    assert len(main.outputs) == 2 and main.credits_charged == 6
    a, b = (await http.get(full.outputs[0].url)).content, (await http.get(main.outputs[0].url)).content
    assert a != b


async def test_aplus_flow_labels(sandbox, provider) -> None:
    [result] = await run(provider, Step.APLUS, ctx("B0FLOW0003", aplus_options=ALL_APLUS))
    labels = [o.label for o in result.outputs]
    assert labels[:4] == [
        "a-plus-basic-preview",
        "a-plus-basic-module-1",
        "a-plus-basic-module-2",
        "a-plus-basic-module-3",
    ]
    assert "a-plus-premium-module-5" in labels and "a-plus-premium-mobile-preview" in labels
    assert "a-plus-premium-mobile-module-4" in labels
    assert result.credits_charged == 70 and not result.errors
    assert (
        provider.estimate_credits(
            Step.APLUS, provider.build_requests(Step.APLUS, ctx(aplus_options=ALL_APLUS))[0]
        )
        == 70
    )


async def test_scale_flow(sandbox, provider) -> None:
    opts = ScaleOptions(
        targets=[ScaleTarget(), ScaleTarget(platform="Amazon Mobile", asset_type="Product Photo")]
    )
    c = ctx(
        "B0FLOW0004", variation=Variation(asin="B0CHILD004", attributes={"color": "Blue"}), scale_options=opts
    )
    [result] = await run(provider, Step.SCALE, c)
    assert [o.label for o in result.outputs] == ["scale-1", "scale-2"]
    assert result.credits_charged == 12 and result.ref.meta["asin"] == "B0CHILD004"
    assert sandbox.jobs[result.ref.job_id].payload["user_prompt"].startswith("Variation B0CHILD004")


async def test_failing_asin_is_refunded(sandbox, provider) -> None:
    [result] = await run(provider, Step.IMAGES, ctx(FAIL_ASIN))
    assert result.status == "failed" and result.error_code == "GENERATION_FAILED" and not result.outputs
    assert result.credits_charged == result.credits_refunded == 15 and result.net_credits == 0
    assert charges(sandbox, result.ref.job_id) == [15, -15]
    assert [c.kind for c in sandbox.charges if c.job_id == result.ref.job_id] == ["charge", "refund"]


async def test_partial_listing_failure_refunds_one_image(sandbox, provider) -> None:
    [result] = await run(provider, Step.IMAGES, ctx(PARTIAL_ASIN))
    assert result.status == "completed" and len(result.outputs) == 4
    assert [(e.label, e.code) for e in result.errors] == [("amazon_listing-5", "IMAGE_GENERATION_FAILED")]
    assert result.credits_refunded == 3 and charges(sandbox, result.ref.job_id) == [15, -3]


async def test_partial_aplus_failure_refunds_one_variant(sandbox, provider) -> None:
    [result] = await run(provider, Step.APLUS, ctx(PARTIAL_ASIN, aplus_options=ALL_APLUS))
    assert [e.label for e in result.errors] == ["a-plus-premium-mobile"]
    assert not any(o.label.startswith("a-plus-premium-mobile") for o in result.outputs)
    assert result.credits_charged == 70 and result.credits_refunded == 30
    assert charges(sandbox, result.ref.job_id) == [70, -30]


@pytest.mark.parametrize(
    "fault",
    [Fault(status=503, retry_after=0.01), Fault(kind="malformed"), Fault(kind="reset"), Fault(status=500)],
)
async def test_poll_faults_are_retried_inside_wait(sandbox, provider, fault) -> None:
    ref = await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx("B0FAULT001"))[0])
    sandbox.reconfigure(faults=[FaultRule(route="get_job", sequence=[fault, fault])])
    before = len(sandbox.requests)
    result = await provider.wait(ref)
    assert result.status == "completed" and len(result.outputs) == 5
    assert sum(1 for r in sandbox.requests[before:] if r.route == "get_job" and r.fault) == 2


async def test_persistent_poll_errors_give_up(sandbox, provider) -> None:
    ref = await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx("B0FAULT002"))[0])
    sandbox.reconfigure(
        faults=[FaultRule(route="get_job", sequence=[Fault(status=503, retry_after=0.01)] * 20)]
    )
    with pytest.raises(ServerError):
        await provider.wait(ref)


async def test_wait_timeout_keeps_ref_resumable(sandbox, make_provider) -> None:
    provider = make_provider(max_wait_seconds=0.15)
    sandbox.reconfigure(job_seconds=0.6)
    ref = await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx("B0SLOW0001"))[0])
    with pytest.raises(WaitTimeout) as info:
        await provider.wait(ref)
    assert ref.job_id in str(info.value) and info.value.retryable
    resumed = JobRef.model_validate_json(ref.model_dump_json())
    result = await make_provider().wait(resumed)
    assert result.status == "completed" and len(charges(sandbox, ref.job_id)) == 1


async def test_lost_submit_response_adopts_the_job(sandbox, provider) -> None:
    sandbox.lose_responses = 1
    request = provider.build_requests(Step.APLUS, ctx("B0LOST0001"))[0]
    ref = await provider.submit(Step.APLUS, request)
    assert ref.meta["reconciled"] is True
    [job] = [j for j in sandbox.jobs.values() if j.asin == "B0LOST0001"]
    assert ref.job_id == job.id and charges(sandbox, job.id) == [20]
    assert [r.route for r in sandbox.requests[-2:]] == ["a_plus", "list_jobs"]
    result = await provider.wait(ref)
    assert result.status == "completed" and result.outputs[0].label == "a-plus-basic-preview"


async def test_submit_error_without_job_reraises(sandbox, provider) -> None:
    first = await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx("B0LOST0002"))[0])
    sandbox.reconfigure(faults=[FaultRule(route="listing_builder", sequence=[Fault(status=503)])])
    with pytest.raises(ServerError):
        # the earlier job for the same ASIN is ours already: it must not be adopted
        await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx("B0LOST0002"))[0])
    assert sandbox.requests[-1].route == "list_jobs"
    assert [j.id for j in sandbox.jobs.values() if j.asin == "B0LOST0002"] == [first.job_id]


async def test_malformed_submit_answer_is_reconciled_then_reraised(sandbox, provider) -> None:
    sandbox.reconfigure(faults=[FaultRule(route="a_plus", sequence=[Fault(kind="malformed")])])
    with pytest.raises(MalformedResponse):
        await provider.submit(Step.APLUS, provider.build_requests(Step.APLUS, ctx("B0LOST0005"))[0])
    # looked up, and looked up again once the job had time to appear (settle_seconds)
    assert [r.route for r in sandbox.requests[-3:]] == ["a_plus", "list_jobs", "list_jobs"]


async def test_reset_after_sending_submit_is_reconciled(sandbox, provider) -> None:
    # The connection dropped mid-response: the request was sent, so Pixii may have a job; look it up.
    sandbox.reconfigure(faults=[FaultRule(route="scale", sequence=[Fault(kind="reset")])])
    c = ctx("B0LOST0003", variation=Variation(asin="B0LOST0003"))
    with pytest.raises(ProviderConnectionError) as info:
        await provider.submit(Step.SCALE, provider.build_requests(Step.SCALE, c)[0])
    assert info.value.request_sent
    assert [r.route for r in sandbox.requests[-3:]] == ["scale", "list_jobs", "list_jobs"]


async def test_connection_never_opened_reraises_without_lookup(sandbox, http) -> None:
    provider = PixiiProvider(http, settings_for("http://127.0.0.1:9"))  # nothing listens on port 9
    before = len(sandbox.requests)
    with pytest.raises(ProviderConnectionError) as info:
        await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx("B0LOST0005"))[0])
    assert not info.value.request_sent
    assert len(sandbox.requests) == before


async def test_timeout_on_submit_is_reconciled(sandbox, make_provider) -> None:
    # Pixii still holds the request when the client gives up at 0.2 s and creates the job at 1.0 s:
    # the first look finds nothing, the one after settle_seconds finds the job and adopts it.
    provider = make_provider(timeout_seconds=0.2, settle_seconds=1.5)
    sandbox.reconfigure(faults=[FaultRule(route="listing_builder", sequence=[Fault(kind="slow", delay=1.0)])])
    ref = await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx("B0LOST0004"))[0])
    assert ref.meta["reconciled"]
    assert [j.id for j in sandbox.jobs.values() if j.asin == "B0LOST0004"] == [ref.job_id]


async def test_timeout_on_submit_without_a_job_reraises(sandbox, make_provider) -> None:
    provider = make_provider(timeout_seconds=0.2)
    sandbox.reconfigure(
        faults=[FaultRule(route="listing_builder", sequence=[Fault(kind="timeout", delay=1.0)])]
    )
    with pytest.raises(ProviderTimeout):  # refused after the delay: no job, safe to resend
        await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx("B0LOST0006"))[0])
    assert not any(j.asin == "B0LOST0006" for j in sandbox.jobs.values())


async def test_refresh_and_expiry(sandbox, provider, http) -> None:
    [result] = await run(provider, Step.IMAGES, ctx("B0EXPIRE01"))
    again = await provider.refresh(result.ref)
    assert again is not None and [o.label for o in again.outputs] == [o.label for o in result.outputs]
    sandbox.clock.advance(8 * 86400)
    expired = await http.get(result.outputs[0].url)
    assert expired.status_code == 403
    with pytest.raises(NotFound):
        await provider.refresh(result.ref)


async def test_refresh_fresh_urls_within_retention(sandbox, provider, http) -> None:
    [result] = await run(provider, Step.IMAGES, ctx("B0EXPIRE02"))
    sandbox.clock.advance(3 * 86400)
    again = await provider.refresh(result.ref)
    assert again.outputs[0].url != result.outputs[0].url
    assert (await http.get(again.outputs[0].url)).status_code == 200


async def test_refresh_of_running_job_is_none(sandbox, provider) -> None:
    sandbox.reconfigure(job_seconds=5)
    ref = await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx("B0RUNNING1"))[0])
    assert await provider.refresh(ref) is None


async def test_secret_absent_from_provider_errors(sandbox, http) -> None:
    secret = "pk_live_NotTheSandboxKey123"
    provider = PixiiProvider(http, settings_for(sandbox.public_url, api_key=secret))
    assert secret not in repr(provider) and secret not in repr(provider.client)
    with pytest.raises(Exception) as info:
        await provider.submit(Step.IMAGES, provider.build_requests(Step.IMAGES, ctx())[0])
    assert secret not in str(info.value) and secret not in repr(info.value)
    unreachable = PixiiProvider(
        http, settings_for("http://127.0.0.1:9", api_key=secret, poll_interval_seconds=0.001)
    )
    with pytest.raises(ProviderConnectionError) as info2:
        await unreachable.wait(JobRef(provider="pixii", step=Step.IMAGES, job_id="j", kind="listing_builder"))
    assert secret not in str(info2.value)


def test_declarations() -> None:
    registry = load_providers(allow=["pixii"])
    assert registry.providers["pixii"] is PixiiProvider
    limits = PixiiProvider.limits
    assert limits.group("submit").requests == 10 and limits.group("submit").per_seconds == 60
    assert limits.daily_requests == 500 and limits.daily_counts == "submissions"
    prices = {(p.step, p.item): p.credits for p in PixiiProvider.prices}
    assert prices[(Step.APLUS, "A+ Premium Mobile")] == 30 and prices[(Step.IMAGES, "*")] is None
    assert prices[(Step.SCALE, "*")] is None
    assert PixiiProvider.sandbox_key.startswith("pk_test_")
    assert PixiiProvider.capabilities == {Step.IMAGES, Step.APLUS, Step.SCALE}
    assert (
        settings_for("https://api.pixii.ai").base_url == PixiiProvider.settings_class(_env_file=None).base_url
    )
