"""Run parameters: pydantic models, so the Prefect UI renders a real form (titles, descriptions,
dropdowns for enums) and a bad value is refused before anything is spent.

Credentials are never parameters: they come from settings or Secret blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from providers.contract import (
    STEP_ORDER,
    APlusOptions,
    CopyOptions,
    ImageOptions,
    ScaleOptions,
    Step,
)

DEFAULT_CATALOG = "examples/catalog.csv"


def installed_choices(step: Step) -> Callable[[dict[str, Any]], None]:
    """The run form's choices for a step's provider: the installed providers that implement it, read
    from the plugin registry when the schema is built (at deploy time, or when the UI asks a served
    flow). The value stays a string to pydantic, so a provider missing on the worker is still refused
    with the run's own message naming the ones that are installed."""

    def add_enum(schema: dict[str, Any]) -> None:
        from listingflow.settings import Settings
        from providers.registry import load_providers

        try:
            names = load_providers(allow=Settings().providers).for_step(step)  # not cached: read now
        except Exception:  # noqa: BLE001 - no choices is a text field, never a broken form
            return
        if names:
            schema["enum"] = names

    return add_enum


class StepProviders(BaseModel):
    """Which installed provider runs each step."""

    copy_provider: str = Field("listingrva", alias="copy", title="Listing copy", description="provider for listing copy",
                               json_schema_extra=installed_choices(Step.COPY))  # fmt: skip
    images: str = Field("prodvisual", title="Images", description="provider for product images",
                        json_schema_extra=installed_choices(Step.IMAGES))  # fmt: skip
    aplus: str = Field("pixii", title="A+ content", description="provider for A+ content",
                       json_schema_extra=installed_choices(Step.APLUS))  # fmt: skip
    scale: str = Field("pixii", title="Variation scaling", description="provider for variation scaling",
                       json_schema_extra=installed_choices(Step.SCALE))  # fmt: skip

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def for_step(self, step: Step) -> str:
        return {
            Step.COPY: self.copy_provider,
            Step.IMAGES: self.images,
            Step.APLUS: self.aplus,
            Step.SCALE: self.scale,
        }[step]


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_credits: int | None = Field(None, ge=0, title="Max credits (total)", description="all providers")
    per_provider: dict[str, int] = Field(
        default_factory=dict, title="Max credits per provider", description="e.g. {\"pixii\": 500}"
    )


class RunParameters(BaseModel):
    """Everything one catalog run needs besides credentials and operator settings."""

    catalog: str = Field(DEFAULT_CATALOG, title="Catalog", description="CSV/JSON/JSONL path or s3:// URI")
    steps: list[Step] = Field(default_factory=lambda: list(STEP_ORDER), title="Steps to run", min_length=1)
    providers: StepProviders = Field(default_factory=StepProviders, title="Providers")
    copy_options: CopyOptions = Field(default_factory=CopyOptions, title="Listing copy options")
    image_options: ImageOptions = Field(default_factory=ImageOptions, title="Image options")
    aplus_options: APlusOptions = Field(default_factory=APlusOptions, title="A+ options")
    scale_options: ScaleOptions = Field(default_factory=ScaleOptions, title="Scale options")
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
        False, title="Resubmit unknown outcomes",
        description="send again the submissions an earlier run held with an unknown outcome (the provider "
        "may have processed and billed them: this MAY PAY TWICE; `listingflow unknown` lists them)",
    )
    regenerate_noncompliant: bool = Field(
        False, title="Regenerate non-compliant outputs",
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
        if Step.SCALE in self.steps and self.scale_options.mode == "language" and not self.scale_options.language:
            raise ValueError("scale_options.language is required when scale.mode is 'language'")
        return self

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
