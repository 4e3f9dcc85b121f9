"""The submission key that makes a paid job submitted once (the budget: tests/flows/test_budget.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from flows.runtime import reset_current_run, set_current_run, submission_key
from providers.contract import Step

# ---- submission_key -----------------------------------------------------------------------------


class ImageRequest(BaseModel):
    prompt: str
    options: dict[str, Any] = {}
    style: str | None = None


class OtherRequest(ImageRequest):
    pass


REQUEST = ImageRequest(prompt="a bottle", options={"size": "1024", "format": "png"})


def key(
    request: BaseModel = REQUEST, provider: str = "pixii", step: Step = Step.IMAGES, version: str = "1"
) -> str:
    return submission_key(provider, step, request, version)


def test_the_key_ignores_key_order_and_unset_optionals() -> None:
    reordered = ImageRequest(prompt="a bottle", options={"format": "png", "size": "1024"}, style=None)
    assert key(reordered) == key()
    assert key().startswith("submit-pixii-images-")


@pytest.mark.parametrize(
    "changed",
    [
        {"provider": "prodvisual"},
        {"step": Step.APLUS},
        {"version": "2"},
        {"request": REQUEST.model_copy(update={"prompt": "a bottle "})},
        {"request": REQUEST.model_copy(update={"options": {"size": "1024", "format": "webp"}})},
        {"request": REQUEST.model_copy(update={"style": "lifestyle"})},
        {"request": OtherRequest(**REQUEST.model_dump())},
    ],
)
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
