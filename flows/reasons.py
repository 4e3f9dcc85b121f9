"""Why a step was not done, as a typed code beside its message (the message is for people).

The run summary lists work *not submitted* (the budget, a provider's daily cap, an account out of
credits) by these codes, never by matching words in the message.
"""

from __future__ import annotations

from enum import StrEnum

from providers.errors import InsufficientCredits, QuotaExhausted

from .budget import BudgetExceeded
from .runtime import ProviderBlocked


class Reason(StrEnum):
    BUDGET = "budget"  # the run's budget refused the submission
    DAILY_CAP = "daily_cap"  # the provider's daily cap is reached: deferred to the next run
    OUT_OF_CREDITS = "out_of_credits"  # the account cannot pay: that provider stops for the run
    INVALID_OVERRIDES = "invalid_overrides"  # the product's own parameters are invalid: nothing ran
    NOT_STARTED = "not_started"  # the run was stopped before the product started
    CRASH = "crash"  # the product's chain raised an unexpected error


NOT_SUBMITTED = frozenset({Reason.BUDGET, Reason.DAILY_CAP, Reason.OUT_OF_CREDITS})


def reason_of(*errors: BaseException) -> Reason | None:
    """The code of the first error that has one."""
    for exc in errors:
        if isinstance(exc, BudgetExceeded):
            return Reason.BUDGET
        if isinstance(exc, QuotaExhausted):  # the run's Deferred included
            return Reason.DAILY_CAP
        if isinstance(exc, InsufficientCredits | ProviderBlocked):
            return Reason.OUT_OF_CREDITS
    return None
