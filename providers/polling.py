"""Waiting for a provider job: the provider's cadence, one deadline per job, polls timed to completion.

Every plugin's ``wait`` paces its polls with a ``PollCadence`` (a field of its settings, so an
operator can change it) and bounds them with a ``JobClock``. ``poll_job`` keeps the cadence on the
clock from the job's submission (sleeping a fixed time after each answer would let every poll's
round trip push the next one later), and ``Completions`` learns from a plugin's own polls when jobs
of each kind finish, so one poll of a later job lands right then instead of up to an interval later.

The deadline is ``max_wait_seconds`` after the job's submission (``JobRef.submitted_at``), or after
the plugin was created for a job an earlier run submitted (a rerun resumes it with a full wait):
whatever retries the host wraps around a wait, they never restart it. A poll's transient failures
are retried by the HTTP layer (``providers.retries``), never here: a poll that still fails ends the
wait.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .errors import WaitTimeout

_sleep = asyncio.sleep  # seams, so tests can check the cadence without waiting
_now = time.time


class PollCadence(BaseModel):
    """When to poll a job: after ``first_seconds``, then every ``every_seconds``, the wait growing by
    ``step_seconds`` after each poll up to ``max_seconds``."""

    model_config = ConfigDict(frozen=True)

    first_seconds: float = Field(5.0, ge=0, description="wait before the first poll")
    every_seconds: float = Field(5.0, gt=0, description="wait between polls")
    step_seconds: float = Field(0.0, ge=0, description="added to the wait after each poll")
    max_seconds: float | None = Field(None, gt=0, description="cap of the growing wait")

    def fixed(self, every: float | None) -> PollCadence:
        """``poll_interval_seconds`` set: that interval for every wait, the first included."""
        return self if every is None else PollCadence(first_seconds=every, every_seconds=every)

    def delays(self) -> Iterator[float]:
        yield self.first_seconds
        wait = self.every_seconds
        while True:
            yield wait
            wait = wait + self.step_seconds
            if self.max_seconds is not None:
                wait = min(wait, self.max_seconds)


class JobClock:
    """One job's wait: its deadline, and pauses that never run past it."""

    def __init__(
        self, job_id: str, submitted_at: float, max_wait: float, *, since: float, provider: str
    ) -> None:
        self.job_id, self.max_wait, self.provider = job_id, max_wait, provider
        self.deadline = max(submitted_at, since) + max_wait

    def left(self) -> float:
        """Seconds until the deadline (0 once past it)."""
        return max(0.0, self.deadline - _now())

    def timeout(self, status: str) -> WaitTimeout:
        return WaitTimeout(
            f"job {self.job_id} still {status} after {self.max_wait:g}s; the job reference stays valid, "
            "resume waiting later",
            provider=self.provider,
            code=status or None,
        )

    async def pause(self, seconds: float, status: str, *, first: bool = False) -> None:
        """Sleep before the next poll, cut to the deadline; past it, ``WaitTimeout`` (the last poll is
        at the deadline). The ``first`` pause never raises: every wait polls at least once."""
        left = self.deadline - _now()
        if left <= 0 and not first:
            raise self.timeout(status)
        await _sleep(max(0.0, min(seconds, left)))


class PolledJob(Protocol):
    @property
    def finished(self) -> bool: ...
    @property
    def status(self) -> str | None: ...


Polled = TypeVar("Polled", bound=PolledJob)


