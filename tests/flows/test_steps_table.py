"""Each step is declared once, in ``providers.contract.STEPS``: what every part of a run knows about the
steps (the form, the run parameters, catalog overrides, the pipeline's graph, fan-out, the estimate,
pre-flight, the CLI, the deployments, the report order) comes from that table. The first test fails
when a consumer lists steps of its own; the others change one entry and watch the consumers follow."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel

from flows.catalog import _OVERRIDE_MODELS, KNOWN_OVERRIDES
from flows.catalog_flow import catalog_flow
from flows.costs import CostLedger, JobCost
from flows.estimate import estimate_run
from flows.gallery import STEP_TITLES
from flows.params import RunParameters, StepProviders
from flows.preflight import _row_problem
from listingflow.cli import app
from providers.contract import (
    STEP_ORDER,
    STEP_SPECS,
    STEPS,
    UPSTREAM_OUTPUTS,
    Product,
    Step,
    StepContext,
    Variation,
    one_per_variation,
)

ROOT = Path(__file__).resolve().parents[2]


def test_every_consumer_lists_exactly_the_steps_of_the_table() -> None:
    assert [s.step for s in STEPS] == list(STEP_ORDER) and set(STEP_SPECS) == set(Step)
    options = [s.options_field for s in STEPS]
    # the form: one provider choice per step, in the table's order, under the step's name
    schema = StepProviders.model_json_schema(by_alias=True)
    assert list(schema["properties"]) == [str(s) for s in STEP_ORDER]
    assert [p["default"] for p in schema["properties"].values()] == [s.default_provider for s in STEPS]
    assert [StepProviders().for_step(s.step) for s in STEPS] == [s.default_provider for s in STEPS]
    # run parameters, the context a provider builds from, catalog overrides
    assert RunParameters().steps == list(STEP_ORDER)
    assert [n for n in RunParameters.model_fields if n.endswith("_options")] == options
    for spec in STEPS:
        assert RunParameters.model_fields[spec.options_field].annotation is spec.options_model
        assert RunParameters.model_fields[spec.options_field].title == spec.options_title
        assert StepContext.model_fields[spec.options_field].annotation is spec.options_model
    assert set(RunParameters().step_options()) == set(options)
    assert KNOWN_OVERRIDES == {"steps", "providers", *options} == set(_OVERRIDE_MODELS)
    # the flow's signature (what Prefect builds the form and validates runs from) is RunParameters'
    signature = inspect.signature(catalog_flow.fn)
    assert set(signature.parameters) == set(RunParameters.model_fields)
    assert signature.parameters["steps"].default == list(STEP_ORDER)
    # the pipeline's graph: each output a later step can read comes from the step declaring it
    assert {s.produces: s.step for s in STEPS if s.produces} == UPSTREAM_OUTPUTS
    # reports: the gallery's sections, in the table's order and with its titles
    assert list(STEP_TITLES.items()) == [(str(s.step), s.title) for s in STEPS]


def test_the_cli_and_the_deployments_name_only_the_tables_steps() -> None:
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    [option] = [p for p in run.params if "--step" in p.opts]
    assert option.help == f"step to run (repeat): {', '.join(STEP_ORDER)}"
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    for deployment in deployments:  # a full list here would stop a new step running on schedule
        assert "steps" not in (deployment.get("parameters") or {}), deployment["name"]


class Request(BaseModel):
    step: str
    asin: str


class CountingPlugin:
    """One request per context at one credit; the image-reading steps declare it."""

    def build_requests(self, step: Step, ctx: StepContext) -> list[Request]:
        return [
            Request(
                step=str(step),
                asin=ctx.variation.asin if ctx.variation else ctx.product.asin,
            )
        ]

    def estimate_credits(self, step: Step, request: Request) -> int:
        return 1

    def check_product(self, step: Step, ctx: StepContext) -> str | None:
        return None

    async def acheck_product(self, step: Step, ctx: StepContext) -> str | None:
        return self.check_product(step, ctx)


PLUGINS: dict[str, Any] = {
    "listingrva": CountingPlugin(),
    "prodvisual": CountingPlugin(),
    "pixii": CountingPlugin(),
}


def swap(monkeypatch: pytest.MonkeyPatch, step: Step, **changes: Any) -> None:
    """Change one entry of the table for this test (consumers look entries up when they run)."""
    monkeypatch.setitem(STEP_SPECS, step, dataclasses.replace(STEP_SPECS[step], **changes))


def test_fan_out_comes_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    product = Product(
        asin="B0TABLE001",
        country_code="US",
        title="A bottle",
        image_urls=["https://x/1.png"],
        variations=[Variation(asin="B0TABLE00A"), Variation(asin="B0TABLE00B")],
    )
    jobs = {ln.step: ln.jobs for ln in estimate_run(RunParameters(), [product], PLUGINS).lines}
    assert jobs == {"copy": 1, "images": 1, "aplus": 1, "scale": 2}
    swap(monkeypatch, Step.APLUS, fan_out=one_per_variation)  # A+ for each child ASIN instead
    jobs = {ln.step: ln.jobs for ln in estimate_run(RunParameters(), [product], PLUGINS).lines}
    assert jobs == {"copy": 1, "images": 1, "aplus": 2, "scale": 2}


async def test_what_a_step_requires_comes_from_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    product = Product(asin="B0TABLE002", country_code="US", title="A bottle")  # no image, no earlier run

    async def no_manifest(product: Product) -> None:
        return None

    params = RunParameters(steps=[Step.COPY, Step.APLUS])
    assert await _row_problem(params, product, PLUGINS, no_manifest) == (
        "image_url",
        "aplus (pixii) needs a main image: run the images step first or give image_url",
    )
    swap(monkeypatch, Step.APLUS, requires=frozenset())
    assert await _row_problem(params, product, PLUGINS, no_manifest) is None
    swap(monkeypatch, Step.COPY, requires=frozenset({"image"}))
    assert (await _row_problem(params, product, PLUGINS, no_manifest) or ("", ""))[1].startswith(
        "copy (listingrva)"
    )


def test_a_steps_option_rule_comes_from_the_table_and_holds_only_when_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    language = {"scale_options": {"mode": "language"}}
    with pytest.raises(ValueError, match=r"scale_options\.language is required"):
        RunParameters.model_validate(language)
    RunParameters.model_validate({**language, "steps": ["copy"]})  # Scale does not run: no rule
    swap(monkeypatch, Step.COPY, check=lambda options: f"tone {options.tone} refused")
    with pytest.raises(ValueError, match="tone professional refused"):
        RunParameters.model_validate({"steps": ["copy"]})
    RunParameters.model_validate({"steps": ["images"]})


def test_reports_list_a_providers_steps_in_the_tables_order() -> None:
    """Alphabetically Pixii's steps would read aplus, images, scale; reports follow the table."""
    product = Product(
        asin="B0TABLE003",
        country_code="US",
        title="A bottle",
        variations=[Variation(asin="B0TABLE00C")],
    )
    estimate = estimate_run(RunParameters(providers={"images": "pixii"}), [product], PLUGINS)
    expected = [
        ("listingrva", "copy"),
        ("pixii", "images"),
        ("pixii", "aplus"),
        ("pixii", "scale"),
    ]
    assert [(ln.provider, ln.step) for ln in estimate.lines] == expected
    ledger = CostLedger()
    for provider, step in reversed(expected):
        ledger.add(
            JobCost(
                provider=provider,
                step=step,
                product="US/B0TABLE003",
                job_id=step,
                charged=1,
            )
        )
    summary = ledger.summary("run", price_per_credit={})
    assert [(ln.provider, ln.step) for ln in summary.by("step")] == expected
    assert [(ln.provider, ln.step) for ln in summary.product_lines()] == expected
