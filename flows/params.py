"""Run parameters: pydantic models, so the Prefect UI renders a real form (titles, descriptions,
dropdowns for enums) and a bad value is refused before anything is spent.

Credentials are never parameters: they come from settings or Secret blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from providers.contract import (
    STEP_ORDER,
    STEP_SPECS,
    STEPS,
    APlusOptions,
    CopyOptions,
    ImageOptions,
    Product,
    ScaleOptions,
    Step,
    StepContext,
    StepSpec,
)

DEFAULT_CATALOG = "examples/catalog.csv"


def installed_choices(step: Step) -> Callable[[dict[str, Any]], None]:
    """The run form's choices for a step's provider: the installed providers that implement it, read
    from the plugin registry when the schema is built (at deploy time, or when the UI asks a served
    flow). The value stays a string to pydantic, so a provider missing on the worker is still refused
    with the run's own message naming the ones that are installed."""

    def add_enum(schema: dict[str, Any]) -> None:
        from flows.settings import Settings
        from providers.registry import load_providers

        try:
            names = load_providers(allow=Settings().providers).for_step(step)  # not cached: read now
        except Exception:  # noqa: BLE001 - no choices is a text field, never a broken form
            return
        if names:
            schema["enum"] = names

    return add_enum


def provider_field(step: Step) -> str:
    """``StepProviders``' field for a step: the step's name, or ``<name>_provider`` where the name is
    taken by pydantic (``copy``); the step's name stays the alias the form, the CLI and saved runs use."""
    return f"{step}_provider" if hasattr(BaseModel, str(step)) else str(step)


class _StepProvidersBase(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def for_step(self, step: Step) -> str:
        return str(getattr(self, provider_field(step)))


def _provider_choice(spec: StepSpec) -> Any:
    alias = str(spec.step) if provider_field(spec.step) != spec.step else None
    return (
        str,
        Field(
            spec.default_provider,
            alias=alias,
            title=spec.provider_title,
            description=spec.provider_description,
            json_schema_extra=installed_choices(spec.step),
        ),
    )


if TYPE_CHECKING:  # a type checker sees the base; the code reads a step's provider with for_step

    class StepProviders(_StepProvidersBase):
        def __init__(self, **data: Any) -> None: ...

else:
    StepProviders = create_model(  # one field per step of the table, in its order
        "StepProviders",
        __base__=_StepProvidersBase,
        __doc__="Which installed provider runs each step.",
        __module__=__name__,
        **{provider_field(s.step): _provider_choice(s) for s in STEPS},
    )


def options_field(step: Step) -> Any:
    """A run parameter holding a step's options, as the table declares it (model and title)."""
    spec = STEP_SPECS[step]
    return Field(default_factory=spec.options_model, title=spec.options_title)


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_credits: int | None = Field(None, ge=0, title="Max credits (total)", description="all providers")
    per_provider: dict[str, int] = Field(
        default_factory=dict, title="Max credits per provider", description='e.g. {"pixii": 500}'
    )


class RunParameters(BaseModel):
    """Everything one catalog run needs besides credentials and operator settings."""

    catalog: str = Field(DEFAULT_CATALOG, title="Catalog", description="CSV/JSON/JSONL path or s3:// URI")
    steps: list[Step] = Field(default_factory=lambda: list(STEP_ORDER), title="Steps to run", min_length=1)
    providers: StepProviders = Field(default_factory=StepProviders, title="Providers")
    # typed here for the code that reads them; model and title come from the table (checked below)
    copy_options: CopyOptions = options_field(Step.COPY)
    image_options: ImageOptions = options_field(Step.IMAGES)
    aplus_options: APlusOptions = options_field(Step.APLUS)
    scale_options: ScaleOptions = options_field(Step.SCALE)
    products: list[str] = Field(
        default_factory=list, title="Products", description="ASINs to run; empty = the whole catalog"
    )
    archive: str | None = Field(
        None, title="Archive", description="local folder or s3://bucket/prefix; default from settings"
    )
    force: list[Step] = Field(
        default_factory=list,
        title="Force regenerate",
        description="steps to regenerate even if an earlier run paid for them (SPENDS CREDITS AGAIN)",
    )
    rerun_failed_of: str | None = Field(
        None,
        title="Rerun failed products of",
        description="flow run id or run-manifest path of an earlier run: only its failed/partial/deferred "
        "products run, with its parameters except those set to a non-default value here",
    )
    resubmit_unknown: bool = Field(
        False,
        title="Resubmit unknown outcomes",
        description="send again the submissions an earlier run held with an unknown outcome (the provider "
        "may have processed and billed them: this MAY PAY TWICE; `listingflow unknown` lists them)",
    )
    regenerate_noncompliant: bool = Field(
        False,
        title="Regenerate non-compliant outputs",
        description="pay once more for a step whose output fails its marketplace's compliance rules, if the "
        "budget allows (SPENDS CREDITS AGAIN; once per step, never again in later runs)",
    )
    budget: Budget = Field(default_factory=Budget, title="Credit budget")
    price_per_credit: dict[str, float] = Field(
        default_factory=dict, title="Price per credit", description="provider -> money per credit"
    )
    currency: str = Field("USD", max_length=8, title="Currency")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> RunParameters:
        unknown = [s for s in self.force if s not in self.steps]
        if unknown:
            raise ValueError(f"force names steps that are not run: {[str(s) for s in unknown]}")
        for step in self.ordered_steps():
            check = STEP_SPECS[step].check
            reason = check(self.options_for(step)) if check else None
            if reason:
                raise ValueError(reason)
        return self

    def options_for(self, step: Step) -> BaseModel:
        options: BaseModel = getattr(self, STEP_SPECS[step].options_field)
        return options

    def step_options(self) -> dict[str, BaseModel]:
        """Every step's options by parameter name, as ``StepContext`` takes them."""
        return {s.options_field: self.options_for(s.step) for s in STEPS}

    def context_for(self, product: Product, **fields: Any) -> StepContext:
        """The context a provider builds ``product``'s requests from, with every step's options."""
        return StepContext.model_validate({"product": product, **self.step_options(), **fields})

    def ordered_steps(self) -> list[Step]:
        return [s for s in STEP_ORDER if s in self.steps]

    def for_product(self, overrides: dict[str, Any]) -> RunParameters:
        """This run's parameters with a product's per-row overrides applied."""
        if not overrides:
            return self
        data = self.model_dump(by_alias=True)
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return RunParameters.model_validate(data)


_declared = {n for n in RunParameters.model_fields if n.endswith("_options")}
if _declared != {s.options_field for s in STEPS}:  # a step added to the table needs its typed field
    raise RuntimeError(f"RunParameters' options {sorted(_declared)} differ from the steps' table")
