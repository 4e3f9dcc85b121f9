"""Retrying what the provider HTTP layer does not: a paid submission the money rule lets be sent
again (``flows.submission``), and output downloads (``flows.download``), honouring ``Retry-After``.

Every other provider request is retried inside the client call (``providers.retries``) and polls keep
one deadline per job (``providers.polling``): nothing here wraps those again. Prefect's task retries
cannot wait for a delay taken from the exception (no ``Retry-After`` support; see the Prefect facts
note, section 2) and stay off. Permanent errors and daily-quota errors are never retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from flows.settings import RetryPolicy
from providers.errors import RetryableError
from providers.retries import backoff

T = TypeVar("T")
logger = logging.getLogger("listingflow.retry")


def delay_for(exc: RetryableError, attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """The wait before attempt ``attempt + 1``: the provider's hint when given, else exponential."""
    return backoff(
        exc,
        attempt,
        base=policy.base_delay_seconds,
        cap=policy.max_delay_seconds,
        jitter=policy.jitter,
        rng=rng,
    )


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    what: str,
    on_retry: Callable[[RetryableError, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    rng = rng or random.Random()
    waited = 0.0
    attempt = 1
    while True:
        try:
            return await fn()
        except RetryableError as exc:
            if attempt >= policy.max_attempts:
                raise
            delay = delay_for(exc, attempt, policy, rng)
            if waited + delay > policy.max_total_seconds:
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            logger.info("%s: %s; retry %d in %.1fs", what, exc, attempt, delay)
            await _pause(delay, what)
            waited += delay
            attempt += 1


async def _pause(delay: float, what: str) -> None:
    """The back-off before the next attempt, cut short (``Interrupted``) when the run is stopping:
    nothing is sent during it, so the next run can make the attempt instead."""
    from flows.runtime import active_run

    run = active_run()
    if run is None:
        await asyncio.sleep(delay)
    else:
        await run.stop.race(asyncio.sleep(delay), f"retry of {what}")
