"""The plugin end to end against the sandbox: prepare, build, estimate, submit, wait, refresh."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from providers.contract import CopyOptions, ImageOptions, JobRef, Step, StepContext
from providers.errors import PermanentError, RateLimited, RetryableError, WaitTimeout, resend_is_safe
from providers.listingrva.models import ImageRequest, ListingRequest
from providers.listingrva.plugin import ListingRVAProvider
from providers.listingrva.sandbox import ListingRVASandbox
from providers.sandbox.core import Fault, FaultRule

from ..conftest import PollClock
from .conftest import make_settings, product


async def run(provider: ListingRVAProvider, step: Step, ctx: StepContext):
    results = []
    for req in provider.build_requests(step, ctx):
        ref = await provider.submit(step, req)
        ref = JobRef.model_validate_json(ref.model_dump_json())  # refs survive serialization
        results.append(await provider.wait(ref))
    return results


async def test_prepare_creates_once_and_reuses(
    provider: ListingRVAProvider, sandbox: ListingRVASandbox, http: httpx.AsyncClient
) -> None:
    p = product("B0PREP0001", title="Prepared Kettle")
    first = await provider.prepare(p)
    assert await provider.prepare(p) == first
    fresh = ListingRVAProvider(http, make_settings(sandbox))  # no cache: finds it by paging
    assert await fresh.prepare(p) == first
    matches = [x for x in sandbox.products.values() if x["title"] == "Prepared Kettle"]
    assert [m["id"] for m in matches] == [first["product_id"]]
    assert matches[0]["category"] == "Food & Beverage" and matches[0]["imageUrl"].endswith("B0PREP0001.jpg")
    other = await provider.prepare(product("B0PREP0002", title="Prepared Kettle", category="Kitchen"))
    assert other != first  # same title, other category -> its own record


async def test_prepare_pages_and_is_concurrency_safe(
    sandbox: ListingRVASandbox, http: httpx.AsyncClient
) -> None:
    for i in range(130):  # push the target past the first page of 100
        sandbox.products[f"prod_filler{i}"] = {
            "id": f"prod_filler{i}",
            "title": f"Filler {i}",
            "category": None,
            "images": [],
            "created_at": "2026-01-01T00:00:00Z",
        }
    p = product("B0PAGE0001", title="Late Product")
    provider = ListingRVAProvider(http, make_settings(sandbox))
    ids = await asyncio.gather(*(provider.prepare(p) for _ in range(5)))
    assert len({i["product_id"] for i in ids}) == 1
    again = await ListingRVAProvider(http, make_settings(sandbox)).prepare(p)
    assert again == ids[0]
    assert sum(x["title"] == "Late Product" for x in sandbox.products.values()) == 1


async def test_prepare_reads_the_workspace_once_per_run_not_once_per_product(
    sandbox: ListingRVASandbox, http: httpx.AsyncClient
) -> None:
    for i in range(250):  # an existing workspace: three pages of 100
        sandbox.products[f"prod_old{i}"] = {
            "id": f"prod_old{i}",
            "title": f"Old {i}",
            "category": None,
            "images": [],
            "created_at": "2026-01-01T00:00:00Z",
        }
    provider = ListingRVAProvider(http, make_settings(sandbox))
    start, pages = len(sandbox.requests), -(-len(sandbox.products) // 100)
    new = [product(f"B0NEW{i:05d}", title=f"New {i}") for i in range(60)]
    ids = await asyncio.gather(*(provider.prepare(p) for p in [*new, *new]))
    reused = await provider.prepare(product("B0OLD00007", title="Old 7", category=""))
    lists = [r for r in sandbox.requests[start:] if r.route == "products_list"]
    assert (
        pages >= 3 and len(lists) == pages
    )  # one pass over the workspace, however many products are prepared
    assert reused == {"product_id": "prod_old7"}
    assert len({i["product_id"] for i in ids}) == 60  # each new product created once
    assert sum(x["title"].startswith("New ") for x in sandbox.products.values()) == 60


@pytest.mark.parametrize(
    ("step", "ctx_kw", "credits"),
    [
        (Step.IMAGES, {"style": "LIFESTYLE_CONTEXTUAL", "image_options": ImageOptions(size=1500)}, 9),
        (
            Step.IMAGES,
            {"style": "MODEL_STUDIO", "image_options": ImageOptions(platform="shopify", size=1200)},
            8,
        ),
        (
            Step.IMAGES,
            {"style": "CLEAN_WHITE_BG", "image_options": ImageOptions(platform="general", size=1000)},
            4,
        ),
        (
            Step.IMAGES,
            {"style": "PACKAGING_DISPLAY", "image_options": ImageOptions(platform="etsy", size=2000)},
            11,
        ),
        (Step.COPY, {"copy_options": CopyOptions(platform="amazon")}, 10),
        (Step.COPY, {"copy_options": CopyOptions(platform="flipkart")}, 9),
        (Step.COPY, {"copy_options": CopyOptions(platform="woocommerce")}, 8),
        (Step.COPY, {"copy_options": CopyOptions(platform="general")}, 6),
    ],
)
async def test_estimate_equals_sandbox_charge(
    provider: ListingRVAProvider, sandbox: ListingRVASandbox, step: Step, ctx_kw: dict, credits: int
) -> None:
    p = product("B0COST0001", title="Cost Probe")
    ctx = StepContext(product=p, prepared=await provider.prepare(p), **ctx_kw)
    [req] = provider.build_requests(step, ctx)
    assert provider.estimate_credits(step, req) == credits
    ref = await provider.submit(step, req)
    assert ref.credits_at_submit == credits == ref.meta["credit_cost"]
    assert [c.credits for c in sandbox.charges if c.job_id == ref.job_id] == [credits]


def test_prices_declared() -> None:
    prices = {(p.step, p.item): p.credits for p in ListingRVAProvider.prices}
    assert len(prices) == 16 + 7 and all(v for v in prices.values())
    assert prices[(Step.IMAGES, "MODEL_LIFESTYLE_INFOGRAPHIC")] == 8 and prices[(Step.COPY, "general")] == 6


async def test_copy_then_images(
    provider: ListingRVAProvider, sandbox: ListingRVASandbox, http: httpx.AsyncClient
) -> None:
    pngs, titles = [], []
    for asin, title in (("B0FLOW0001", "Cast Iron Skillet"), ("B0FLOW0002", "Silk Pillowcase")):
        p = product(asin, title=title, category="Home")
        prepared = await provider.prepare(p)
        options = CopyOptions(seed_keywords=["gift"], platform="amazon")
        [copy] = await run(
            provider, Step.COPY, StepContext(product=p, prepared=prepared, copy_options=options)
        )
        assert copy.status == "completed" and copy.credits_charged == 10 and copy.net_credits == 10
        assert title in copy.copy_result.title and "gift" in copy.copy_result.keywords
        titles.append(copy.copy_result.title)
        ctx = StepContext(
            product=p,
            prepared=prepared,
            copy_result=copy.copy_result,
            image_options=ImageOptions(styles=["CLEAN_WHITE_BG", "BEFORE_AFTER"]),
        )
        images = await run(provider, Step.IMAGES, ctx)
        assert [r.outputs[0].label for r in images] == ["clean_white_bg-1", "before_after-1"]
        assert all(r.credits_charged == r.net_credits == r.ref.credits_at_submit for r in images)
        out = images[0].outputs[0]
        assert out.expires_at and out.expires_at > time.time()
        job = sandbox.jobs[images[0].ref.job_id]
        assert job.asin == asin  # found in the product's image URL
        png = await http.get(out.url)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        pngs.append(png.content)
    assert pngs[0] != pngs[1] and titles[0] != titles[1]


async def test_failing_asin_is_refunded(provider: ListingRVAProvider, sandbox: ListingRVASandbox) -> None:
    p = product("B0FAIL0001", title="Doomed Lamp")
    sandbox.reconfigure(fail_asins=["B0FAIL0001"])
    try:
        ctx = StepContext(product=p, prepared=await provider.prepare(p))
        [result] = await run(provider, Step.IMAGES, ctx)
    finally:
        sandbox.reconfigure(fail_asins=[])
    assert result.status == "failed" and result.error_code == "generation_failed" and result.error_message
    assert result.credits_charged == result.credits_refunded == 4 + 3 and result.net_credits == 0
    charges = [(c.kind, c.credits, c.asin) for c in sandbox.charges if c.job_id == result.ref.job_id]
    assert charges == [("charge", 7, "B0FAIL0001"), ("refund", -7, "B0FAIL0001")]


async def test_partial_failure_refunds_one_item(
    provider: ListingRVAProvider, sandbox: ListingRVASandbox
) -> None:
    p = product("B0PART0001", title="Half Lucky Vase")
    sandbox.reconfigure(partial_fail_asins=["B0PART0001"])
    try:
        ctx = StepContext(
            product=p,
            prepared=await provider.prepare(p),
            image_options=ImageOptions(styles=["CLEAN_WHITE_BG", "MODEL_STUDIO"]),
        )
        results = await run(provider, Step.IMAGES, ctx)
    finally:
        sandbox.reconfigure(partial_fail_asins=[])
    assert [r.status for r in results] == ["failed", "completed"]
    assert [r.net_credits for r in results] == [0, 7 + 3]
    refunds = [c for c in sandbox.charges if c.kind == "refund" and c.asin == "B0PART0001"]
    assert [(c.job_id, c.credits) for c in refunds] == [(results[0].ref.job_id, -7)]


@pytest.mark.parametrize(
    "faults",
    [
        [Fault(status=503)],
        [Fault(kind="malformed")],
        [Fault(kind="reset")],
        [Fault(status=500), Fault(status=429, retry_after=0.05), Fault(status=502)],
    ],
)
async def test_poll_faults_are_retried(
    provider: ListingRVAProvider, sandbox: ListingRVASandbox, faults: list[Fault]
) -> None:
    p = product("B0FAULT001", title="Flaky Poll Plant")
    [req] = provider.build_requests(Step.COPY, StepContext(product=p, prepared=await provider.prepare(p)))
    ref = await provider.submit(Step.COPY, req)
    start = len(sandbox.requests)
    sandbox.reconfigure(faults=[FaultRule(route="ai_job", sequence=faults)])
    try:
        result = await provider.wait(ref)
    finally:
        sandbox.reconfigure(faults=[])
    assert result.status == "completed" and result.copy_result.title
    polls = [r for r in sandbox.requests[start:] if r.route == "ai_job"]
    assert [r.fault for r in polls[: len(faults)]] == [
        f.kind if f.kind != "status" else str(f.status) for f in faults
    ]
    assert polls[-1].status == 200


async def test_persistent_poll_errors_surface(
    provider: ListingRVAProvider, sandbox: ListingRVASandbox
) -> None:
    p = product("B0FAULT002", title="Very Flaky Plant")
    [req] = provider.build_requests(Step.COPY, StepContext(product=p, prepared=await provider.prepare(p)))
    ref = await provider.submit(Step.COPY, req)
    sandbox.reconfigure(
        faults=[FaultRule(route="ai_job", sequence=[Fault(status=429, retry_after=0.01)] * 10)]
    )
    try:
        with pytest.raises(RateLimited):
            await provider.wait(ref)
    finally:
        sandbox.reconfigure(faults=[])


async def test_submit_failures_are_passed_to_the_host_as_they_are(
    provider: ListingRVAProvider, sandbox: ListingRVASandbox
) -> None:
    """The plugin does not decide whether a failed paid POST may be resent: the host does, from the
    error (``resend_is_safe``) and the balance (flows/submission.py). Only a 429 is safe by itself."""
    p = product("B0SUBMIT01", title="Ambiguous Submit Cup")
    [req] = provider.build_requests(Step.COPY, StepContext(product=p, prepared=await provider.prepare(p)))
    sandbox.reconfigure(
        faults=[
            FaultRule(route="ai_listing", sequence=[Fault(status=500), Fault(status=429), Fault(status=503)])
        ]
    )
    try:
        with pytest.raises(RetryableError) as info:
            await provider.submit(Step.COPY, req)
        assert info.value.status == 500 and not resend_is_safe(info.value)
        with pytest.raises(RateLimited) as limited:  # a 429 was rejected before enqueue: safe to retry
            await provider.submit(Step.COPY, req)
        assert resend_is_safe(limited.value)
        with pytest.raises(RetryableError) as unavailable:  # a 503 may come after the job was enqueued
            await provider.submit(Step.COPY, req)
        assert unavailable.value.status == 503 and not resend_is_safe(unavailable.value)
    finally:
        sandbox.reconfigure(faults=[])


async def test_submit_rejects_mismatched_request(provider: ListingRVAProvider) -> None:
    with pytest.raises(PermanentError):
        await provider.submit(Step.COPY, ImageRequest(productId="p", style="CLEAN_WHITE_BG"))
    with pytest.raises(PermanentError):
        await provider.submit(Step.IMAGES, ListingRequest(productId="p"))


async def test_wait_timeout_then_refresh(sandbox: ListingRVASandbox, http: httpx.AsyncClient) -> None:
    provider = ListingRVAProvider(http, make_settings(sandbox, max_wait_seconds=0.15))
    p = product("B0SLOW0001", title="Slow Sculpture")
    [req] = provider.build_requests(Step.IMAGES, StepContext(product=p, prepared=await provider.prepare(p)))
    sandbox.reconfigure(job_seconds_by_kind={"image": 0.6})
    try:
        ref = await provider.submit(Step.IMAGES, req)
    finally:
        sandbox.reconfigure(job_seconds_by_kind={})
    with pytest.raises(WaitTimeout) as info:
        await provider.wait(ref)
    assert info.value.retryable
    assert await provider.refresh(ref) is None
    await asyncio.sleep(0.6)
    done = await provider.refresh(ref)
    assert done is not None and done.status == "completed" and done.outputs[0].label == "clean_white_bg-1"


async def test_expired_url_and_refresh(
    provider: ListingRVAProvider, sandbox: ListingRVASandbox, http: httpx.AsyncClient
) -> None:
    p = product("B0EXPIRE01", title="Expiring Poster")
    [result] = await run(provider, Step.IMAGES, StepContext(product=p, prepared=await provider.prepare(p)))
    old = result.outputs[0].url
    assert (await http.get(old)).status_code == 200
    sandbox.clock.advance(8 * 86400)
    assert (await http.get(old)).status_code == 403
    fresh = await provider.refresh(result.ref)
    assert fresh.outputs[0].url != old and (await http.get(fresh.outputs[0].url)).status_code == 200
    assert fresh.outputs[0].label == result.outputs[0].label


async def test_balance(provider: ListingRVAProvider, sandbox: ListingRVASandbox) -> None:
    assert await provider.balance() == sandbox.balance


async def test_resumed_wait_polls_at_once(provider: ListingRVAProvider, sandbox: ListingRVASandbox) -> None:
    p = product("B0RESUME01", title="Resumed Rug")
    [req] = provider.build_requests(Step.COPY, StepContext(product=p, prepared=await provider.prepare(p)))
    ref = await provider.submit(Step.COPY, req)
    await asyncio.sleep(0.3)
    start = len(sandbox.requests)
    assert (await provider.wait(ref)).status == "completed"
    assert len([r for r in sandbox.requests[start:] if r.route == "ai_job"]) == 1


async def test_default_cadence(
    sandbox: ListingRVASandbox,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    poll_clock: PollClock,
) -> None:
    """Without an override: first poll at the low end of the typical duration (20 s), then back off
    5 s, 10 s, 15 s: polls share the submissions' 30/min bucket."""
    provider = ListingRVAProvider(
        http, make_settings(sandbox, poll_interval_seconds=None, max_wait_seconds=300)
    )
    statuses = iter(["queued", "processing", "processing", "processing", "processing", "completed"])

    async def fake_get_job(job_id: str):
        from providers.listingrva.models import JobStatus

        return JobStatus(id=job_id, status=next(statuses), result={"title": "T"})

    monkeypatch.setattr(provider.client, "get_job", fake_get_job)
    ref = JobRef(
        provider="listingrva",
        step=Step.COPY,
        job_id="job_x",
        kind="listing",
        credits_at_submit=6,
        submitted_at=poll_clock.now,
    )
    result = await provider.wait(ref)
    assert result.copy_result.title == "T" and poll_clock.slept == [20.0, 5.0, 10.0, 15.0, 15.0, 15.0]
