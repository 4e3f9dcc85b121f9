"""Ambiguous paid submissions: the provider processed (and billed) the request, then the answer was lost.

The sandboxes' ``after`` faults do the work first and then replace the response with a 5xx, a timeout,
a dropped connection or a malformed body. Whatever the kind, the sandbox ledger must show one charge:
the submission is resolved (Pixii: by looking the job up; ListingRVA and ProdVisual: by their balance)
or held as *outcome unknown*, and never resent, in this run or the next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.held import HeldStore
from flows.settings import get_settings
from providers.sandbox.core import Fault, FaultRule

from .helpers import duplicate_payments, paid_submissions, run_flow, wait_for
from .test_faults import PV_SUBMIT, settle, write_catalog

pytestmark = pytest.mark.usefixtures("prefect_server")

AFTER = {
    "503": Fault(status=503, after=True),
    "502": Fault(status=502, after=True),
    "timeout": Fault(kind="timeout", delay=1.5, after=True),
    "reset": Fault(kind="reset", after=True),
    "malformed": Fault(kind="malformed", after=True),
}
# where each provider submits the step these tests run, and the step
SUBMITS = {"listingrva": (("ai_listing",), "copy"), "prodvisual": (PV_SUBMIT, "images")}


def lose_next_submit(box: Any, routes: tuple[str, ...], fault: Fault) -> None:
    box.reconfigure(faults=[FaultRule(route=r, sequence=[fault]) for r in routes])


def submits(box: Any, routes: tuple[str, ...]) -> int:
    return sum(1 for r in box.requests if r.route in routes)


def step_outcome(summary: Any, step: str) -> Any:
    [product] = summary.products
    return product.steps[step]


@pytest.mark.parametrize("provider", sorted(SUBMITS))
@pytest.mark.parametrize("kind", sorted(AFTER))
async def test_processed_then_lost_is_charged_once_and_never_resent(
    provider: str,
    kind: str,
    sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(f"{provider.upper()}_TIMEOUT_SECONDS", "0.5")
    box, (routes, step) = sandboxes[provider], SUBMITS[provider]
    catalog = write_catalog(tmp_path, ["B0AMBIG001"])
    lose_next_submit(box, routes, AFTER[kind])
    _, summary = await run_flow(catalog=catalog, steps=[step])

    await settle(box, routes, 1)  # a timed-out request is recorded when the sandbox finally answers it
    assert submits(box, routes) == 1, "an ambiguous paid submission was sent again"
    assert paid_submissions({provider: box})[provider] == 1
    outcome = step_outcome(summary, step)
    assert outcome.status == "failed" and "charged, not retrievable" in (outcome.error or ""), outcome.error
    # the balance showed the debit: the summary counts it as charged, and it equals the ledger
    line = {ln.provider: ln for ln in summary.cost.by("provider")}[provider]
    assert line.net == box.net_credits() and line.held_jobs == 1
    [balance] = [b for b in summary.cost.balances if b.provider == provider]
    assert balance.explained and balance.spent == box.net_credits()
    assert [r.outcome for r in HeldStore(get_settings().held_path)] == ["charged_not_retrievable"]

    box.reconfigure(faults=[])
    _, summary = await run_flow(catalog=catalog, steps=[step])  # a plain rerun pays nothing for it
    assert submits(box, routes) == 1 and paid_submissions({provider: box})[provider] == 1
    assert "charged, not retrievable" in (step_outcome(summary, step).error or "")
    assert summary.cost.total.net == 0


PROCESSED_LATE = {**SUBMITS, "pixii": (("a_plus",), "aplus")}


@pytest.mark.parametrize("provider", sorted(PROCESSED_LATE))
async def test_a_request_processed_after_the_client_gave_up_is_not_paid_twice(
    provider: str,
    sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client times out at 0.5 s; the provider, still holding the request, creates and bills the
    job at 1.5 s. A job list or balance read right after the timeout shows nothing: only one read
    after ``settle_seconds`` tells the truth."""
    monkeypatch.setenv(f"{provider.upper()}_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv(f"{provider.upper()}_SETTLE_SECONDS", "3")
    box, (routes, step) = sandboxes[provider], PROCESSED_LATE[provider]
    lose_next_submit(box, routes, Fault(kind="slow", delay=1.5))
    _, summary = await run_flow(catalog=write_catalog(tmp_path, ["B0AMBIG006"]), steps=[step])
    await wait_for(
        lambda: sum(r.route in routes for r in box.requests) == sum(a in routes for a in box.arrivals),
        10,
        "every submit that reached the provider to be processed",
    )
    assert paid_submissions({provider: box})[provider] == 1, "paid twice"
    outcome = step_outcome(summary, step)
    if provider == "pixii":
        assert outcome.status == "done", outcome.error  # found by the lookup, adopted
    else:
        assert "charged, not retrievable" in (outcome.error or ""), outcome.error


# provider -> (its submit routes, the catalog, the run's options) for an image job that has a webhook
WEBHOOKED = {
    "listingrva": (
        ("ai_image",),
        ["B0WEBHK001"],
        {"steps": ["copy", "images"], "providers": {"images": "listingrva"}},
    ),
    "prodvisual": (PV_SUBMIT, ["B0WEBHK002", "B0WEBHK003"], {"steps": ["images"]}),
}


@pytest.mark.parametrize("provider", sorted(WEBHOOKED))
async def test_a_lost_submission_is_recovered_from_its_webhook_event(
    provider: str,
    sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The balance shows the lost image submission was charged; the job's completion event still
    reaches this run's receiver, so the output is archived instead of *charged, not retrievable*."""
    monkeypatch.setenv(f"{provider.upper()}_WEBHOOK_URL", "auto")
    box, (routes, asins, options) = sandboxes[provider], WEBHOOKED[provider]
    lose_next_submit(box, routes, Fault(status=503, after=True))
    state, summary = await run_flow(catalog=write_catalog(tmp_path, asins), **options)
    assert state.is_completed(), summary.failure_report()
    assert all(p.steps["images"].status == "done" for p in summary.products), summary.failure_report()
    assert submits(box, routes) == 1, "the lost submission was sent again"
    assert duplicate_payments({provider: box}) == []
    line = {ln.provider: ln for ln in summary.cost.by("provider")}[provider]
    assert line.net == box.net_credits() and line.held_jobs == 0
    images = [
        f for f in (lf_env["archive"]).rglob("*") if "/images/" in str(f) and not f.name.endswith(".json")
    ]
    assert len(images) >= len(asins)


@pytest.mark.parametrize("provider", sorted(SUBMITS))
async def test_refused_before_processing_is_resent_once_the_balance_shows_no_debit(
    provider: str, sandboxes: dict[str, Any], lf_env: dict[str, Any], tmp_path: Path
) -> None:
    box, (routes, step) = sandboxes[provider], SUBMITS[provider]
    lose_next_submit(box, routes, Fault(status=503))  # before processing: nothing created, nothing billed
    state, summary = await run_flow(catalog=write_catalog(tmp_path, ["B0AMBIG002"]), steps=[step])
    assert state.is_completed(), summary.failure_report()
    assert submits(box, routes) == 2 and paid_submissions({provider: box})[provider] == 1
    assert any(r.route == "credits" for r in box.requests)  # resent only after the balance was read
    assert duplicate_payments({provider: box}) == []


async def test_unreadable_balance_holds_the_submission_until_a_person_resubmits(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], tmp_path: Path
) -> None:
    rva = sandboxes["listingrva"]
    catalog = write_catalog(tmp_path, ["B0AMBIG003"])
    rva.reconfigure(
        faults=[
            FaultRule(route="ai_listing", sequence=[Fault(status=500, after=True)]),
            FaultRule(route="credits", sequence=[Fault(kind="slow")] + [Fault(status=500)] * 30),
        ]
    )
    state, summary = await run_flow(catalog=catalog, steps=["copy"])
    outcome = step_outcome(summary, "copy")
    assert outcome.status == "failed" and "outcome unknown" in (outcome.error or "")
    line = summary.cost.by("provider")[0]
    assert line.possibly_charged > 0 and line.net + line.possibly_charged == rva.net_credits()
    [held] = list(HeldStore(get_settings().held_path))
    assert (
        held.outcome == "unknown"
        and held.product == "US/B0AMBIG003"
        and held.credits == line.possibly_charged
    )

    rva.reconfigure(faults=[])
    await run_flow(catalog=catalog, steps=["copy"])
    assert submits(rva, ("ai_listing",)) == 1, "a plain rerun resent an unknown outcome"

    state, summary = await run_flow(catalog=catalog, steps=["copy"], resubmit_unknown=True)
    assert state.is_completed(), summary.failure_report()
    assert submits(rva, ("ai_listing",)) == 2  # asked for, and warned: it may pay twice
    assert list(HeldStore(get_settings().held_path)) == []


async def test_pixii_looks_the_job_up_and_adopts_it(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], tmp_path: Path
) -> None:
    pixii = sandboxes["pixii"]
    pixii.reconfigure(faults=[FaultRule(route="a_plus", sequence=[Fault(status=504, after=True)])])
    state, summary = await run_flow(catalog=write_catalog(tmp_path, ["B0AMBIG004"]), steps=["aplus"])
    assert state.is_completed(), summary.failure_report()
    assert submits(pixii, ("a_plus",)) == 1 and paid_submissions({"pixii": pixii})["pixii"] == 1
    assert summary.cost.total.net == pixii.net_credits()


