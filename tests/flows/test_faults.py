"""Provider faults end to end: the pipeline keeps going, pays nothing twice and says what failed.

Every test runs the catalog flow against the three sandboxes with injected faults, then compares
what listingflow reported with what the sandboxes recorded (requests, jobs, charges and refunds).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from providers.sandbox.core import Fault, FaultRule

from .helpers import archived_outputs, duplicate_payments, net_charged, paid_submissions, run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

MATCHA = "B0BQRG7K5N"


def write_catalog(tmp: Path, asins: list[str], variations: dict[str, str] | None = None) -> str:
    """Products whose image URLs carry their ASIN, so every sandbox can attribute jobs to them."""
    lines = ["asin,country_code,title,category,description,image_url,variations"]
    for n, asin in enumerate(asins):
        lines.append(
            f'{asin},US,Test product {n} {asin},Home,"A sturdy test product, number {n}.",'
            f'https://img.example.com/{asin}/main.jpg,"{(variations or {}).get(asin, "")}"'
        )
    path = tmp / f"catalog-{len(asins)}.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


PV_SUBMIT = ("generate", "generate_batch")  # single or (cross-product) batch: either route submits


def pv_rules(sequence: list[Fault]) -> list[FaultRule]:
    return [FaultRule(route=route, sequence=list(sequence)) for route in PV_SUBMIT]


def calls(box: Any, route: str | tuple[str, ...]) -> list[Any]:
    """Requests to one route in the order they arrived (records are kept in the order answered)."""
    routes = (route,) if isinstance(route, str) else route
    return sorted((r for r in box.requests if r.route in routes), key=lambda r: r.t)


async def settle(box: Any, route: str, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(calls(box, route)) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def assert_costs_match_ledgers(summary: Any, sandboxes: dict[str, Any]) -> None:
    """The cost summary equals each sandbox's own ledger: charges, refunds and net."""
    ledgers = {n: b.charges for n, b in sandboxes.items()}
    lines = {line.provider: line for line in summary.cost.by("provider")}
    for name, charges in ledgers.items():
        charged = sum(c.credits for c in charges if c.kind == "charge")
        refunded = -sum(c.credits for c in charges if c.kind == "refund")
        line = lines.get(name)
        assert (line.net if line else 0) == charged - refunded, (name, line, charged, refunded)
    assert summary.cost.total.net == sum(net_charged(sandboxes).values())
    assert duplicate_payments(sandboxes) == []


# ---- transient HTTP faults: retried, never paid twice ---------------------------------------------------


