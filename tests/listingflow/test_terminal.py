"""What `listingflow run` shows while it runs: per-provider lines, an expected end from the providers'
limits, plain unwrapped lines when piped, lines that fit 80 columns on a terminal."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from flows.limits import ProviderLimiter
from flows.observer import ProviderPlan, RunStart
from listingflow.terminal import LiveBoard, PlainBoard, ProviderTally, provider_seconds_left
from providers.contract import RouteLimit

LONG_ARCHIVE = "/srv/listings/" + "a-folder-name-longer-than-a-terminal-line-" * 3 + "/archive"


def _limiter(requests: int = 10, window: float = 60.0, inflight: int = 10) -> ProviderLimiter:
    return ProviderLimiter(
        provider="pixii",
        groups={"submit": RouteLimit(group="submit", requests=requests, per_seconds=window)},
        inflight=inflight,
        prefix="t",
        use_global=False,
    )


async def test_the_expected_end_follows_the_rate_limit_and_the_in_flight_cap() -> None:
    limiter = _limiter()
    for _ in range(3):
        (await limiter.throttle(["submit"]))()  # three submissions in the current window: 7 more may go now
    plan = ProviderPlan(name="pixii", jobs=30, limiter=limiter)
    tally = ProviderTally(submitted=3, done=1, busy_seconds=5.0)  # one job took 5 s; two in flight
    # 27 left: 7 now, the other 20 at 10 a minute (120 s), then one job's time
    assert provider_seconds_left(plan, tally) == pytest.approx(125.0)
    assert provider_seconds_left(plan, ProviderTally(submitted=3)) is None  # no job timed yet
    fast = ProviderPlan(name="pixii", jobs=30, limiter=_limiter(requests=1000, inflight=2))
    # a generous rate: the in-flight cap decides, 29 jobs two at a time at 5 s each
    assert provider_seconds_left(fast, tally) == pytest.approx(29 / 2 * 5.0 + 5.0)


def _start() -> RunStart:
    plans = {
        "listingrva": ProviderPlan(name="listingrva", jobs=1000, limiter=_limiter(40, 60.0)),
        "pixii": ProviderPlan(name="pixii", jobs=1500, limiter=_limiter()),
    }
    return RunStart(
        run_id="3b6224a4-f04a-4f7e-9c8d-17037f4be3c6", products=1000, archive=LONG_ARCHIVE, providers=plans
    )


def _outcome(key: str, status: str) -> SimpleNamespace:
    return SimpleNamespace(key=key, status=status)


async def test_piped_lines_are_plain_and_whole() -> None:
    out = io.StringIO()
    board = PlainBoard(Console(file=out, width=80), every=3600)
    board.on_start(_start())
    for event in ("submitted", "submitted", "done", "rejected"):
        board.on_job_event("pixii", "aplus", event)  # type: ignore[arg-type]
    board.on_product_done(_outcome("US/B0CHX1W1XY", "complete"), 1, 1000)  # type: ignore[arg-type]
    board.close()
    lines = out.getvalue().splitlines()
    assert f"run 3b6224a4-f04a-4f7e-9c8d-17037f4be3c6: 1000 products; outputs: {LONG_ARCHIVE}" in lines
    assert "product 1/1000 US/B0CHX1W1XY complete" in lines
    assert "pixii: submitted 2, in flight 1, done 1, failed 1; submit 0/10 per 60s" in lines
    assert any(line.startswith("products 1/1000, elapsed 0:00, expected end") for line in lines)
    assert "\x1b" not in out.getvalue()


async def test_live_lines_fit_80_columns_at_catalog_scale() -> None:
    board = LiveBoard(Console(file=io.StringIO(), width=80, force_terminal=True))
    board.on_start(_start())
    for _ in range(1200):
        board.on_job_event("listingrva", "copy", "submitted")
        board.on_job_event("listingrva", "copy", "reused")
    for _ in range(999):
        board.on_job_event("listingrva", "copy", "done")
    board.products_done = 999
    lines = [line.plain for line in board.render().renderables]  # type: ignore[attr-defined]
    board.close()
    assert lines[0] == "listingrva submitted 1200, in flight 201, done 999, failed 0, reused 1200"
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[-1].startswith("products 999/1000, elapsed")