async def test_balance_checks_cover_only_providers_with_a_balance_endpoint(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], tmp_path: Path
) -> None:
    """Pixii reports a balance only in submit responses: it has no start balance to compare with."""
    state, summary = await run_flow(
        catalog=write_catalog(tmp_path, ["B0AMBIG005"]), steps=["copy", "images", "aplus"]
    )
    assert state.is_completed(), summary.failure_report()
    checks = {b.provider: b for b in summary.cost.balances}
    assert set(checks) == {"listingrva", "prodvisual"}
    for name, check in checks.items():
        assert check.explained and check.spent == sandboxes[name].net_credits(), check.text()


# ---- killed while a paid request was on its way: write-ahead intents ----------------------------------


async def _kill_while_answer_is_delayed(
    box: Any, routes: tuple[str, ...], catalog: str, archive: str, steps: list[str]
) -> None:
    """The provider processes (and bills) the request and answers 30 s later; the run is killed meanwhile."""
    import os
    import signal
    import subprocess
    import sys

    from .helpers import subprocess_env, wait_for

    box.reconfigure(
        faults=[FaultRule(route=r, sequence=[Fault(kind="slow", delay=30.0, after=True)]) for r in routes]
    )
    argv = [
        sys.executable,
        "-m",
        "listingflow.cli",
        "run",
        catalog,
        "--archive",
        archive,
        *[a for s in steps for a in ("--step", s)],
    ]
    proc = subprocess.Popen(
        argv,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await wait_for(lambda: box.charges, 120, "the paid request to be processed")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    box.reconfigure(faults=[])


async def test_a_pixii_submission_on_its_way_when_the_run_was_killed_is_looked_up_and_adopted(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], tmp_path: Path
) -> None:
    pixii = sandboxes["pixii"]
    catalog, archive = write_catalog(tmp_path, ["B0KILLED01"]), str(tmp_path / "archive")
    await _kill_while_answer_is_delayed(pixii, ("a_plus",), catalog, archive, ["aplus"])
    state, summary = await run_flow(catalog=catalog, archive=archive, steps=["aplus"])
    assert state.is_completed(), summary.failure_report()
    assert submits(pixii, ("a_plus",)) <= 1 and len(pixii.paid_jobs()) == 1  # adopted, not sent again
    assert any(r.route == "list_jobs" for r in pixii.requests)


