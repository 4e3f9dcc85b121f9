"""The run's money guards: ``Budget`` and the submission key that makes a paid job submitted once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from flows.runtime import Budget, BudgetExceeded, reset_current_run, set_current_run, submission_key
from providers.contract import Step
from providers.errors import PermanentError

# ---- Budget -------------------------------------------------------------------------------------


def test_a_job_that_would_pass_the_providers_cap_is_refused() -> None:
    budget = Budget(per_provider={"pixii": 100})
    budget.record("pixii", 60)
    budget.check("pixii", 40)  # exactly up to the cap is allowed
    with pytest.raises(BudgetExceeded, match="pixii has spent 60 of max 100 credits; this job would cost 41") as exc:
        budget.check("pixii", 41)
    assert exc.value.code == "BUDGET" and isinstance(exc.value, PermanentError)  # never retried
    budget.check("prodvisual", 10_000)  # another provider's cap is its own


def test_a_job_of_unknown_cost_is_refused_once_the_cap_is_spent() -> None:
    budget = Budget(per_provider={"pixii": 100}, max_total=500)
    budget.record("pixii", 99)
    budget.check("pixii", None)
    budget.record("pixii", 1)
    with pytest.raises(BudgetExceeded, match="would cost an unknown amount"):
        budget.check("pixii", None)


def test_the_run_total_counts_every_provider() -> None:
    budget = Budget(max_total=100)
    budget.record("pixii", 50)
    budget.record("listingrva", 30)
    budget.check("prodvisual", 20)
    with pytest.raises(BudgetExceeded, match="run has spent 80 of max 100 credits"):
        budget.check("prodvisual", 21)
    budget.record("prodvisual", 20)
    with pytest.raises(BudgetExceeded):
        budget.check("pixii", 0)


def test_nothing_recorded_for_free_or_unreported_charges_and_no_caps_means_no_limit() -> None:
    budget = Budget()
    budget.record("pixii", None)
    budget.record("pixii", 0)
    assert budget.spent == {}
    budget.record("pixii", 10**9)
    budget.check("pixii", 10**9)


# ---- submission_key -----------------------------------------------------------------------------


class ImageRequest(BaseModel):
    prompt: str
    options: dict[str, Any] = {}
    style: str | None = None


class OtherRequest(ImageRequest):
    pass


REQUEST = ImageRequest(prompt="a bottle", options={"size": "1024", "format": "png"})


def key(request: BaseModel = REQUEST, provider: str = "pixii", step: Step = Step.IMAGES, version: str = "1") -> str:
    return submission_key(provider, step, request, version)


def test_the_key_ignores_key_order_and_unset_optionals() -> None:
    reordered = ImageRequest(prompt="a bottle", options={"format": "png", "size": "1024"}, style=None)
    assert key(reordered) == key()
    assert key().startswith("submit-pixii-images-")


@pytest.mark.parametrize("changed", [
    {"provider": "prodvisual"},
    {"step": Step.APLUS},
    {"version": "2"},
    {"request": REQUEST.model_copy(update={"prompt": "a bottle "})},
    {"request": REQUEST.model_copy(update={"options": {"size": "1024", "format": "webp"}})},
    {"request": REQUEST.model_copy(update={"style": "lifestyle"})},
    {"request": OtherRequest(**REQUEST.model_dump())},
])  # fmt: skip
def test_anything_that_changes_what_is_bought_changes_the_key(changed: dict[str, Any]) -> None:
    assert key(**changed) != key()


def test_the_same_request_in_another_run_has_the_same_key() -> None:
    """A rerun must find the earlier run's submission instead of paying again."""
    keys = []
    for run_id in ("run-1", "run-2"):
        token = set_current_run(SimpleNamespace(run_id=run_id))  # type: ignore[arg-type]
        try:
            keys.append(key())
        finally:
            reset_current_run(token)
    assert keys[0] == keys[1] == key()
