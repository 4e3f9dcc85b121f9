"""Work not submitted is found by typed reason codes, never by words in a message. Fast: no server."""

from __future__ import annotations

from flows.budget import BudgetExceeded
from flows.pipeline import ProductOutcome, StepOutcome
from flows.reasons import Reason, reason_of
from flows.runtime import Deferred, ProviderBlocked
from providers.contract import Step
from providers.errors import InsufficientCredits, QuotaExhausted, ServerError


def test_reason_of_names_the_money_reasons_only() -> None:
    assert reason_of(BudgetExceeded("no")) is Reason.BUDGET
    assert reason_of(QuotaExhausted("cap")) is reason_of(Deferred("cap")) is Reason.DAILY_CAP
    assert reason_of(InsufficientCredits("x")) is reason_of(ProviderBlocked("x")) is Reason.OUT_OF_CREDITS
    assert reason_of(ServerError("the budget service is down")) is None
    assert reason_of(ServerError("x"), BudgetExceeded("y")) is Reason.BUDGET


def test_not_submitted_reads_the_code_not_the_message() -> None:
    outcome = ProductOutcome(
        asin="B0X",
        country_code="US",
        title="T",
        steps={
            "copy": StepOutcome(
                step=Step.COPY,
                provider="listingrva",
                status="failed",
                error="[listingrva] 402",
                reason=Reason.OUT_OF_CREDITS,
            ),
            "images": StepOutcome(
                step=Step.IMAGES, provider="pixii", status="failed", error="the budget endpoint answered 500"
            ),
        },
    )
    assert outcome.record().not_submitted() == ["US/B0X copy: [listingrva] 402"]
    assert outcome.record().steps["copy"].reason is Reason.OUT_OF_CREDITS
