"""One error taxonomy shared by every provider.

Callers branch on two questions only: *may I retry this?* (``RetryableError``) and *is the provider
out of something for today?* (``QuotaExhausted``). Everything else is a ``PermanentError`` whose
subclass names the reason. Classes mix in builtins (``ValueError``, ``TimeoutError``...) so code that
catches those still works, the way Prefect's own exceptions do.

Messages are built from structured fields and never contain credentials: clients pass response
bodies through ``redact`` before they reach an exception.
"""

from __future__ import annotations

import datetime
import email.utils
import time
from collections.abc import Mapping
from typing import Any


class ProviderError(Exception):
    """Base of every error a provider call can raise."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        code: str | None = None,
        status: int | None = None,
        detail: str | None = None,
    ) -> None:
        self.provider = provider
        self.code = code
        self.status = status
        self.detail = detail
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [f"[{self.provider}]" if self.provider else "", self.message]
        if self.code:
            parts.append(f"(code={self.code} status={self.status})" if self.status else f"(code={self.code})")
        elif self.status:
            parts.append(f"(status={self.status})")
        if self.detail:
            parts.append(f"- {self.detail}")
        return " ".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description, for manifests and run summaries."""
        return {
            "type": type(self).__name__,
            "provider": self.provider,
            "code": self.code,
            "status": self.status,
            "message": self.message,
            "detail": self.detail,
            "retryable": self.retryable,
        }


# --- retryable ---------------------------------------------------------------------------------


class RetryableError(ProviderError):
    """Transient: the same request may succeed later. ``retry_after`` is in seconds when known.

    For a paid POST, "may succeed later" is not "may be sent again": see ``resend_is_safe``.
    ``resend_safe`` is set by whoever *knows* (a plugin that looked the job up and found none)."""

    retryable = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, resend_safe: bool | None = None, **kw: Any
    ) -> None:
        self.retry_after = retry_after
        self.resend_safe = resend_safe
        super().__init__(message, **kw)


class RateLimited(RetryableError):
    """HTTP 429 for a short window (per minute)."""


class ServerError(RetryableError):
    """HTTP 5xx."""


class ProviderTimeout(RetryableError, TimeoutError):
    """The request timed out on the wire. ``request_sent`` is False only for a connect or pool
    timeout: the request never left, so the provider cannot have acted on it."""

    def __init__(self, message: str, *, request_sent: bool = True, **kw: Any) -> None:
        self.request_sent = request_sent
        super().__init__(message, **kw)


class ProviderConnectionError(RetryableError, ConnectionError):
    """Connection refused, reset or closed before a response.

    ``request_sent`` tells a POST whether resending is safe: False only when the connection was never
    established, so the provider cannot have acted on (and billed) the request."""

    def __init__(self, message: str, *, request_sent: bool = True, **kw: Any) -> None:
        self.request_sent = request_sent
        super().__init__(message, **kw)


class MalformedResponse(RetryableError):
    """A 2xx whose body is not the JSON the contract promises (truncated, HTML, garbage)."""


class WaitTimeout(RetryableError, TimeoutError):
    """The job is still running after the configured maximum wait; the job reference stays valid."""


# --- quota -------------------------------------------------------------------------------------


class QuotaExhausted(ProviderError):
    """The provider's daily cap is reached: work waiting for it is *deferred*, not failed."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


# --- permanent ---------------------------------------------------------------------------------


class PermanentError(ProviderError):
    """Retrying the same request will fail the same way."""


class RequestValidationError(PermanentError, ValueError):
    """The request breaks the contract; raised locally before anything is sent, or by the provider."""

    def __init__(self, message: str, *, field: str | None = None, **kw: Any) -> None:
        self.field = field
        super().__init__(message, **kw)

    @classmethod
    def from_pydantic(cls, exc: Any, *, provider: str, model: str) -> RequestValidationError:
        """Name every offending field, the way a person fixing the input needs to read it."""
        problems = []
        first_field = None
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ())) or model
            first_field = first_field or loc
            problems.append(f"{loc}: {err.get('msg')}")
        return cls(
            f"invalid {model} request: " + "; ".join(problems),
            provider=provider,
            code="LOCAL_VALIDATION",
            field=first_field,
        )


class AuthenticationError(PermanentError):
    """Missing, invalid, expired or under-privileged credentials (401/403)."""


class InsufficientCredits(PermanentError):
    """The account cannot pay for this request; stop submitting to this provider."""


class NotFound(PermanentError, LookupError):
    """Unknown id, or a job past its retention."""


class ContentRefused(PermanentError):
    """The provider refused the content (unsupported image, too large, policy)."""


class JobFailed(PermanentError):
    """The provider accepted the job and then reported it failed."""


class OutputRejected(PermanentError):
    """A downloaded output broke our own rules (host, size, type)."""


class SubmitOutcomeUnknown(PermanentError):
    """A paid submission failed after it may have reached the provider, and neither a lookup nor the
    balance could tell whether it was processed (and billed). It is held, never resent automatically:
    resending could pay twice. ``possible_credits`` is what it may have cost (None: unknown price)."""

    def __init__(self, message: str, *, possible_credits: int | None = None, **kw: Any) -> None:
        self.possible_credits = possible_credits
        kw.setdefault("code", "submit_outcome_unknown")
        super().__init__(message, **kw)


class OutputExpired(PermanentError):
    """An output URL expired and the provider offers no way to read the job again."""


# --- helpers -----------------------------------------------------------------------------------


def resend_is_safe(exc: ProviderError) -> bool:
    """May a paid POST that failed with ``exc`` be sent again without more ado?

    Only when the provider cannot have acted on it: a 429 (refused before any work), or a connection
    that was never established. Every other failure after the request may have been written (any 5xx,
    503 included, a read timeout, a connection closed or reset, a malformed or truncated body) is
    *ambiguous*: the provider may have done the work and billed it (every contract: no idempotency key).
    """
    if not isinstance(exc, RetryableError):
        return False
    if exc.resend_safe is not None:
        return exc.resend_safe
    if isinstance(exc, RateLimited):
        return True
    if isinstance(exc, ProviderConnectionError | ProviderTimeout):
        return not exc.request_sent
    return False


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or HTTP-date) or an ``X-RateLimit-Reset``
    Unix timestamp; ``None`` when the response gives no hint. Never negative."""
    now = time.time() if now is None else now
    value = _header(headers, "retry-after")
    if value is not None:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):  # neither seconds nor a date: no hint
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:  # "-0000": UTC, not this host's local time
                parsed = parsed.replace(tzinfo=datetime.UTC)
            return max(0.0, parsed.timestamp() - now)
    reset = _header(headers, "x-ratelimit-reset")
    if reset is not None:
        try:
            stamp = float(reset.strip())
        except ValueError:
            return None
        # Some APIs send a delta instead of a timestamp; anything before 2001 is surely a delta.
        return max(0.0, stamp - now) if stamp > 1e9 else max(0.0, stamp)
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def redact(text: str, secrets: list[str]) -> str:
    """Remove every secret (and its ``Bearer`` form) from a string bound for a message or log."""
    for secret in sorted(secrets, key=len, reverse=True):  # a secret containing another goes whole
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