async def test_429_bursts_wait_for_retry_after_or_back_off(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    pixii, rva, pv = sandboxes["pixii"], sandboxes["listingrva"], sandboxes["prodvisual"]
    pixii.reconfigure(
        faults=[
            FaultRule(
                route="a_plus",
                sequence=[Fault(status=429, retry_after=0.6), Fault(status=429, retry_after=0.6)],
            )
        ]
    )
    rva.reconfigure(faults=[FaultRule(route="ai_listing", sequence=[Fault(status=429)])])  # no Retry-After
    pv.reconfigure(faults=pv_rules([Fault(status=429, retry_after=0.4)]))
    state, summary = await run_flow(products=[MATCHA], steps=["copy", "images", "aplus"])
    assert state.is_completed(), summary.failure_report()

    a_plus = calls(pixii, "a_plus")
    assert [r.status for r in a_plus] == [429, 429, 200]
    assert a_plus[1].t - a_plus[0].t >= 0.6 and a_plus[2].t - a_plus[1].t >= 0.6  # Retry-After honoured
    listing = calls(rva, "ai_listing")
    assert [r.status for r in listing] == [429, 202]
    assert listing[1].t - listing[0].t >= 2.0  # no hint: back off, not hammer
    generate = calls(pv, PV_SUBMIT)
    assert [r.status for r in generate] == [429, generate[1].status] and generate[1].status < 300, generate
    assert generate[1].t - generate[0].t >= 0.4
    assert paid_submissions(sandboxes) == {"pixii": 1, "listingrva": 1, "prodvisual": 1}
    assert_costs_match_ledgers(summary, sandboxes)


async def test_5xx_streaks_on_polls_are_ridden_out_without_resubmitting(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    pixii, rva, pv = sandboxes["pixii"], sandboxes["listingrva"], sandboxes["prodvisual"]
    streak = [Fault(status=503)] * 2 + [Fault(status=500)] * 2  # within one request's retries (5 attempts)
    pixii.reconfigure(faults=[FaultRule(route="get_job", sequence=streak)])
    rva.reconfigure(faults=[FaultRule(route="ai_job", sequence=[Fault(status=500), Fault(status=503)] * 2)])
    pv.reconfigure(faults=[FaultRule(route="generation", sequence=[Fault(status=503)] * 4)])
    state, summary = await run_flow(
        products=[MATCHA],
        steps=["copy", "images", "aplus"],
        image_options={"styles": ["white_bg", "lifestyle"]},
    )  # a batch: polled
    assert state.is_completed(), summary.failure_report()
    assert sum(1 for r in calls(pixii, "get_job") if r.fault) == 4
    assert sum(1 for r in calls(rva, "ai_job") if r.fault) == 4
    assert sum(1 for r in calls(pv, "generation") if r.fault) == 4
    assert len(calls(pixii, "a_plus")) == 1 and len(calls(rva, "ai_listing")) == 1
    assert len(calls(pv, PV_SUBMIT)) == 1
    assert_costs_match_ledgers(summary, sandboxes)


async def test_a_poll_that_keeps_failing_is_sent_max_attempts_times_not_multiplied(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One retry layer: the client sends a failing poll PIXII_HTTP_RETRY__MAX_ATTEMPTS times and the
    wait ends; nothing around it (the wait task, the plugin's loop) sends it again, nothing is resubmitted."""
    pixii = sandboxes["pixii"]
    monkeypatch.setenv("PIXII_HTTP_RETRY__MAX_ATTEMPTS", "3")
    pixii.reconfigure(faults=[FaultRule(route="get_job", sequence=[Fault(status=500)] * 50)])
    state, summary = await run_flow(products=[MATCHA], steps=["aplus"])
    assert state.is_failed()
    assert [r.fault for r in calls(pixii, "get_job")] == ["500"] * 3
    assert "injected fault" in (summary.products[0].steps["aplus"].error or "")
    assert len(calls(pixii, "a_plus")) == 1 and len(pixii.paid_jobs()) == 1


async def test_read_timeouts_are_retried_and_pixii_submissions_reconciled(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXII_TIMEOUT_SECONDS", "0.5")
    pixii = sandboxes["pixii"]
    pixii.reconfigure(
        faults=[
            FaultRule(route="a_plus", sequence=[Fault(kind="timeout", delay=1.5)]),
            FaultRule(route="get_job", sequence=[Fault(kind="timeout", delay=1.5)] * 2),
        ]
    )
    started = time.monotonic()
    state, summary = await run_flow(products=[MATCHA], steps=["aplus"])
    assert state.is_completed(), summary.failure_report()
    assert time.monotonic() - started < 30
    assert [r.fault for r in calls(pixii, "a_plus")] == ["timeout", None]
    # the submit may have reached Pixii: listingflow looked for the job before sending again
    timed_out_at = calls(pixii, "a_plus")[0].t
    assert any(r.t > timed_out_at for r in calls(pixii, "list_jobs"))
    assert paid_submissions(sandboxes)["pixii"] == 1
    assert_costs_match_ledgers(summary, sandboxes)


async def test_pixii_lost_response_is_adopted_not_paid_again(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    """Pixii accepted (and charged) the job but the answer was lost: the job is found and adopted."""
    pixii = sandboxes["pixii"]
    pixii.lose_responses = 1
    state, summary = await run_flow(products=[MATCHA], steps=["aplus"])
    assert state.is_completed(), summary.failure_report()
    assert [r.status for r in calls(pixii, "a_plus")] == [500]
    assert list(summary.products[0].steps["aplus"].jobs) == [j.id for j in pixii.paid_jobs()]
    assert_costs_match_ledgers(summary, sandboxes)


async def test_pixii_lost_response_with_a_failing_lookup_is_never_paid_twice(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    pixii = sandboxes["pixii"]
    pixii.lose_responses = 1
    pixii.reconfigure(faults=[FaultRule(route="list_jobs", sequence=[Fault(status=503)])])
    await run_flow(products=[MATCHA], steps=["aplus"])
    assert len(pixii.paid_jobs()) == 1, [j.id for j in pixii.paid_jobs()]
    assert duplicate_payments(sandboxes) == []


async def test_listingrva_submit_timeout_is_resent_only_after_the_balance_shows_no_debit(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ListingRVA has no idempotency and no way to list jobs: a timed-out submit may have been debited.
    Here the provider never processed it (the timeout came first): its balance shows no debit, so it is
    sent again, once. (Processed-then-lost: tests/flows/test_ambiguous.py.)"""
    monkeypatch.setenv("LISTINGRVA_TIMEOUT_SECONDS", "0.5")
    rva = sandboxes["listingrva"]
    rva.reconfigure(faults=[FaultRule(route="ai_listing", sequence=[Fault(kind="timeout", delay=1.5)])])
    state, summary = await run_flow(products=[MATCHA], steps=["copy"])
    assert state.is_completed(), summary.failure_report()
    await settle(rva, "ai_listing", 2)  # the sandbox logs the request once its stalled answer is sent
    listing = calls(rva, "ai_listing")
    assert [r.fault for r in listing] == ["timeout", None]
    balance_reads = [r.t for r in calls(rva, "credits")]
    assert any(listing[0].t < t < listing[1].t for t in balance_reads)
    assert paid_submissions({"listingrva": rva}) == {"listingrva": 1}
    assert_costs_match_ledgers(summary, {"listingrva": rva})


async def test_connection_resets_are_retried(sandboxes: dict[str, Any], lf_env: dict[str, Any]) -> None:
    pixii, rva, pv = sandboxes["pixii"], sandboxes["listingrva"], sandboxes["prodvisual"]
    pixii.reconfigure(
        faults=[
            FaultRule(route="a_plus", sequence=[Fault(kind="reset")]),
            FaultRule(route="get_job", sequence=[Fault(kind="reset")] * 2),
        ]
    )
    rva.reconfigure(
        faults=[
            FaultRule(route="products_list", sequence=[Fault(kind="reset")]),
            FaultRule(route="ai_job", sequence=[Fault(kind="reset")]),
        ]
    )
    pv.reconfigure(faults=pv_rules([Fault(kind="reset")]))
    state, summary = await run_flow(products=[MATCHA], steps=["copy", "images", "aplus"])
    assert state.is_completed(), summary.failure_report()
    for box, route, n in (
        (pixii, "a_plus", 1),
        (pixii, "get_job", 2),
        (rva, "products_list", 1),
        (rva, "ai_job", 1),
        (pv, PV_SUBMIT, 1),
    ):
        assert sum(1 for r in calls(box, route) if r.fault == "reset") == n, route
    assert paid_submissions(sandboxes) == {"pixii": 1, "listingrva": 1, "prodvisual": 1}
    assert len(sandboxes["listingrva"].products) == 1  # prepare() did not create a duplicate record
    assert_costs_match_ledgers(summary, sandboxes)


async def test_malformed_json_is_retried(sandboxes: dict[str, Any], lf_env: dict[str, Any]) -> None:
    pixii, rva, pv = sandboxes["pixii"], sandboxes["listingrva"], sandboxes["prodvisual"]
    pixii.reconfigure(
        faults=[
            FaultRule(route="a_plus", sequence=[Fault(kind="malformed")]),
            FaultRule(route="get_job", sequence=[Fault(kind="malformed")] * 2),
        ]
    )
    rva.reconfigure(faults=[FaultRule(route="ai_job", sequence=[Fault(kind="malformed")])])
    pv.reconfigure(faults=[FaultRule(route="generation", sequence=[Fault(kind="malformed")])])
    state, summary = await run_flow(
        products=[MATCHA],
        steps=["copy", "images", "aplus"],
        image_options={"styles": ["white_bg", "lifestyle"]},
    )
    assert state.is_completed(), summary.failure_report()
    for box, route in ((pixii, "a_plus"), (pixii, "get_job"), (rva, "ai_job"), (pv, "generation")):
        assert any(r.fault == "malformed" for r in calls(box, route)), route
    assert paid_submissions(sandboxes) == {"pixii": 1, "listingrva": 1, "prodvisual": 1}
    assert_costs_match_ledgers(summary, sandboxes)


# ---- jobs that never finish, fail, or partly fail ---------------------------------------------------------


async def test_job_stuck_in_processing_times_out_clearly_and_the_rerun_resumes_it(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pixii = sandboxes["pixii"]
    monkeypatch.setenv("PIXII_MAX_WAIT_SECONDS", "1.5")
    pixii.reconfigure(job_seconds_by_kind={"a_plus": 3600}, start_delay_fraction=0.0)
    started = time.monotonic()
    state, first = await run_flow(products=[MATCHA], steps=["aplus"])
    assert time.monotonic() - started < 60, "a stuck job must not hang the run"
    assert state.is_failed()
    [job] = pixii.jobs.values()
    aplus = first.products[0].steps["aplus"]
    assert aplus.status == "failed"
    assert job.id in (aplus.error or "") and "still processing after 1.5s" in (aplus.error or "")
    assert "resume" in (aplus.error or "")

    # next run, the job has finished: the same job is picked up, nothing is paid again
    monkeypatch.setenv("PIXII_MAX_WAIT_SECONDS", "20")
    pixii.reconfigure(job_seconds_by_kind={})
    pixii.clock.advance(3600)
    state, second = await run_flow(products=[MATCHA], steps=["aplus"])
    assert state.is_completed(), second.failure_report()
    assert list(second.products[0].steps["aplus"].jobs) == [job.id]
    assert len(calls(pixii, "a_plus")) == 1 and len(pixii.paid_jobs()) == 1
    assert second.cost.total.net == 0
    archived = lf_env["archive"] / "US" / MATCHA / "aplus"
    assert {json.loads(p.read_text())["source-job-id"] for p in archived.glob("*.meta.json")} == {job.id}


async def test_max_wait_bounds_the_wait_and_the_stuck_jobs_charge_is_reported(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pixii = sandboxes["pixii"]
    monkeypatch.setenv("PIXII_MAX_WAIT_SECONDS", "1.5")
    pixii.reconfigure(job_seconds_by_kind={"a_plus": 3600}, start_delay_fraction=0.0)
    state, first = await run_flow(products=[MATCHA], steps=["aplus"])
    assert state.is_failed()
    polls = calls(pixii, "get_job")
    assert polls[-1].t - polls[0].t <= 1.5 + 1.0, "waited past the configured maximum"
    # the job was charged at submission: this run's cost summary says so
    pixii_line = next((line for line in first.cost.by("provider") if line.provider == "pixii"), None)
    assert pixii_line is not None and pixii_line.charged == pixii.net_credits() == 20


async def test_failed_jobs_are_reported_refunded_and_do_not_stop_other_products(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    copy_fails, images_fail, fine = "B0FAILCOPY", "B0FAILIMGS", "B0FINE0001"
    sandboxes["listingrva"].reconfigure(fail_asins=[copy_fails])
    sandboxes["prodvisual"].reconfigure(fail_asins=[images_fail])
    catalog = write_catalog(lf_env["tmp"], [copy_fails, images_fail, fine])
    state, summary = await run_flow(catalog=catalog, steps=["copy", "images", "aplus"])
    assert state.is_failed()
    by = {p.asin: p for p in summary.products}
    assert by[copy_fails].status == "partial"
    assert by[copy_fails].steps["copy"].status == "failed" and "failed" in (
        by[copy_fails].steps["copy"].error or ""
    )
    # ProdVisual's images do not read the copy: they still run; A+ reads it: not run, nothing paid for it
    assert by[copy_fails].steps["images"].status == "done"
    assert by[copy_fails].steps["aplus"].status == "skipped"
    assert not [j for j in sandboxes["pixii"].jobs.values() if j.asin == copy_fails]
    assert by[images_fail].status == "partial" and by[images_fail].steps["images"].status == "failed"
    assert by[images_fail].steps["aplus"].status == "skipped"  # A+ reads the image
    assert by[fine].status == "complete"
    report = "\n".join(summary.failure_report())
    assert f"US/{copy_fails} copy:" in report and f"US/{images_fail} images:" in report
    rva = next(line for line in summary.cost.by("provider") if line.provider == "listingrva")
    assert rva.refunded > 0
    assert_costs_match_ledgers(summary, sandboxes)


async def test_partial_failures_are_listed_and_their_refunds_reported(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    asin = "B0PARTIAL1"
    for name in ("pixii", "prodvisual"):
        sandboxes[name].reconfigure(partial_fail_asins=[asin])
    catalog = write_catalog(lf_env["tmp"], [asin])
    state, summary = await run_flow(
        catalog=catalog,
        steps=["images", "aplus"],
        image_options={"styles": ["white_bg", "lifestyle"]},
        aplus_options={"types": ["A+ Basic", "A+ Premium"]},
    )
    product = summary.products[0]
    assert product.status == "partial", product
    assert state.is_failed()
    assert any("a-plus-premium" in e for e in product.steps["aplus"].item_errors)
    assert product.steps["images"].item_errors
    # what did succeed is archived
    assert any(
        o["label"].startswith("a-plus-basic")
        for o in archived_outputs(lf_env["archive"], product.manifest_key, "aplus")
    )
    assert product.steps["images"].output_count
    refunds = {n: -sum(c.credits for c in b.charges if c.kind == "refund") for n, b in sandboxes.items()}
    assert refunds["pixii"] == 20 and refunds["prodvisual"] == 1
    lines = {line.provider: line for line in summary.cost.by("provider")}
    assert (
        lines["pixii"].refunded == refunds["pixii"] and lines["prodvisual"].refunded == refunds["prodvisual"]
    )
    assert summary.cost.total.refunded == sum(refunds.values()) > 0
    assert_costs_match_ledgers(summary, sandboxes)


async def test_partial_failures_are_named_in_the_run_report(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    asin = "B0PARTIAL2"
    sandboxes["pixii"].reconfigure(partial_fail_asins=[asin])
    catalog = write_catalog(lf_env["tmp"], [asin])
    state, summary = await run_flow(
        catalog=catalog, steps=["aplus"], aplus_options={"types": ["A+ Basic", "A+ Premium"]}
    )
    assert state.is_failed()
    assert any(f"US/{asin} aplus" in line and "a-plus-premium" in line for line in summary.failure_report())
    assert asin in (state.message or "")


# ---- outputs whose URLs expired --------------------------------------------------------------------------


async def _finish_then_expire(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], advance: float, **params: Any
) -> tuple[Any, Any, Path, dict[str, list[Any]]]:
    """Run once; let every signed URL expire; run again into a fresh archive, so the finished jobs
    (reused, not paid again) must be downloaded from the URLs the first run saw."""
    state, first = await run_flow(products=[MATCHA], **params)
    assert state.is_completed(), first.failure_report()
    seen = {n: len(b.requests) for n, b in sandboxes.items()}
    for box in sandboxes.values():
        box.clock.advance(advance)
    fresh = lf_env["tmp"] / "second-archive"
    state, second = await run_flow(products=[MATCHA], archive=str(fresh), **params)
    later = {n: sorted(b.requests, key=lambda r: r.t)[seen[n] :] for n, b in sandboxes.items()}
    return state, second, fresh, later


async def test_expired_output_urls_are_fetched_again_from_the_provider(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    """Pixii jobs and ListingRVA jobs can be read again: fresh signed URLs, nothing paid again."""
    for box in sandboxes.values():
        box.reconfigure(url_ttl_seconds=60)
    params = {"steps": ["copy", "images", "aplus"], "providers": {"images": "listingrva"}}
    state, second, fresh, later = await _finish_then_expire(sandboxes, lf_env, 120, **params)
    assert state.is_completed(), second.failure_report()
    assert paid_submissions(sandboxes) == {"pixii": 1, "listingrva": 2, "prodvisual": 0}  # one run's worth
    assert second.cost.total.net == 0
    # the second run read the finished jobs again (its wait results were cached: only a refresh reads),
    # after pre-flight's free authenticated request
    assert [r.route for r in later["pixii"]] == ["list_jobs", "get_job"]
    assert [r.route for r in later["listingrva"] if r.route == "ai_job"] == ["ai_job"]
    pngs = sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*.png"))
    assert pngs == sorted(str(p.relative_to(lf_env["archive"])) for p in lf_env["archive"].rglob("*.png"))
    assert any("/aplus/" in p for p in pngs) and any("/images/listingrva-" in p for p in pngs)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in fresh.rglob("*.png"))


async def test_prodvisual_output_gone_for_good_is_reported_clearly(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    """ProdVisual generations expire with their URLs: the output is reported lost, never re-bought."""
    sandboxes["prodvisual"].reconfigure(url_ttl_seconds=60)
    state, second, _, _ = await _finish_then_expire(sandboxes, lf_env, 120, steps=["images"])
    assert state.is_failed()
    [job] = sandboxes["prodvisual"].jobs.values()
    error = second.products[0].steps["images"].error or ""
    assert job.id in error and "no longer readable" in error and "expire" in error, error
    assert len(sandboxes["prodvisual"].paid_jobs()) == 1


async def test_pixii_output_past_retention_is_reported_clearly(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    state, second, _, _ = await _finish_then_expire(sandboxes, lf_env, 8 * 24 * 3600, steps=["aplus"])
    assert state.is_failed()
    [job] = sandboxes["pixii"].jobs.values()
    error = second.products[0].steps["aplus"].error or ""
    assert job.id in error and "expired" in error, error
    assert len(sandboxes["pixii"].paid_jobs()) == 1


# ---- credits run out mid-run ------------------------------------------------------------------------------


def _limit_pixii_submissions(monkeypatch: pytest.MonkeyPatch, requests: int, seconds: float) -> None:
    from flows.settings import reset_settings

    limits = json.loads(os.environ["LISTINGFLOW_RATE_LIMITS"])
    limits["pixii"]["submit"] = {"requests": requests, "per_seconds": seconds}
    monkeypatch.setenv("LISTINGFLOW_RATE_LIMITS", json.dumps(limits))
    reset_settings()


async def test_insufficient_credits_stop_that_provider_and_the_rest_finishes(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pixii = sandboxes["pixii"]
    asins = ["B0CRED0001", "B0CRED0002", "B0CRED0003", "B0CRED0004"]
    catalog = write_catalog(
        lf_env["tmp"], asins, variations={a: f"B0CRVAR{n:03d}:color=Red" for n, a in enumerate(asins)}
    )
    pixii.balance = 40  # two A+ Basic jobs (20 each), then nothing
    # Pixii takes 2 submissions a second here: its 8 (4 A+, 4 Scale) go in 4 waves, and whatever the
    # order the 5th is refused at the latest (4 Scale + 1 A+ = 44 credits), so the last wave comes after
    # a refusal and must be refused here, never sent. With all 8 at once (the tests' usual limit),
    # every one could be on the wire before the first refusal came back.
    _limit_pixii_submissions(monkeypatch, 2, 1.0)
    state, summary = await run_flow(catalog=catalog, steps=["copy", "images", "aplus", "scale"])
    assert state.is_failed()
    refused = [r for r in pixii.requests if r.status == 402]
    assert refused
    # once Pixii refused, nothing more was submitted to it (beyond submissions already on the wire)
    first_refusal = min(r.t for r in refused)
    later = [r for r in pixii.requests if r.method == "POST" and r.t > first_refusal + 0.5]
    assert later == [], later
    assert 0 < sum(j.charged for j in pixii.paid_jobs()) <= 40  # A+ and Scale run side by side now
    # the other providers finished every product
    for p in summary.products:
        assert p.steps["copy"].status == "done" and p.steps["images"].status == "done", p
    # and the run says why Pixii work was not done
    assert any("out of credits" in n for n in summary.notes), summary.notes
    blocked = [
        p for p in summary.products if p.steps["aplus"].status != "done" or p.steps["scale"].status != "done"
    ]
    assert blocked and all("credits" in "; ".join(p.failures()).lower() for p in blocked)
    assert any("pixii is out of credits" in f for p in blocked for f in p.failures())  # refused locally
    assert summary.cost.skipped
    assert_costs_match_ledgers(summary, sandboxes)
