"""``call_with_retries``: how often and how long a provider call is retried. Fast: waits are recorded,
never slept."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

import flows.retry
from flows.retry import call_with_retries
from flows.settings import RetryPolicy
from providers.errors import (
    AuthenticationError,
    InsufficientCredits,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    RequestValidationError,
    ServerError,
)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(flows.retry, "asyncio", SimpleNamespace(sleep=sleep))
    return slept


class Calls:
    """Raises the given errors in turn, then returns "done"; counts the calls."""

    def __init__(self, *errors: ProviderError, forever: ProviderError | None = None) -> None:
        self.errors, self.forever, self.count = list(errors), forever, 0

    async def __call__(self) -> str:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        if self.forever is not None:
            raise self.forever
        return "done"


def policy(**kw: float) -> RetryPolicy:
    return RetryPolicy(**{"jitter": 0.0, **kw})


async def test_the_providers_retry_after_is_waited_exactly(waits: list[float]) -> None:
    calls = Calls(RateLimited("429", retry_after=7.0), ServerError("503", retry_after=0.5))
    assert await call_with_retries(calls, policy=policy(), what="submit") == "done"
    assert calls.count == 3 and waits == [7.0, 0.5]


async def test_without_a_hint_the_wait_doubles_and_is_capped(waits: list[float]) -> None:
    calls = Calls(*[ServerError("503") for _ in range(5)])
    await call_with_retries(calls, policy=policy(base_delay_seconds=1, max_delay_seconds=5), what="poll")
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_a_rate_limit_without_a_hint_waits_at_least_two_seconds(waits: list[float]) -> None:
    await call_with_retries(Calls(RateLimited("429")), policy=policy(base_delay_seconds=0.1), what="submit")
    assert waits == [2.0]


async def test_a_long_retry_after_is_capped_by_max_delay(waits: list[float]) -> None:
    await call_with_retries(
        Calls(RateLimited("429", retry_after=3600)), policy=policy(max_delay_seconds=60), what="submit"
    )
    assert waits == [60.0]


async def test_jitter_only_ever_adds_up_to_its_fraction(waits: list[float]) -> None:
    calls = Calls(*[RateLimited("429", retry_after=10) for _ in range(20)])
    await call_with_retries(
        calls, policy=policy(jitter=0.2, max_attempts=21), what="submit", rng=random.Random(1)
    )
    assert all(10.0 <= w <= 12.0 for w in waits) and len(set(waits)) > 1


async def test_gives_up_after_max_attempts_with_the_last_error(waits: list[float]) -> None:
    calls = Calls(forever=ServerError("503", provider="pixii"))
    with pytest.raises(ServerError, match="503"):
        await call_with_retries(calls, policy=policy(max_attempts=4, base_delay_seconds=0), what="poll")
    assert calls.count == 4 and len(waits) == 3


async def test_gives_up_before_waiting_past_max_total_seconds(waits: list[float]) -> None:
    """1 + 2 s waited; the next wait (4 s) would pass 5 s in all, so the error is raised instead."""
    calls = Calls(forever=ServerError("503"))
    with pytest.raises(ServerError):
        await call_with_retries(calls, policy=policy(max_total_seconds=5, max_attempts=50), what="poll")
    assert waits == [1.0, 2.0] and calls.count == 3


async def test_a_retry_after_longer_than_the_budget_is_not_waited(waits: list[float]) -> None:
    calls = Calls(RateLimited("429", retry_after=120))
    with pytest.raises(RateLimited):
        await call_with_retries(
            calls, policy=policy(max_total_seconds=60, max_delay_seconds=300), what="submit"
        )
    assert waits == [] and calls.count == 1


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("401"),
        InsufficientCredits("402"),
        RequestValidationError("422"),
        QuotaExhausted("daily cap", retry_after=3600),
    ],
)
async def test_permanent_and_quota_errors_are_never_retried(waits: list[float], error: ProviderError) -> None:
    calls = Calls(error)
    with pytest.raises(type(error)):
        await call_with_retries(calls, policy=policy(), what="submit")
    assert calls.count == 1 and waits == []


async def test_each_retry_is_announced_with_its_wait(waits: list[float]) -> None:
    seen: list[tuple[str, float]] = []
    first = RateLimited("429", retry_after=3)
    await call_with_retries(
        Calls(first),
        policy=policy(),
        what="submit",
        on_retry=lambda exc, delay: seen.append((exc.message, delay)),
    )
    assert seen == [("429", 3.0)]
