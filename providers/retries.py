"""Retrying transient HTTP failures: the one place a provider request is sent again.

``ProviderClient.request`` retries here, inside one client call, with the policy from the provider's
settings (``<PREFIX>HTTP_RETRY__MAX_ATTEMPTS`` ...). Nothing above it retries the same failure again:
a poll that keeps failing ends the wait, at one deadline per job (``providers.polling``).

What may be sent again (``may_resend``):

* any request refused with a 429 (the provider did no work), honouring ``Retry-After``;
* any request whose connection was never established (it cannot have been acted on);
* an idempotent request (GET, HEAD) after a 5xx, a timeout, a dropped connection or a garbled body.

A *paid* submission is never retried here, not even on a 429: whether it may be sent again is
decided in one place, by the host (``flows.submission``), under the money rule of
``providers.errors.resend_is_safe``.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
from collections.abc import Iterator

from pydantic import BaseModel, Field

from .errors import RateLimited, RetryableError, resend_is_safe

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD"})
RATE_LIMIT_MIN_SECONDS = 2.0
"""A 429 without a hint waits at least this long: a per-minute window is not over in a second."""


def backoff(
    exc: RetryableError, attempt: int, *, base: float, cap: float, jitter: float, rng: random.Random
) -> float:
    """The wait before attempt ``attempt + 1``: the provider's hint when given, else exponential,
    capped, plus up to ``jitter`` of itself at random (never less than the hint)."""
    if exc.retry_after is not None:
        delay = exc.retry_after
    elif isinstance(exc, RateLimited):
        delay = max(RATE_LIMIT_MIN_SECONDS, base) * 2 ** (attempt - 1)
    else:
        delay = base * 2 ** (attempt - 1)
    delay = min(delay, cap)
    return delay + delay * jitter * rng.random()


class HttpRetry(BaseModel):
    """Retries of transient failures inside one provider request (a provider's settings field)."""

    max_attempts: int = Field(5, ge=1, le=50, description="attempts per request, the first included")
    base_delay_seconds: float = Field(1.0, ge=0, description="exponential backoff base without Retry-After")
    max_delay_seconds: float = Field(60.0, ge=0, description="cap for one wait")
    max_total_seconds: float = Field(120.0, ge=0, description="give up after this much waiting")
    jitter: float = Field(0.1, ge=0, le=1, description="fraction of random jitter added to each delay")

    def next_delay(
        self, exc: RetryableError, attempt: int, waited: float, rng: random.Random
    ) -> float | None:
        """How long to wait before sending again after failed attempt ``attempt``; None to give up."""
        if attempt >= self.max_attempts:
            return None
        delay = backoff(
            exc,
            attempt,
            base=self.base_delay_seconds,
            cap=self.max_delay_seconds,
            jitter=self.jitter,
            rng=rng,
        )
        return None if waited + delay > self.max_total_seconds else delay


NO_RETRY = HttpRetry(max_attempts=1)
"""A client built without a policy sends each request once (its errors mapped, nothing repeated)."""

_cap: contextvars.ContextVar[tuple[int, float] | None] = contextvars.ContextVar(
    "listingflow_http_retry_cap", default=None
)


@contextlib.contextmanager
def capped(max_attempts: int, max_total_seconds: float) -> Iterator[None]:
    """Within this block (this task's context), no request is retried beyond these bounds: pre-flight
    reports a provider that stays unreachable instead of waiting it out."""
    token = _cap.set((max_attempts, max_total_seconds))
    try:
        yield
    finally:
        _cap.reset(token)


def in_force(policy: HttpRetry) -> HttpRetry:
    """``policy`` within the bounds of the enclosing ``capped`` block, if any."""
    cap = _cap.get()
    if cap is None:
        return policy
    return policy.model_copy(
        update={
            "max_attempts": min(policy.max_attempts, cap[0]),
            "max_total_seconds": min(policy.max_total_seconds, cap[1]),
        }
    )


def may_resend(method: str, exc: RetryableError, *, paid: bool) -> bool:
    """May the HTTP layer send this request again after ``exc``? (See the module docstring.)"""
    if paid:
        return False
    if method.upper() in IDEMPOTENT_METHODS:
        return True
    return resend_is_safe(exc)
