"""A stop request: free waits end at once with ``Interrupted``, paid calls in progress finish."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from flows.stopping import Interrupted, RunStop


async def test_a_stop_ends_free_waits_at_once_even_nested() -> None:
    stop = RunStop()

    async def poll() -> int:
        return await stop.race(asyncio.sleep(30, 1), "throttle")

    waiting = asyncio.create_task(stop.race(poll(), "wait"))
    await asyncio.sleep(0.01)
    stop.request("SIGINT")
    with pytest.raises(Interrupted, match=r"throttle stopped: the run was stopped \(SIGINT\)"):
        await asyncio.wait_for(waiting, 1)
    assert waiting.cancelling() == 0  # the cancellation was the stop's, and it was withdrawn


async def test_after_a_stop_nothing_new_starts_and_nothing_is_left_unawaited() -> None:
    stop = RunStop()
    stop.request("SIGTERM")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Interrupted, match="not started"):
            await stop.race(asyncio.sleep(0), "submit")
    with pytest.raises(Interrupted):
        stop.check("submit")
    await asyncio.wait_for(stop.wait(), 1)


async def test_other_cancellations_pass_through_and_results_come_back() -> None:
    stop = RunStop()
    assert await stop.race(asyncio.sleep(0, "done"), "x") == "done"
    task = asyncio.create_task(stop.race(asyncio.sleep(30), "x"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_paid_call_in_progress_finishes_when_its_caller_is_cancelled() -> None:
    stop = RunStop()
    orphans: list[str] = []
    submitted = asyncio.Event()

    async def submit() -> str:
        submitted.set()
        await asyncio.sleep(0.1)
        return "job_1"

    caller = asyncio.create_task(stop.finish(submit(), orphaned=orphans.append))
    await submitted.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await stop.settle(timeout=2) == 0
    assert orphans == ["job_1"]  # the job reached whoever keeps the jobs in flight
