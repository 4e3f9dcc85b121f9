"""Fixtures shared by the provider tests."""

from __future__ import annotations

import time

import pytest

import providers.polling as polling


class PollClock:
    """The polls' clock without waiting: every sleep is recorded and moves the clock on by its length,
    so a wait's schedule (counted from the job's submission) is seen as the delays between polls."""

    def __init__(self) -> None:
        self.now = time.time()
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 1))
        self.now += seconds


@pytest.fixture
def poll_clock(monkeypatch: pytest.MonkeyPatch) -> PollClock:
    clock = PollClock()
    monkeypatch.setattr(polling, "_sleep", clock.sleep)
    monkeypatch.setattr(polling, "_now", clock)
    return clock
