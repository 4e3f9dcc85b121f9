"""The catalog flow: ``catalog_flow`` (what deployments run, its parameters the Prefect form) and
``observed_catalog_flow`` (the same run started by ``listingflow run``, with an observer).

The run itself is in flows/run.py, its outcome in flows/summary.py. ``RunSummary``, ``final_state``,
``run_catalog`` and ``select_products`` are importable from here as before.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Annotated, Any

# Prefect imports FastAPI's encoder on its way to creating a process's first flow run (to serialize
# the parameters): 0.12-0.13 s of CPU in the middle of the run's start, on the event loop the run's
# inputs and pre-flight share (cProfile of the benchmark's x10 start). Imported with the flow instead,
# as a long-running worker has it imported after its first run.
import fastapi.encoders  # noqa: F401
from prefect import flow, get_run_logger
from prefect.states import State
from pydantic import Field

from providers.contract import STEP_ORDER, APlusOptions, CopyOptions, ImageOptions, ScaleOptions, Step

from .compliance import report as compliance_report
from .limits.pool import lease_calls_wait_for
from .observer import RunObserver
from .params import DEFAULT_CATALOG, Budget, RunParameters, StepProviders
from .run import Prepared, discard_unused, prepare_run, run_catalog
from .selection import select_products
from .settings import get_settings
from .summary import RunSummary, final_state

__all__ = [
    "RunSummary",
    "catalog_flow",
    "final_state",
    "observed_catalog_flow",
    "run_catalog",
    "select_products",
]


def _title(name: str) -> Any:
    """A top-level parameter's form title: ``RunParameters``' title for it. Prefect titles a flow
    parameter with its bare name (``rerun_failed_of``) and ignores ``Field(title=...)`` there, but
    keeps ``json_schema_extra``, which is applied last."""
    return Field(json_schema_extra={"title": RunParameters.model_fields[name].title})


@flow(name="listingflow-catalog", log_prints=False, validate_parameters=True, persist_result=False)
async def catalog_flow(
    catalog: Annotated[str, _title("catalog")] = DEFAULT_CATALOG,
    steps: Annotated[list[Step], _title("steps")] = list(STEP_ORDER),  # noqa: B006
    providers: Annotated[StepProviders, _title("providers")] = StepProviders(),  # noqa: B008
    copy_options: Annotated[CopyOptions, _title("copy_options")] = CopyOptions(),  # noqa: B008
    image_options: Annotated[ImageOptions, _title("image_options")] = ImageOptions(),  # noqa: B008
    aplus_options: Annotated[APlusOptions, _title("aplus_options")] = APlusOptions(),  # noqa: B008
    scale_options: Annotated[ScaleOptions, _title("scale_options")] = ScaleOptions(),  # noqa: B008
    products: Annotated[list[str], _title("products")] = [],  # noqa: B006
    archive: Annotated[str | None, _title("archive")] = None,
    force: Annotated[list[Step], _title("force")] = [],  # noqa: B006
    rerun_failed_of: Annotated[str | None, _title("rerun_failed_of")] = None,
    resubmit_unknown: Annotated[bool, _title("resubmit_unknown")] = False,
    regenerate_noncompliant: Annotated[bool, _title("regenerate_noncompliant")] = False,
    budget: Annotated[Budget, _title("budget")] = Budget(),  # noqa: B008
    price_per_credit: Annotated[dict[str, float], _title("price_per_credit")] = {},  # noqa: B006
    currency: Annotated[str, _title("currency")] = "USD",
) -> State:
    """Generate listing copy, images, A+ content and variation images for a catalog.

    Args:
        catalog: CSV, JSON or JSONL catalog: a path (relative to the worker's checkout) or an s3:// URI.
        steps: The pipeline steps to run, in chain order.
        providers: The installed provider that runs each step.
        copy_options: Listing copy: platform, tone, components, seed keywords.
        image_options: Image styles (provider style ids), platform preset and size.
        aplus_options: A+ content types.
        scale_options: Variation scaling: mode, platforms and asset types.
        products: ASINs to run; empty runs the whole catalog.
        archive: Local folder or s3://bucket/prefix for the outputs; empty uses LISTINGFLOW_ARCHIVE.
        force: Steps to regenerate even where an earlier run paid for them (SPENDS CREDITS AGAIN).
        rerun_failed_of: Flow run id of an earlier run, or the path or s3:// URI of its run manifest
            (runs/RUN_ID/manifest.json in the archive). Only that run's failed, partial or deferred
            products run, with that run's parameters except those set here to a non-default value.
        resubmit_unknown: Send again the submissions an earlier run held with an unknown outcome: the
            provider may have processed and billed them, so this MAY PAY TWICE.
        regenerate_noncompliant: Pay once more for a step whose output fails its marketplace's
            compliance rules, if the budget allows (SPENDS CREDITS AGAIN; once per step).
        budget: Stop submitting past these credits, in total and per provider.
        price_per_credit: Money per credit for each provider, e.g. {"pixii": 0.05}, for the cost summary.
        currency: Currency of the prices per credit.
    """
    params = RunParameters.model_validate(dict(locals()))  # first: the locals are exactly the parameters
    return await _run_and_report(params, None)


async def observed_catalog_flow(params: RunParameters, observer: RunObserver | None = None) -> State:
    """The catalog flow for a run started in this process (``listingflow run``): the same run, with the
    parameters already validated and ``observer`` told its progress; its flow run's final state.
    Deployments run ``catalog_flow``.

    The run's inputs are loaded and pre-flight runs while Prefect creates the flow run, not after
    it: creating and starting a flow run is 0.1 s against an idle server and was 0.3-0.6 s beside a
    busy benchmark, all of it before the first provider request."""
    flow_run_exists = asyncio.Event()
    with lease_calls_wait_for(flow_run_exists):
        early = asyncio.ensure_future(prepare_run(params, get_settings()))
        token = _early.set((early, flow_run_exists))
        try:
            return await _observed_flow(params, observer, return_state=True)
        finally:
            flow_run_exists.set()
            _early.reset(token)
            await discard_unused(early)


_early: ContextVar[tuple[asyncio.Future[Prepared], asyncio.Event]] = ContextVar("listingflow_prepared")


@flow(name="listingflow-catalog", log_prints=False, validate_parameters=False, persist_result=False)
async def _observed_flow(params: RunParameters, observer: RunObserver | None = None) -> State:
    prepared, flow_run_exists = _early.get()  # set by observed_catalog_flow, its only caller
    flow_run_exists.set()
    return await _run_and_report(params, observer, prepared)


async def _run_and_report(
    params: RunParameters, observer: RunObserver | None, prepared: asyncio.Future[Prepared] | None = None
) -> State:
    """Run the catalog; log the headline and failures to the flow run; the final state carries the summary."""
    summary = await run_catalog(params, observer=observer, prepared=prepared)
    log = get_run_logger()
    log.info("%s; archive: %s", summary.headline(), summary.archive)
    for line in summary.failure_report():
        log.warning("%s", line)
    if compliance := compliance_report.summary_line(summary.products):
        log.info("%s", compliance)
    return final_state(summary)
