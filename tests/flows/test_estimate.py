"""The pre-flight estimate and the refusal to start a run over budget. Fast: fake plugins with fixed
prices stand in for the providers (their real prices are tested with each plugin)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from flows.estimate import Estimate, EstimateLine, estimate_run, over_budget
from flows.params import RunParameters
from providers.contract import Product, Step, StepContext, Variation
from providers.errors import RequestValidationError


class Request(BaseModel):
    step: str
    asin: str


class FakePlugin:
    """``requests`` jobs per step and product (Scale: per variation) at ``prices`` credits each
    (None: unpublished); a product titled "invalid" fails validation."""

    def __init__(self, prices: dict[Step, int | None], requests: int = 1) -> None:
        self.prices, self.requests = prices, requests

    def build_requests(self, step: Step, ctx: StepContext) -> list[Request]:
        if ctx.product.title == "invalid":
            raise RequestValidationError("title is not allowed", field="title")
        asin = ctx.variation.asin if ctx.variation is not None else ctx.product.asin
        return [Request(step=str(step), asin=asin)] * self.requests

    def estimate_credits(self, step: Step, request: Request) -> int | None:
        return self.prices[step]


PROVIDERS: dict[str, Any] = {
    "listingrva": FakePlugin({Step.COPY: 2}),
    "prodvisual": FakePlugin({Step.IMAGES: 5}, requests=2),
    "pixii": FakePlugin({Step.APLUS: 10, Step.SCALE: None}),
}


def product(asin: str, *, variations: int = 0, title: str = "A bottle") -> Product:
    return Product(
        asin=asin,
        country_code="US",
        title=title,
        variations=[Variation(asin=f"{asin[:-1]}{n}") for n in range(1, variations + 1)],
    )


def lines(estimate: Estimate) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    return {
        (ln.provider, ln.step): (ln.jobs, ln.credits, ln.unknown_jobs, ln.already_done)
        for ln in estimate.lines
    }


def test_every_job_of_every_step_is_counted_at_its_price() -> None:
    estimate = estimate_run(
        RunParameters(), [product("B0EST00001", variations=3), product("B0EST00002")], PROVIDERS
    )
    assert lines(estimate) == {
        ("listingrva", "copy"): (2, 4, 0, 0),
        ("prodvisual", "images"): (4, 20, 0, 0),
        ("pixii", "aplus"): (2, 20, 0, 0),
        ("pixii", "scale"): (3, 0, 3, 0),  # one job per variation; unpublished price: unknown, never free
    }
    assert (
        estimate.credits_for() == 44 and estimate.credits_for("pixii") == 20 and estimate.unknown_for() == 3
    )


def test_only_the_chosen_steps_are_counted() -> None:
    params = RunParameters(steps=[Step.COPY, Step.APLUS])
    assert set(lines(estimate_run(params, [product("B0EST00001")], PROVIDERS))) == {
        ("listingrva", "copy"),
        ("pixii", "aplus"),
    }


def test_steps_an_earlier_run_produced_are_not_counted_unless_forced() -> None:
    p = product("B0EST00001")
    manifest = {
        "steps": {
            "copy": {"status": "done", "provider": "listingrva"},
            "images": {"status": "reused", "provider": "prodvisual"},
            "aplus": {"status": "done", "provider": "another-provider"},
            "scale": {"status": "failed", "provider": "pixii"},
        }
    }
    estimate = estimate_run(
        RunParameters(steps=[Step.COPY, Step.IMAGES, Step.APLUS]), [p], PROVIDERS, {p.key: manifest}
    )
    assert lines(estimate) == {
        ("listingrva", "copy"): (0, 0, 0, 1),
        ("prodvisual", "images"): (0, 0, 0, 1),
        ("pixii", "aplus"): (1, 10, 0, 0),  # done by another provider: this one is paid anew
    }
    forced = estimate_run(
        RunParameters(steps=[Step.COPY], force=[Step.COPY]), [p], PROVIDERS, {p.key: manifest}
    )
    assert lines(forced) == {("listingrva", "copy"): (1, 2, 0, 0)}


def test_a_product_whose_requests_are_invalid_is_listed_not_counted() -> None:
    estimate = estimate_run(
        RunParameters(steps=[Step.COPY]),
        [product("B0EST00001"), product("B0EST00002", title="invalid")],
        PROVIDERS,
    )
    assert lines(estimate) == {("listingrva", "copy"): (1, 2, 0, 0)}
    assert len(estimate.invalid) == 1 and estimate.invalid[0].startswith("US/B0EST00002 copy: ")
    assert "title is not allowed" in estimate.invalid[0]


ESTIMATE = Estimate(
    lines=[
        EstimateLine(provider="pixii", step="aplus", jobs=3, credits=30),
        EstimateLine(provider="pixii", step="scale", jobs=2, credits=20, unknown_jobs=1),
        EstimateLine(provider="listingrva", step="copy", jobs=5, credits=10),
    ]
)


def test_a_run_within_every_limit_may_start() -> None:
    assert (
        over_budget(
            ESTIMATE,
            max_total=60,
            per_provider={"pixii": 50, "listingrva": 10},
            balances={"pixii": 50, "listingrva": None},
        )
        == []
    )
    assert over_budget(ESTIMATE, max_total=None, per_provider={}, balances={}) == []


def test_each_exceeded_limit_is_a_reason_to_refuse() -> None:
    reasons = over_budget(
        ESTIMATE,
        max_total=59,
        per_provider={"pixii": 49, "listingrva": 10},
        balances={"pixii": 100, "listingrva": 9},
    )
    assert reasons == [
        "estimated 60 credits exceed max_credits 59",
        "pixii: estimated 50 credits exceed its max 49",
        "listingrva: estimated 10 credits exceed the balance 9",
    ]


def test_an_unknown_balance_is_no_reason_to_refuse() -> None:
    assert over_budget(ESTIMATE, max_total=None, per_provider={}, balances={"pixii": None}) == []
