"""Reruns never pay twice: the sandboxes' charge records are the truth."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from .helpers import (
    EXAMPLE,
    archived_files,
    duplicate_payments,
    net_charged,
    paid_submissions,
    run_flow,
    subprocess_env,
    wait_for,
)
from .test_faults import write_catalog

pytestmark = pytest.mark.usefixtures("prefect_server")


def _cli(archive: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "listingflow.cli", "run", EXAMPLE, "--archive", archive, *extra]


async def test_sigkill_while_polling_then_rerun_pays_nothing_twice(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    # Pixii jobs take long enough that the run is certainly polling when it is killed, however slow
    # the machine; the sandbox's clock is advanced past them afterwards.
    sandboxes["pixii"].reconfigure(job_seconds=120.0)
    archive = str(lf_env["archive"])
    proc = subprocess.Popen(
        _cli(archive),
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        pixii, rva = sandboxes["pixii"], sandboxes["listingrva"]

        def polling() -> bool:  # every copy submitted (they start once the images' batch is sent)
            return len(pixii.jobs) >= 3 and sum(1 for j in rva.jobs.values() if j.kind == "listing") >= 6

        await wait_for(polling, 120, "pixii jobs and every listing job to be submitted")
        await asyncio.sleep(0.2)  # the last one's answer recorded
        assert any(pixii.status_of(j) != "completed" for j in pixii.jobs.values()), "kill must land mid-poll"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_with = len(pixii.jobs)
    pixii.clock.advance(120.0)  # the killed run's jobs are done when the rerun resumes them
    pixii.reconfigure(job_seconds=0.3)

    state, summary = await run_flow(archive=archive)
    assert state.is_completed(), summary.failure_report()
    assert summary.count("complete") == 6
    assert duplicate_payments(sandboxes) == []
    # the jobs the killed run submitted were resumed, not submitted again
    assert summary.cost.total.reused_jobs >= killed_with
    for line in summary.cost.by("provider"):
        # what this run reports + what the killed run paid = each sandbox's ledger
        assert line.net <= net_charged(sandboxes)[line.provider]
    assert len([p for p in archived_files(lf_env["archive"]) if "/scale/" in str(p)]) >= 4


async def test_two_concurrent_runs_pay_each_output_once(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    archive = str(lf_env["archive"])
    logs = [lf_env["tmp"] / f"run-{n}.log" for n in range(2)]
    procs = [
        subprocess.Popen(
            _cli(archive),
            env=subprocess_env(),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for log in logs
    ]
    try:
        for p in procs:
            await asyncio.to_thread(p.wait, timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log.read_text()[-3000:]
    assert duplicate_payments(sandboxes) == []
    # one full run of the example catalog at published/sandbox prices: 6 amazon copies x 10,
    # 6 A+ Basic x 20 + 4 Scale items x 6, 7 images x 1
    assert net_charged(sandboxes) == {"listingrva": 60, "pixii": 144, "prodvisual": 7}


async def test_failed_only_rerun_touches_only_failed_products(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    sandboxes["pixii"].reconfigure(fail_asins=["B0BQRG7K5N"])
    _, first = await run_flow()
    assert {p.asin for p in first.products if p.status != "complete"} == {"B0BQRG7K5N"}
    sandboxes["pixii"].reconfigure(fail_asins=[])
    marks = {n: len(b.requests) for n, b in sandboxes.items()}
    state, second = await run_flow(rerun_failed_of=first.run_id)
    assert state.is_completed(), second.failure_report()
    assert [p.asin for p in second.products] == ["B0BQRG7K5N"]
    assert second.products[0].status == "complete"
    new_pixii = [r for r in sandboxes["pixii"].requests[marks["pixii"] :] if r.method == "POST"]
    assert len(new_pixii) == 1  # only the A+ job that failed is paid again (its first try was refunded)
    assert duplicate_payments(sandboxes) == []
    # the same works from the manifest path
    manifest = lf_env["archive"] / "runs" / first.run_id / "manifest.json"
    _, third = await run_flow(rerun_failed_of=str(manifest))
    assert [p.asin for p in third.products] == ["B0BQRG7K5N"]
    assert third.cost.total.net == 0


async def test_a_failed_batch_is_paid_for_again_when_the_rerun_groups_it_the_same_way(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    """A one-product catalog's image fails (the batch job fails, its credit refunded): the rerun's batch
    is the very same request, and must be paid for once more rather than be the failed job again."""
    fails = "B0FAILIMG1"
    catalog = write_catalog(lf_env["tmp"], [fails])
    prodvisual = sandboxes["prodvisual"]
    prodvisual.reconfigure(fail_asins=[fails])
    _, first = await run_flow(catalog=catalog)
    assert [p.status for p in first.products] == ["partial"] and net_charged(sandboxes)["prodvisual"] == 0
    prodvisual.reconfigure(fail_asins=[])

    state, second = await run_flow(catalog=catalog, rerun_failed_of=first.run_id)
    assert state.is_completed(), second.failure_report()
    assert [(p.asin, p.status) for p in second.products] == [(fails, "complete")]
    assert paid_submissions(sandboxes)["prodvisual"] == 2 and net_charged(sandboxes)["prodvisual"] == 1
    assert duplicate_payments(sandboxes) == []

    state, third = await run_flow(catalog=catalog)  # and the new image is the one kept from then on
    assert state.is_completed() and third.cost.total.net == 0
    assert paid_submissions(sandboxes)["prodvisual"] == 2


def _jobs_since(box: Any, mark: int) -> list[Any]:
    return list(box.jobs.values())[mark:]


async def test_rerun_keeps_the_failed_runs_parameters_and_an_explicit_one_overrides(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    """The failed run used the lifestyle style: its rerun, given only rerun_failed_of, asks ProdVisual
    for lifestyle again (not the default white_bg) and pays for the failed product alone."""
    fine, fails = "B0KEEPS001", "B0FAILIMG1"
    catalog = write_catalog(lf_env["tmp"], [fine, fails])
    prodvisual = sandboxes["prodvisual"]
    prodvisual.reconfigure(fail_asins=[fails])
    _, first = await run_flow(catalog=catalog, image_options={"styles": ["lifestyle"]})
    assert {p.asin: p.status for p in first.products} == {fine: "complete", fails: "partial"}
    prodvisual.reconfigure(fail_asins=[])

    jobs = {n: len(b.jobs) for n, b in sandboxes.items()}
    charges = {n: len(b.charges) for n, b in sandboxes.items()}
    state, second = await run_flow(catalog=catalog, rerun_failed_of=first.run_id)
    assert state.is_completed(), second.failure_report()
    assert [(p.asin, p.status) for p in second.products] == [(fails, "complete")]
    new_images = _jobs_since(prodvisual, jobs["prodvisual"])
    assert {item["style"] for job in new_images for item in job.payload["items"]} == {"lifestyle"}
    paid_for = {c.asin for n, b in sandboxes.items() for c in b.charges[charges[n] :] if c.kind == "charge"}
    assert paid_for == {fails}
    assert len(sandboxes["listingrva"].charges) == charges["listingrva"]  # its copy was paid by the first run
    assert duplicate_payments(sandboxes) == []
    said = next(n for n in second.notes if n.startswith(f"rerun of {first.run_id}: "))
    assert 'kept image_options.styles=["lifestyle"]' in said and "overridden: none" in said

    # an explicit style wins over the failed run's, and the rerun says so
    jobs["prodvisual"] = len(prodvisual.jobs)
    state, third = await run_flow(
        catalog=catalog, rerun_failed_of=first.run_id, image_options={"styles": ["mockup"]}
    )
    assert state.is_completed(), third.failure_report()
    new_images = _jobs_since(prodvisual, jobs["prodvisual"])
    assert {item["style"] for job in new_images for item in job.payload["items"]} == {"mockup"}
    assert {job.asin for job in new_images} == {fails}
    said = next(n for n in third.notes if n.startswith(f"rerun of {first.run_id}: "))
    assert 'overridden: image_options.styles=["mockup"]' in said


async def test_step_rerun_with_new_style_pays_only_for_that_step(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    _, first = await run_flow()
    assert first.ok
    before = net_charged(sandboxes)
    state, second = await run_flow(steps=["images"], image_options={"styles": ["lifestyle"]})
    assert state.is_completed(), second.failure_report()
    after = net_charged(sandboxes)
    assert after["pixii"] == before["pixii"] and after["listingrva"] == before["listingrva"]
    # B0D1LMN8QR's catalog row overrides the styles (white_bg + lifestyle): same request, reused
    assert after["prodvisual"] == before["prodvisual"] + 5
    assert duplicate_payments(sandboxes) == []
    assert {line.step for line in second.cost.by("step")} == {"images"}
    assert second.cost.total.reused_jobs == 1


async def test_force_regenerates_and_pays_again(sandboxes: dict[str, Any], lf_env: dict[str, Any]) -> None:
    await run_flow(steps=["copy"])
    before = paid_submissions(sandboxes)["listingrva"]
    _, forced = await run_flow(steps=["copy"], force=["copy"])
    assert paid_submissions(sandboxes)["listingrva"] == before + 6
    assert forced.cost.total.jobs == 6 and forced.cost.total.reused_jobs == 0


async def test_budget_refuses_to_start_over_estimate(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    state, summary = await run_flow(budget={"max_credits": 100})
    assert state.is_failed()
    assert summary.refused and "exceed max_credits 100" in summary.refused[0]
    assert sum(paid_submissions(sandboxes).values()) == 0


async def test_budget_stops_submitting_at_the_limit(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    # Scale prices are unpublished, so the estimate cannot refuse: the first job (6 credits) teaches
    # the price, and a second one would pass the provider's limit of 10, so it is not submitted.
    state, summary = await run_flow(steps=["scale"], budget={"per_provider": {"pixii": 10}})
    assert paid_submissions(sandboxes)["pixii"] == 1
    assert net_charged(sandboxes)["pixii"] == 6
    assert summary.cost.skipped and all(
        "budget: not submitted: 6 of pixii's max 10" in s for s in summary.cost.skipped
    )
    assert state.is_failed()


async def test_daily_cap_defers_products_and_the_next_run_picks_them_up(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    pixii = sandboxes["pixii"]
    pixii.reconfigure(daily_limit=3)
    state, first = await run_flow()
    assert state.is_completed(), first.failure_report()  # deferred is not failed: the run ends cleanly
    deferred = {p.asin for p in first.products if p.status == "deferred"}
    assert len(deferred) >= 3
    # a product is deferred at whichever Pixii step met the cap (A+, or Scale after its A+ was done)
    for product in (p for p in first.products if p.asin in deferred):
        assert any("daily cap" in (o.error or "") for o in product.steps.values()), product.failures()
    assert any("daily cap" in note for note in first.notes)
    # once the cap was hit, Pixii got no more work in that run: only submissions already on their
    # way were refused, the other deferred jobs were never sent
    # the log is in the order answers left; the cap is decided in the order requests arrived
    posts = sorted((r for r in pixii.requests if r.method == "POST"), key=lambda r: r.t)
    first_refusal = next(i for i, r in enumerate(posts) if r.status == 429)
    assert all(r.status == 429 for r in posts[first_refusal:])
    assert len(posts[first_refusal:]) < len(deferred) + 4  # 4 scale jobs were due too
    paid_before = net_charged(sandboxes)

    pixii.clock.advance(86_400)  # the next night
    pixii.reconfigure(daily_limit=500)
    state, second = await run_flow()
    assert state.is_completed(), second.failure_report()
    assert second.count("complete") == 6
    assert duplicate_payments(sandboxes) == []
    assert net_charged(sandboxes)["listingrva"] == paid_before["listingrva"]  # copy was not paid again
    assert net_charged(sandboxes)["prodvisual"] == paid_before["prodvisual"]
