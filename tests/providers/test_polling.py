"""Polls on the cadence counted from the submission, and timed to when jobs of a kind finish."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from providers.errors import WaitTimeout
from providers.polling import Completions, JobClock, PollCadence, poll_job

from .conftest import PollClock

EVERY = PollCadence(first_seconds=1.0, every_seconds=1.0)


@dataclass
class Job:
    finished: bool
    status: str | None


class FakeJob:
    """A job that finishes ``seconds`` after its submission; each poll's answer takes ``answer``."""

    def __init__(self, clock: PollClock, seconds: float, *, answer: float = 0.0) -> None:
        self.clock, self.submitted_at, self.answer = clock, clock.now, answer
        self.done_at = clock.now + seconds
        self.polls: list[float] = []

    async def read(self) -> Job:
        self.polls.append(round(self.clock.now - self.submitted_at, 3))
        finished = self.clock.now >= self.done_at
        self.clock.now += self.answer
        return Job(finished, "completed" if finished else "processing")

    def lag(self) -> float:
        """How long after the job finished the poll that saw it was sent."""
        return self.submitted_at + self.polls[-1] - self.done_at


async def wait(clock: PollClock, job: FakeJob, completions: Completions, cadence: PollCadence = EVERY) -> Job:
    job_clock = JobClock("job", job.submitted_at, 600.0, since=clock.now, provider="p")  # as for a rerun
    return await poll_job(
        job_clock,
        cadence,
        job.read,
        submitted_at=job.submitted_at,
        kind="scale",
        completions=completions,
        status="pending",
    )


async def test_polls_keep_the_cadence_however_long_each_answer_takes(poll_clock: PollClock) -> None:
    """Sleeping a fixed time after each answer would put the fifth poll at 6.2 s, not 5 s."""
    job = FakeJob(poll_clock, 4.5, answer=0.3)
    assert (await wait(poll_clock, job, Completions())).finished
    assert job.polls == [1.0, 2.0, 3.0, 4.0, 5.0]


async def test_later_jobs_of_a_kind_are_seen_as_they_finish_at_no_extra_polls(poll_clock: PollClock) -> None:
    completions, lags, polls = Completions(), [], []
    for _ in range(8):
        job = FakeJob(poll_clock, 12.2)
        await wait(poll_clock, job, completions)
        lags.append(job.lag())
        polls.append(len(job.polls))
    assert lags[0] == pytest.approx(0.8)  # the cadence alone: the poll at 13 s
    assert max(lags[-3:]) <= 0.05  # once learned: a poll within a twentieth of the interval
    assert max(polls) <= 13  # the cadence's 13 polls: its polls are moved, not added to
    assert max(polls[-3:]) <= 8  # and every other one before the jobs' shortest duration left out


async def test_a_job_that_breaks_the_pattern_is_still_seen_on_the_cadence(poll_clock: PollClock) -> None:
    completions = Completions()
    for _ in range(5):
        await wait(poll_clock, FakeJob(poll_clock, 12.2), completions)
    slow = FakeJob(poll_clock, 20.5)
    await wait(poll_clock, slow, completions)
    assert slow.lag() <= 1.0
    for _ in range(12):  # jobs that speed up a little are found by the probes
        sped_up = FakeJob(poll_clock, 19.9)
        await wait(poll_clock, sped_up, completions)
    assert sped_up.lag() <= 0.05
    fast = FakeJob(poll_clock, 3.2)
    await wait(poll_clock, fast, completions)
    assert fast.lag() <= 2.0 and fast.polls[:2] == [1.0, 3.0]  # thinned: one interval later at most


async def test_one_job_at_a_time_probes_a_kind(poll_clock: PollClock) -> None:
    """Jobs in flight together would all spend a poll on the same question."""
    completions = Completions()
    completions.learn("scale", 12.0, 13.0, 1.0)
    assert completions.targets("scale", 1.0) == (12.5, 13.01)
    assert completions.targets("scale", 1.0) == (13.01,)
    completions.probed("scale")
    assert len(completions.targets("scale", 1.0)) == 2
    assert completions.targets("a_plus", 1.0) == ()
    assert completions.targets("scale", 1.0, not_before=12.6) == (13.01,)  # never before the first poll


async def test_the_deadline_still_bounds_the_wait(poll_clock: PollClock) -> None:
    job = FakeJob(poll_clock, 100.0)
    job_clock = JobClock("job", job.submitted_at, 5.5, since=job.submitted_at, provider="p")
    with pytest.raises(WaitTimeout):
        await poll_job(
            job_clock,
            EVERY,
            job.read,
            submitted_at=job.submitted_at,
            kind="scale",
            completions=Completions(),
            status="pending",
        )
    assert job.polls == [1.0, 2.0, 3.0, 4.0, 5.0, 5.5]


async def test_jobs_that_end_at_the_first_poll_get_one_poll_each(poll_clock: PollClock) -> None:
    """ListingRVA's polls share the submissions' bucket: its first poll, at the typical duration,
    is the only one a job that ends by then may cost."""
    completions, first_poll = Completions(), PollCadence(first_seconds=4.0, every_seconds=1.0)
    for _ in range(6):
        job = FakeJob(poll_clock, 3.9)
        await wait(poll_clock, job, completions, first_poll)
        assert len(job.polls) == 1


async def test_a_job_resumed_from_an_earlier_run_teaches_nothing(poll_clock: PollClock) -> None:
    """Its polls start long after its submission: what they show is not how long such jobs take."""
    completions = Completions()
    resumed = FakeJob(poll_clock, 100.0)
    resumed.submitted_at -= 7200.0  # submitted two hours ago, ends in 100 s
    await wait(poll_clock, resumed, completions)
    assert completions.targets("scale", 1.0) == () and completions.shortest("scale") == 0.0
    fresh = FakeJob(poll_clock, 12.2)
    await wait(poll_clock, fresh, completions)
    assert fresh.polls[:3] == [1.0, 2.0, 3.0]  # the plain cadence: nothing learned to thin it