class Completions:
    """When a plugin's jobs of each kind finish, in seconds after their submission, learned from its
    own polls: an unfinished poll sent ``s`` after the submission says the job took longer than
    ``s``, a finished one answered ``a`` after it says it took at most ``a``. While the jobs of a
    kind agree (their ranges overlap), a later job's poll is timed to the end of that range; one job
    at a time probes the middle of a range wider than a twenty-fifth of the poll interval, halving it,
    and each job eases the range's low end, so jobs that speed up are found too. Durations that
    disagree start the range again from the last job. Nothing here adds polls beyond the probe: the
    cadence is shifted so one of its polls lands at the predicted end, and thinned before it."""

    def __init__(self) -> None:
        self._ranges: dict[str, tuple[float, float]] = {}
        self._probing: set[str] = set()

    def learn(self, kind: str, longer_than: float, at_most: float, every: float) -> None:
        low, high = self._ranges.get(kind, (longer_than, at_most))
        low, high = max(low - every / 50, longer_than), min(high, at_most)  # low eased: jobs may speed up
        self._ranges[kind] = (low, high) if low <= high else (longer_than, at_most)

    def targets(self, kind: str, every: float, not_before: float = 0.0) -> tuple[float, ...]:
        """Seconds after the submission to place polls at: the predicted end, preceded by a probe of
        the range's middle when this job probes; () before any job of ``kind`` finished. No probe
        before ``not_before`` (the cadence's first poll): where polls count against the submissions'
        rate limit (ListingRVA), a probe there is a request the cadence would not have sent."""
        if kind not in self._ranges:
            return ()
        low, high = self._ranges[kind]
        end = high + every / 100  # a later job's own answer may come a few ms later in its run
        if high - low <= every / 25 or kind in self._probing or (low + high) / 2 < not_before:
            return (end,)
        self._probing.add(kind)
        return ((low + high) / 2, end)

    def probed(self, kind: str) -> None:
        self._probing.discard(kind)

    def shortest(self, kind: str) -> float:
        """Seconds after the submission before which no job of ``kind`` was seen to finish."""
        return self._ranges.get(kind, (0.0, 0.0))[0]


def poll_offsets(
    cadence: PollCadence, targets: tuple[float, ...], sparse_until: float = 0.0
) -> Iterator[float]:
    """Seconds after the submission to poll at: the cadence's, with the ``targets`` put in, the
    cadence's polls within half an interval before the first target left out, and every other one
    before ``sparse_until`` (a job that ends that early is seen at most one interval later)."""
    delays, offset, pending = cadence.delays(), 0.0, list(targets)
    for index in itertools.count():
        offset += next(delays)
        if pending and offset >= pending[0] - cadence.every_seconds / 2:
            offset = pending.pop(0)
        elif offset < sparse_until and index % 2:
            continue
        yield offset


async def poll_job(
    clock: JobClock,
    cadence: PollCadence,
    read: Callable[[], Awaitable[Polled]],
    *,
    submitted_at: float,
    kind: str,
    completions: Completions,
    status: str,
) -> Polled:
    """Poll ``read`` until the job it returns is finished, on the cadence counted from the job's
    submission (a job of an earlier run is polled at once, then on the cadence from then), and
    tell ``completions`` what the polls showed of its duration (not for a job polled late: resumed,
    or behind a stalled loop, its polls say little of how long such jobs take)."""
    targets = completions.targets(kind, cadence.every_seconds, cadence.first_seconds)
    sparse_until = completions.shortest(kind) - cadence.every_seconds
    anchor, last_sent, longer_than, late = submitted_at, float("-inf"), 0.0, False
    try:
        for offset in poll_offsets(cadence, targets, sparse_until):
            due, now = anchor + offset, _now()
            if due <= last_sent:
                continue  # behind the cadence: a poll already went out after this one was due
            if due < now - cadence.every_seconds:
                anchor, due, late = anchor + now - due, now, True  # resumed: the cadence restarts now
            await clock.pause(due - now, status, first=last_sent < 0)
            last_sent = _now()
            job = await read()
            if job.finished:
                if not late:
                    completions.learn(kind, longer_than, _now() - submitted_at, cadence.every_seconds)
                return job
            longer_than, status = last_sent - submitted_at, job.status or status
        raise AssertionError("unreachable: a cadence never ends")
    finally:
        if len(targets) > 1:
            completions.probed(kind)  # this job's probe is over: the next job may take one
