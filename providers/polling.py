"""Waiting for a provider job: the provider's cadence, and one deadline per job.

Every plugin's ``wait`` paces its polls with a ``PollCadence`` (a field of its settings, so an
operator can change it) and bounds them with a ``JobClock``. The deadline is ``max_wait_seconds``
after the job's submission (``JobRef.submitted_at``), or after the plugin was created for a job an
earlier run submitted (a rerun resumes it with a full wait): whatever retries the host wraps around a
wait, they never restart it. A poll's transient failures are retried by the HTTP layer
(``providers.retries``), never here: a poll that still fails ends the wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field

from .errors import WaitTimeout

_sleep = asyncio.sleep  # one seam, so tests can check the cadence without waiting


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
        return max(0.0, self.deadline - time.time())

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
        left = self.deadline - time.time()
        if left <= 0 and not first:
            raise self.timeout(status)
        await _sleep(max(0.0, min(seconds, left)))
