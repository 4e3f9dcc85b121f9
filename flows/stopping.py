"""Stopping a run on request (Ctrl-C, SIGTERM): no new paid submissions, in-flight jobs kept.

A stop never cuts off a submission whose request may already have reached the provider: that call
runs to its end in a shielded task, so the cached submit task persists its job reference and the
next run resumes the job instead of paying again. Everything else a run waits on (a rate-limit turn,
a poll, a retry's back-off) is safe to abandon: nothing is paid by it, and the next run finds the
submitted jobs in the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from providers.errors import PermanentError

T = TypeVar("T")


class Interrupted(PermanentError):
    """The run was asked to stop before this work finished; the next run picks it up."""


@dataclass(frozen=True, slots=True)
class InFlightJob:
    """A job this run submitted (or resumed) and stopped waiting for: the next run resumes it."""

    provider: str
    step: str
    job_id: str
    products: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.provider} {self.step} job {self.job_id} ({', '.join(self.products)})"


class RunStop:
    """One run's stop request, and the shielded paid calls it must let finish."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._racing: dict[asyncio.Task[Any], int] = {}
        self._cancelled: set[asyncio.Task[Any]] = set()
        self._shielded: set[asyncio.Future[Any]] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self.in_flight: dict[str, InFlightJob] = {}

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        """Ask the run to stop (idempotent: the first reason is kept). Called in the run's loop."""
        if self.reason is not None:
            return
        self.reason = reason
        for task in self._racing:
            self._cancelled.add(task)
            task.cancel()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        if self.reason is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)

    def check(self, what: str) -> None:
        """Raise ``Interrupted`` if the run is stopping: called before anything that would be paid."""
        if self.reason is not None:
            raise Interrupted(f"{what} not started: the run was stopped ({self.reason})", code="INTERRUPTED")

    async def race(self, awaitable: Awaitable[T], what: str) -> T:
        """``awaitable``'s result, or ``Interrupted`` as soon as a stop is requested: only for work that
        is free to abandon (a rate-limit turn, polling, a back-off), never a paid request in progress.

        A stop cancels the awaiting task, which is cheaper than a task per wait (this wraps every
        request's throttle): the cancellation is turned into ``Interrupted`` here and withdrawn."""
        if self.reason is not None:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started: no "never awaited" warning
            self.check(what)
        task = asyncio.current_task()
        assert task is not None
        self._racing[task] = self._racing.get(task, 0) + 1
        try:
            result = await awaitable
        except asyncio.CancelledError:
            if task not in self._cancelled:
                raise
        finally:
            depth = self._racing.pop(task) - 1
            if depth:
                self._racing[task] = depth
        if task in self._cancelled:  # ours, delivered (or swallowed by the awaitable): withdraw it
            self._cancelled.discard(task)
            task.uncancel()
            raise Interrupted(f"{what} stopped: the run was stopped ({self.reason})", code="INTERRUPTED")
        return result

    async def finish(self, awaitable: Awaitable[T], orphaned: Callable[[T], None] | None = None) -> T:
        """Run ``awaitable`` (a paid call) to its end even if the caller is cancelled meanwhile.
        ``orphaned`` receives its result when the caller is no longer there to take it."""
        work = asyncio.ensure_future(awaitable)
        self._shielded.add(work)
        work.add_done_callback(self._shielded.discard)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if orphaned is not None:
                work.add_done_callback(lambda f: _deliver(f, orphaned))
            raise

    async def settle(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for shielded paid calls; the number still running after it."""
        pending = set(self._shielded)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout)
        return len(pending)

    def keep(self, job: InFlightJob) -> None:
        self.in_flight[f"{job.provider}:{job.job_id}"] = job


def _deliver(fut: asyncio.Future[T], orphaned: Callable[[T], None]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        with contextlib.suppress(Exception):
            orphaned(fut.result())
