"""What a run tells the CLI's display: the plan at the start, every provider job's events, each
finished product and the rate in use, passed to the flow as an argument (no module state)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from flows.observer import RunObserver, RunStart

from .helpers import paid_submissions, run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


class Recorder(RunObserver):
    def __init__(self) -> None:
        self.start: RunStart | None = None
        self.events: Counter[tuple[str, str]] = Counter()
        self.done: list[int] = []
        self.stop: Any = None
        self.rate_seen: dict[str, int] = {}

    def on_stoppable(self, stop: Any) -> None:
        self.stop = stop

    def on_start(self, start: RunStart) -> None:
        self.start = start

    def on_job_event(self, provider: str, step: str, event: str) -> None:
        self.events[(provider, event)] += 1
        assert self.start is not None
        limiter = self.start.providers[provider].limiter
        assert limiter is not None
        used = max(r.used for r in limiter.rate_use())
        self.rate_seen[provider] = max(self.rate_seen.get(provider, 0), used)

    def on_product_done(self, outcome: Any, done: int, total: int) -> None:
        self.done.append(done)


async def test_the_observer_hears_each_provider_job_and_product(
    sandboxes: dict[str, Any], lf_env: dict
) -> None:
    seen = Recorder()
    state, summary = await run_flow(seen)
    assert state.is_completed(), summary.failure_report()
    assert seen.stop is not None and seen.done == [1, 2, 3, 4, 5, 6]
    assert seen.start is not None and seen.start.products == 6
    plans = seen.start.providers
    assert {n: p.jobs for n, p in plans.items()} == {"listingrva": 6, "pixii": 10, "prodvisual": 6}
    assert plans["prodvisual"].submissions < 6  # it batches products: fewer submissions than jobs
    paid = paid_submissions(sandboxes)
    for name in ("listingrva", "pixii", "prodvisual"):
        assert seen.events[(name, "submitted")] == paid[name] == seen.events[(name, "done")], seen.events
        assert seen.rate_seen[name] >= 1  # the limiter's window shows the requests just sent
    assert not any(event in ("failed", "rejected", "reused") for _, event in seen.events)

    again = Recorder()
    state, _ = await run_flow(again)
    assert state.is_completed()
    assert again.events[("pixii", "reused")] == 10 and not again.events[("pixii", "submitted")]


async def test_a_broken_observer_never_fails_or_double_pays_the_run(
    sandboxes: dict[str, Any], lf_env: dict
) -> None:
    """A callback runs inside the submit task, after the provider was paid: its error must not fail the
    task (the paid job would not be cached, and the next run would pay again)."""

    class Broken(RunObserver):
        calls = 0

        def on_job_event(self, provider: str, step: str, event: str) -> None:
            Broken.calls += 1
            raise RuntimeError("display bug")

    state, summary = await run_flow(Broken(), steps=["copy"])
    assert state.is_completed(), summary.failure_report()
    assert Broken.calls == 1  # the first error is logged; the observer is not called again
    paid = paid_submissions(sandboxes)["listingrva"]
    state, again = await run_flow(steps=["copy"])
    assert state.is_completed() and paid_submissions(sandboxes)["listingrva"] == paid == 6
    assert again.cost.total.reused_jobs == 6
