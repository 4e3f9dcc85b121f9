"""The shared error helpers: ``Retry-After`` parsing and secret redaction."""

from __future__ import annotations

import email.utils

import pytest

from providers.errors import parse_retry_after, redact

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"Retry-After": email.utils.formatdate(NOW + 20)}, 20.0),  # "-0000": UTC too
        ({"X-RateLimit-Reset": str(int(NOW + 12))}, 12.0),
        ({"X-RateLimit-Reset": "45"}, 45.0),  # a delta, not a timestamp
        ({}, None),
    ],
)
def test_retry_after_in_seconds_dates_and_reset_stamps(
    headers: dict[str, str], expected: float | None
) -> None:
    assert parse_retry_after(headers, now=NOW) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("value", ["soon", "", "Fri, 99 Foo 2026", "1e", "\u00e9t\u00e9"])
def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_no_hint(value: str) -> None:
    """A provider's odd header must not turn a retryable 429 into a crash: no hint, the usual backoff."""
    assert parse_retry_after({"Retry-After": value}, now=NOW) is None


def test_an_unreadable_retry_after_falls_back_to_the_reset_stamp() -> None:
    assert parse_retry_after({"Retry-After": "soon", "X-RateLimit-Reset": "9"}, now=NOW) == 9.0


def test_redact_removes_every_occurrence_of_every_secret() -> None:
    text = "key sk_live_12345 sent as Bearer sk_live_12345 with token tok_abcdef"
    assert redact(text, ["sk_live_12345", "tok_abcdef"]) == "key *** sent as Bearer *** with token ***"


def test_redact_removes_a_secret_that_contains_another_whole() -> None:
    """No tail of the longer secret may survive because the shorter one was replaced first."""
    assert redact("a=abcd-1234-wxyz b=abcd", ["abcd", "abcd-1234-wxyz"]) == "a=*** b=***"


def test_redact_leaves_text_alone_for_empty_or_tiny_values() -> None:
    """An unset key ("") or a placeholder of a few characters would otherwise mangle every message."""
    assert redact("status 401 at /v1", ["", "1", "v1"]) == "status 401 at /v1"