async def test_a_pixii_submission_still_queued_when_the_run_was_killed_is_not_sent_again(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst case of a killed run: its request reached Pixii, which creates the job only seconds
    later, after the next run has already looked for it. That run must wait out the request's answer
    deadline before believing an empty job list, then adopt the job instead of paying again."""
    import os
    import signal
    import subprocess
    import sys

    from .helpers import subprocess_env, wait_for

    pixii = sandboxes["pixii"]
    catalog, archive = write_catalog(tmp_path, ["B0KILLED03"]), str(tmp_path / "archive")
    monkeypatch.setenv("PIXII_TIMEOUT_SECONDS", "8")  # the killed run's answer deadline
    pixii.reconfigure(faults=[FaultRule(route="a_plus", sequence=[Fault(kind="slow", delay=6.0)])])
    argv = [sys.executable, "-m", "listingflow.cli", "run", catalog, "--archive", archive, "--step", "aplus"]
    proc = subprocess.Popen(
        argv,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await wait_for(lambda: "a_plus" in pixii.arrivals, 120, "the paid request to reach Pixii")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not pixii.paid_jobs()  # not processed yet: the next run's first look finds nothing
    state, summary = await run_flow(catalog=catalog, archive=archive, steps=["aplus"])
    assert state.is_completed(), summary.failure_report()
    assert len(pixii.paid_jobs()) == 1, [r.route for r in pixii.requests]
    assert pixii.arrivals.count("a_plus") == 1  # adopted, never sent again


async def test_a_listingrva_submission_on_its_way_when_the_run_was_killed_is_held(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], tmp_path: Path
) -> None:
    rva = sandboxes["listingrva"]
    catalog, archive = write_catalog(tmp_path, ["B0KILLED02"]), str(tmp_path / "archive")
    await _kill_while_answer_is_delayed(rva, ("ai_listing",), catalog, archive, ["copy"])
    _, summary = await run_flow(catalog=catalog, archive=archive, steps=["copy"])
    copy = step_outcome(summary, "copy")
    assert copy.status == "failed" and "outcome unknown" in (copy.error or ""), copy.error
    assert len([j for j in rva.jobs.values() if j.kind == "listing"]) == 1  # not sent again
    [held] = list(HeldStore(get_settings().held_path))
    assert held.outcome == "unknown"
