"""The catalog flow: every product's chain, concurrently, under per-provider limits.

Products run concurrently (bounded ``asyncio.gather``: async task runs are cheap, thousands of
``.submit()`` futures are not); each product's chain runs in order; independent steps of different
products overlap. At the end: a run manifest, a ``cost-summary`` artifact (table and markdown) and
``cost-summary.json`` in the archive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from contextlib import AsyncExitStack
from functools import partial
from typing import Annotated, Any

import httpx
from prefect import flow, get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.context import FlowRunContext
from prefect.states import Cancelled, Completed, Failed, State
from pydantic import BaseModel, Field

from flows.settings import Settings, get_settings
from providers.contract import (
    STEP_ORDER,
    APlusOptions,
    CopyOptions,
    ImageOptions,
    Product,
    Provider,
    ScaleOptions,
    Step,
)
from providers.errors import redact
from providers.registry import load_providers

from .archive import (
    ArchiveUnavailable,
    SpooledArchive,
    json_with_list,
    open_archive,
    product_manifest_key,
    run_key,
)
from .batching import batches_across_products
from .catalog import Catalog, CatalogError, RowError, load_catalog
from .compliance import report as compliance_report
from .costs import CostSummary
from .estimate import estimate_run, over_budget
from .gallery import gallery_link, publish_gallery
from .held import HeldStore
from .intents import Intents
from .limits import ProviderLimiter, ensure_limits, limit_specs
from .observer import GuardedObserver, ProviderPlan, RunObserver, RunStart
from .params import DEFAULT_CATALOG, Budget, RunParameters, StepProviders
from .pipeline import ProductOutcome, ProductRecord, run_product
from .preflight import check_rows, check_run
from .reconcile import balance_checks
from .rerun import Rerun, log_rerun, plan_rerun
from .runtime import Budget as RunBudget
from .runtime import RunContext, gate_submissions, reset_current_run, set_current_run
from .stopping import RunStop
from .tasks import configure_tasks, forget_empty_task_assets

logger = logging.getLogger("listingflow")


class RunSummary(BaseModel):
    run_id: str
    catalog: str
    archive: str
    started_at: float
    finished_at: float
    products: list[ProductRecord] = Field(default_factory=list)
    rejected_rows: list[RowError] = Field(default_factory=list)
    cost: CostSummary | None = None
    refused: list[str] = Field(default_factory=list, description="why the run did not start")
    spooled: list[str] = Field(default_factory=list, description="outputs kept locally, archive down")
    notes: list[str] = Field(default_factory=list)
    interrupted: str | None = Field(None, description="why the run stopped early (SIGINT, SIGTERM)")
    in_flight: list[dict[str, Any]] = Field(
        default_factory=list, description="jobs left running, resumed next run"
    )
    gallery: str | None = Field(None, description="the run's review page: a file:// URL or an s3:// URI")

    def count(self, status: str) -> int:
        return sum(1 for p in self.products if p.status == status)

    @property
    def ok(self) -> bool:
        return (
            not self.refused
            and not self.interrupted
            and not any(p.status in ("failed", "partial") for p in self.products)
        )

    @property
    def status(self) -> str:
        """The run's outcome in one word, as the run manifest records it."""
        if self.refused:
            return "refused"
        if self.interrupted:
            return "interrupted"
        return "completed" if self.ok else "failed"

    def headline(self) -> str:
        if self.refused:
            return "run refused: " + "; ".join(self.refused)
        parts = [f"{self.count('complete')} complete"]
        for status in ("partial", "failed", "deferred", "interrupted", "skipped"):
            if self.count(status):
                parts.append(f"{self.count(status)} {status}")
        if self.rejected_rows:
            parts.append(f"{len(self.rejected_rows)} rejected rows")
        line = f"{len(self.products)} products: " + ", ".join(parts)
        if self.interrupted:
            jobs = len(self.in_flight)
            line = (
                f"run interrupted ({self.interrupted}): {line}; "
                f"{jobs} job{'' if jobs == 1 else 's'} in flight "
                "kept, the same command resumes them without paying again"
            )
        return line

    def failure_report(self, include_interrupted: bool = True) -> list[str]:
        lines = []
        for p in self.products:
            if p.status == "interrupted" and not include_interrupted:
                continue
            for failure in p.failures():
                lines.append(f"{p.key} {failure}")
        lines += [str(r) for r in self.rejected_rows]
        return lines


STOP_GRACE_SECONDS = 4.0
"""After a stop request, products still running this long (waiting for an in-flight slot, a download)
are cancelled; paid calls in progress are still let finish (``RunStop.finish``)."""


def _run_id() -> str:
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        return str(ctx.flow_run.id)
    return uuid.uuid4().hex


def select_products(
    params: RunParameters, catalog: Catalog, rerun: Rerun | None = None
) -> tuple[list[Product], list[str]]:
    """The catalog's products a run (or an estimate) covers, and notes on what was asked for and is
    not there: ``products`` matches an ASIN or a marketplace key (``DE/B0...``), in any case."""
    notes = []
    products = catalog.products
    if params.products:
        wanted = {a.strip().upper() for a in params.products}
        products = [p for p in products if p.asin.upper() in wanted or p.key.upper() in wanted]
        missing = wanted - {p.asin.upper() for p in products} - {p.key.upper() for p in products}
        if missing:
            notes.append(f"not in the catalog: {', '.join(sorted(missing))}")
    if rerun is not None:
        products = [p for p in products if p.key in rerun.failed]
        notes.append(f"rerunning {len(products)} failed/deferred product(s) of run {rerun.of}")
        notes.append(rerun.describe())
    return products, notes


async def _resolve_rerun(
    params: RunParameters, settings: Settings
) -> tuple[RunParameters, SpooledArchive, Rerun | None]:
    """The run's parameters and archive. A rerun's parameters are the original run's where this run does
    not give them (flows/rerun.py), so they are settled before anything reads them."""
    archive = _open_archive(params, settings)
    if not params.rerun_failed_of:
        return params, archive, None
    try:
        rerun = await plan_rerun(params, archive)
    except (ValueError, OSError, ArchiveUnavailable) as exc:
        raise _Refused(f"rerun_failed_of: {exc}") from None
    log_rerun(rerun)
    if (rerun.params.archive or settings.archive) != (params.archive or settings.archive):
        archive = _open_archive(rerun.params, settings)
    return rerun.params, archive, rerun


def _open_archive(params: RunParameters, settings: Settings) -> SpooledArchive:
    destination = params.archive or settings.archive
    try:
        return SpooledArchive(
            open_archive(destination, endpoint_url=settings.s3_endpoint_url), settings.spool_path
        )
    except Exception as exc:  # noqa: BLE001 - e.g. an archive URI without a bucket: one line, no traceback
        raise _Refused(f"archive {destination}: {exc}") from None


def _check_providers(params: RunParameters, registry: Any) -> list[str]:
    problems = []
    for step in params.ordered_steps():
        name = params.providers.for_step(step)
        if name not in registry.providers:
            why = registry.failures.get(name, "not installed")
            problems.append(f"providers.{step}: provider {name!r} is unavailable ({why})")
        elif step not in registry.providers[name].capabilities:
            able = ", ".join(registry.for_step(step)) or "none installed"
            problems.append(
                f"providers.{step}: {name!r} does not implement {step} (providers that do: {able})"
            )
    return problems


async def run_catalog(
    params: RunParameters,
    *,
    settings: Settings | None = None,
    observer: RunObserver | None = None,
) -> RunSummary:
    """One run: inputs and pre-flight checks (a refused run spends nothing), the products, the reports."""
    settings = settings or get_settings()
    summary = _new_summary(params, settings)
    try:
        inputs = await _load_inputs(params, settings, summary)
    except _Refused as refused:
        return _refuse(summary, refused.problems)
    async with AsyncExitStack() as stack:
        clients = await _open_providers(stack, inputs, settings)
        try:
            products = await _checked_products(inputs, clients, summary)
        except _Refused as refused:
            return _refuse(summary, refused.problems)
        run = RunContext(
            run_id=summary.run_id,
            settings=settings,
            params=inputs.params,
            providers=clients.providers,
            limiters=clients.limiters,
            download_http=clients.download_http,
            archive=inputs.archive,
            budget=RunBudget(
                max_total=inputs.params.budget.max_credits,
                per_provider=dict(inputs.params.budget.per_provider),
            ),
            held=HeldStore(settings.held_path),
            observer=GuardedObserver(observer or RunObserver()),
            start_balances=clients.balances,
        )
        await _run_checked(run, products, summary, inputs.names)
    summary.finished_at = time.time()
    await _publish(summary, inputs.params, inputs.archive)
    return summary


def _new_summary(params: RunParameters, settings: Settings) -> RunSummary:
    started = time.time()
    return RunSummary(
        run_id=_run_id(),
        catalog=params.catalog,
        archive=params.archive or settings.archive,
        started_at=started,
        finished_at=started,
    )


@dataclasses.dataclass
class _Inputs:
    """What a run reads before it opens any connection: its parameters (a rerun's merged in), the
    archive, the earlier run it repeats, the catalog and the providers its steps use."""

    params: RunParameters
    archive: SpooledArchive
    rerun: Rerun | None
    catalog: Catalog
    names: list[str]
    classes: dict[str, type[Provider]]


async def _load_inputs(params: RunParameters, settings: Settings, summary: RunSummary) -> _Inputs:
    """The run's inputs, or ``_Refused`` with every reason it cannot start."""
    registry = load_providers(allow=settings.providers, strict=settings.strict_plugins)
    params, archive, rerun = await _resolve_rerun(params, settings)
    summary.catalog, summary.archive = params.catalog, archive.uri
    problems = _check_providers(params, registry)
    if problems:
        raise _Refused(*problems)
    try:
        catalog = load_catalog(params.catalog, s3_endpoint_url=settings.s3_endpoint_url)
    except CatalogError as exc:
        raise _Refused(str(exc)) from None
    summary.rejected_rows = list(catalog.rejected)
    names = sorted({params.providers.for_step(s) for s in params.ordered_steps()})
    return _Inputs(params, archive, rerun, catalog, names, {n: registry.get(n) for n in names})


@dataclasses.dataclass
class _Clients:
    providers: dict[str, Provider]
    limiters: dict[str, ProviderLimiter]
    download_http: httpx.AsyncClient
    balances: dict[str, int] = dataclasses.field(default_factory=dict)  # read by pre-flight


async def _open_providers(stack: AsyncExitStack, inputs: _Inputs, settings: Settings) -> _Clients:
    """One HTTP client and limiter per provider (closed with ``stack``), and one for output downloads."""
    limiters = {n: ProviderLimiter.for_provider(inputs.classes[n], settings) for n in inputs.names}
    if settings.use_global_limits:
        await ensure_limits([spec for n in inputs.names for spec in limit_specs(inputs.classes[n], settings)])
    for limiter in limiters.values():
        stack.push_async_callback(limiter.aclose)
    providers = {}
    # one TLS context for every client: building one loads the CA bundle (~20 ms each, on the way to
    # the first request)
    tls = httpx.create_ssl_context()
    for n in inputs.names:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=TIMEOUT, limits=POOL, verify=tls))
        providers[n] = inputs.classes[n](http, throttle=gate_submissions(n, limiters[n].throttle))
        stack.push_async_callback(providers[n].aclose)
    download_http = await stack.enter_async_context(
        httpx.AsyncClient(timeout=TIMEOUT, limits=POOL, follow_redirects=False, verify=tls)
    )
    return _Clients(providers, limiters, download_http)


async def _checked_products(inputs: _Inputs, clients: _Clients, summary: RunSummary) -> list[Product]:
    """The products to run once pre-flight passed (nothing spent yet): credentials and archive, each
    row against its providers, the budget; ``_Refused`` otherwise."""
    checks = await check_run(clients.providers, inputs.archive, summary.run_id)
    if checks.problems:
        raise _Refused(*checks.problems)
    clients.balances = checks.balances
    await _replay_spool(inputs.archive, summary)
    products, notes = select_products(inputs.params, inputs.catalog, inputs.rerun)
    summary.notes += notes
    products, rejected = await check_rows(
        inputs.params, inputs.catalog, products, clients.providers, partial(_manifest, inputs.archive)
    )
    summary.rejected_rows += rejected
    over_budget = await _over_budget(inputs, products, clients)
    if over_budget:
        raise _Refused(*over_budget)
    return products


async def _run_checked(
    run: RunContext, products: list[Product], summary: RunSummary, names: list[str]
) -> None:
    """The products of a run that passed its pre-flight checks, told to the observer; fills in the summary."""
    token = set_current_run(run)
    run.observer.on_stoppable(run.stop)
    try:
        tasks = await configure_tasks(run.settings)
        run.intents = Intents(tasks.cache)
        run.observer.on_start(_run_start(run, products, names))
        records = await _run_products(run, tasks, products)
        await _summarize(summary, run, records, names)
    finally:
        reset_current_run(token)


def _run_start(run: RunContext, products: list[Product], names: list[str]) -> RunStart:
    """What the observer is told at the start: the jobs each provider is expected to take (the estimate,
    without reading manifests: reused jobs count as soon as they are found) and its limiter. Not
    estimated for an observer that ignores it (a deployment's run: thousands of products)."""
    jobs: dict[str, int] = dict.fromkeys(names, 0)
    if run.observer.wants_plan():
        for line in estimate_run(run.params, products, run.providers).lines:
            jobs[line.provider] = jobs.get(line.provider, 0) + line.jobs
    plans = {
        n: ProviderPlan(
            name=n,
            jobs=jobs.get(n, 0),
            limiter=run.limiters[n],
            batch_size=run.providers[n].limits.max_batch_size if batches_across_products(run, n) else 1,
        )
        for n in names
    }
    return RunStart(run_id=run.run_id, products=len(products), archive=run.archive.uri, providers=plans)


async def _summarize(
    summary: RunSummary, run: RunContext, records: list[ProductRecord | None], names: list[str]
) -> None:
    """Products, costs, balances and notes of a run that ran."""
    params = run.params
    summary.products = [r for r in records if r is not None]
    summary.spooled = list(run.archive.spooled)
    summary.cost = run.costs.summary(
        run.run_id,
        price_per_credit=params.price_per_credit,
        currency=params.currency,
        requests={n: run.limiters[n].requests for n in names},
        skipped=[line for p in summary.products for line in p.not_submitted()],
    )
    summary.cost.balances = await balance_checks(run.gates, summary.cost)
    summary.notes += [str(blocked) for blocked in run.blocked.values()]
    summary.notes += [b.text() for b in summary.cost.balances if not b.explained]
    summary.notes += [note for note in [run.budget.note()] if note]
    if run.stop.requested:
        summary.interrupted = run.stop.reason
        summary.in_flight = [dataclasses.asdict(j) for j in run.stop.in_flight.values()]


async def _over_budget(inputs: _Inputs, products: list[Product], clients: _Clients) -> list[str]:
    """Why the run's estimate does not fit its budget or a provider's balance (empty: it fits)."""
    params, providers = inputs.params, clients.providers
    if params.budget.max_credits is None and not params.budget.per_provider:
        return []
    manifests = {p.key: await _manifest(inputs.archive, p) for p in products}
    estimate = estimate_run(params, products, providers, manifests)
    balances = {
        n: clients.balances[n] if n in clients.balances else await _balance(providers[n]) for n in inputs.names
    }
    return over_budget(
        estimate,
        max_total=params.budget.max_credits,
        per_provider=params.budget.per_provider,
        balances=balances,
    )


class _Refused(Exception):
    """The run cannot start; each problem is one line that says why."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _refuse(summary: RunSummary, problems: list[str]) -> RunSummary:
    """The run does not start: nothing was submitted, and each problem is one line of the summary."""
    summary.refused = problems
    summary.finished_at = time.time()
    return summary


async def _replay_spool(archive: SpooledArchive, summary: RunSummary) -> None:
    try:
        replayed = await archive.replay_spool()
        if replayed:
            summary.notes.append(f"archived {len(replayed)} output(s) spooled by an earlier run")
    except ArchiveUnavailable as exc:
        summary.notes.append(f"archive still unreachable, spool kept: {exc}")


async def _manifest(archive: SpooledArchive, product: Product) -> dict[str, Any] | None:
    try:
        return await archive.get_json(
            product_manifest_key(archive.prefix, product.country_code, product.asin)
        )
    except (ArchiveUnavailable, ValueError):
        return None


async def _run_products(run: RunContext, tasks: Any, products: list[Product]) -> list[ProductRecord | None]:
    """Every product's chain, ``product_concurrency`` at a time; on a stop request the products not
    started are recorded as interrupted, and those still running after ``STOP_GRACE_SECONDS`` are
    cancelled."""
    progress = await _progress_artifact(len(products))
    records: list[ProductRecord | None] = [None] * len(products)
    queue = iter(enumerate(products))  # shared by the workers: each product is taken once
    running: set[asyncio.Task[ProductOutcome]] = set()
    secrets = run.secrets()
    done = 0
    last_update = 0.0

    async def worker() -> None:
        # A fixed set of workers rather than one waiting coroutine per product: a gather over
        # the whole catalog holds every product's task (and result) until the last one ends.
        nonlocal done, last_update
        for index, product in queue:
            if run.stop.requested:
                records[index] = _not_started(product).record()
                continue
            task = asyncio.create_task(run_product(run, tasks, product))
            running.add(task)
            try:
                outcome = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not task.cancelled() or (current is not None and current.cancelling()):
                    raise  # the run itself is being cancelled
                outcome = _not_started(product, "stopped while running: the run was stopped")
            except Exception as exc:  # noqa: BLE001 - one product never stops the others
                outcome = ProductOutcome(
                    asin=product.asin, country_code=product.country_code, title=product.title, status="failed"
                )
                outcome.steps["run"] = _crash_step(redact(f"{type(exc).__name__}: {exc}", secrets))
            finally:
                running.discard(task)
            records[index] = outcome.record()
            forget_empty_task_assets()
            done += 1
            run.observer.on_product_done(outcome, done, len(products))
            if progress is not None and (time.monotonic() - last_update > 2 or done == len(products)):
                last_update = time.monotonic()
                await aupdate_progress_artifact(
                    progress,
                    100.0 * done / max(1, len(products)),
                    description=f"{done}/{len(products)} products finished",
                )

    watcher = asyncio.create_task(_cancel_after_grace(run.stop, running))
    try:
        await asyncio.gather(*(worker() for _ in range(min(run.settings.product_concurrency, len(products)))))
    finally:
        watcher.cancel()
    if run.stop.requested:
        await run.stop.settle(timeout=STOP_GRACE_SECONDS)
    return records


async def _cancel_after_grace(stop: RunStop, running: set[asyncio.Task[Any]]) -> None:
    await stop.wait()
    if running:
        await asyncio.wait(set(running), timeout=STOP_GRACE_SECONDS)
    for task in list(running):
        task.cancel()


def _not_started(product: Product, why: str = "not started: the run was stopped") -> ProductOutcome:
    from .pipeline import StepOutcome
    from .reasons import Reason

    outcome = ProductOutcome(
        asin=product.asin, country_code=product.country_code, title=product.title, status="interrupted"
    )
    outcome.steps["run"] = StepOutcome(
        step=None, provider="-", status="interrupted", error=why, reason=Reason.NOT_STARTED
    )
    return outcome


TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# httpcore scans every pooled connection (a poll() and getpeername() each) for every request and response:
# with httpx's default 100 connections that was ~15% of the run's CPU at zero latency (cProfile, phase D).
# Requests to one provider are paced by its rate limit, so a few connections per client carry them.
# Idle connections are dropped after 4 s, before servers that close them at 5 s (uvicorn's default, as
# the sandboxes run, and many others): reusing one as the server closes it fails a request that was
# already written, and for a paid submission that is "outcome unknown" (benchmark phase E saw one in
# 5,000 products with httpx's default of 5 s).
POOL = httpx.Limits(max_connections=16, max_keepalive_connections=8, keepalive_expiry=4.0)


def _crash_step(message: str) -> Any:
    from .pipeline import StepOutcome
    from .reasons import Reason

    return StepOutcome(step=None, provider="-", status="failed", error=message, reason=Reason.CRASH)


async def _balance(provider: Any) -> int | None:
    try:
        return await provider.balance()
    except Exception:  # noqa: BLE001 - a balance we cannot read is simply unknown
        return None


async def _progress_artifact(total: int) -> Any:
    if FlowRunContext.get() is None:
        return None
    return await acreate_progress_artifact(0.0, description=f"0/{total} products finished")


async def _publish(summary: RunSummary, params: RunParameters, archive: SpooledArchive) -> None:
    """Run manifest, cost summary and review gallery into the archive; artifacts into Prefect."""
    manifest = run_manifest(summary, params)
    await _put_run_document(archive, summary, "manifest.json", manifest)
    cost = summary.cost.document() if summary.cost is not None else None
    if cost is not None:
        await _put_run_document(archive, summary, "cost-summary.json", cost)
    await _publish_gallery(summary, archive, manifest, cost)
    del manifest, cost  # not held while Prefect serializes the artifacts below
    if FlowRunContext.get() is None or summary.cost is None:
        return
    await acreate_table_artifact(
        summary.cost.table(),
        key="cost-summary",
        description=f"Credits per provider, step and product, run {summary.run_id}",
    )
    await acreate_markdown_artifact(
        _gallery_markdown(summary) + summary.cost.markdown() + "\n\n" + _failures_markdown(summary),
        key="cost-summary-report",
        description="Cost summary, failures and compliance",
    )


async def _publish_gallery(
    summary: RunSummary, archive: SpooledArchive, manifest: bytes, cost: bytes | None
) -> None:
    """``runs/<id>/index.html``: a page for reviewing the run is worth a note, never the run's outcome."""
    try:
        summary.gallery = gallery_link(await publish_gallery(archive, manifest, cost))
    except ArchiveUnavailable as exc:
        summary.notes.append(f"run index.html kept in the local spool: {exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. a template error: the run itself succeeded
        logger.warning("review gallery not written: %s: %s", type(exc).__name__, exc)
        summary.notes.append(f"review gallery not written: {type(exc).__name__}: {exc}")


def _gallery_markdown(summary: RunSummary) -> str:
    """A link to the review gallery above the cost report. A ``file://`` link opens only on the machine
    that holds the archive (and browsers may refuse it from the UI's page), so its text is the URL itself,
    to copy; an ``s3://`` URI is shown as code."""
    if not summary.gallery:
        return ""
    if summary.gallery.startswith("file://"):
        return f"**Review gallery:** [{summary.gallery}]({summary.gallery})\n\n"
    return f"**Review gallery:** `{summary.gallery}`\n\n"


def run_manifest(summary: RunSummary, params: RunParameters) -> bytes:
    """``runs/<id>/manifest.json``, one product line at a time (``json_with_list``: as one dict, it was
    ~3.7 MB of the publishing peak per 1,000 products, measured with tracemalloc)."""
    head = {
        "run_id": summary.run_id,
        "catalog": summary.catalog,
        "started_at": summary.started_at,
        "finished_at": summary.finished_at,
        "parameters": params.model_dump(mode="json", by_alias=True),
        "headline": summary.headline(),
        "rejected_rows": [r.model_dump() for r in summary.rejected_rows],
        "spooled": summary.spooled,
        "notes": summary.notes,
        "status": summary.status,
        "interrupted_by": summary.interrupted,
        "in_flight": summary.in_flight,
        "compliance": dict(compliance_report.tally(summary.products)),
    }
    products = (
        {
            "key": p.key,
            "asin": p.asin,
            "country_code": p.country_code,
            "status": p.status,
            "failures": p.failures(),
            "manifest": p.manifest_key,
            "compliance": p.compliance,
            "compliance_findings": p.compliance_findings,
            "compliance_reasons": list(p.compliance_reasons),
            "jobs": {s: list(o.jobs) for s, o in p.steps.items()},
        }
        for p in summary.products
    )
    return json_with_list(head, "products", products)


async def _put_run_document(archive: SpooledArchive, summary: RunSummary, name: str, body: bytes) -> None:
    try:
        await archive.put(
            run_key(archive.prefix, summary.run_id, name), body, content_type="application/json", metadata={}
        )
    except ArchiveUnavailable as exc:
        summary.notes.append(f"run {name} kept in the local spool: {exc}")


def _failures_markdown(summary: RunSummary) -> str:
    lines = [f"**{summary.headline()}**", ""]
    lines += [f"- {line}" for line in summary.failure_report()]
    if compliance := compliance_report.markdown(summary.products):
        lines += ["", compliance]
    if summary.notes:  # e.g. what a rerun kept of the failed run's parameters and what it overrode
        lines += ["", "**Notes:**", *[f"- {note}" for note in summary.notes]]
    return "\n".join(lines)


def final_state(summary: RunSummary) -> State:
    """The flow run's final state; its result is the summary
    (``await state.aresult(raise_on_failure=False)``)."""
    if summary.refused:
        return Failed(message=summary.headline(), data=summary)
    if summary.interrupted:
        return Cancelled(message=summary.headline(), data=summary)
    if not summary.ok:
        return Failed(
            message=summary.headline() + " | " + "; ".join(summary.failure_report()[:20]), data=summary
        )
    return Completed(message=summary.headline(), data=summary)


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


@flow(name="listingflow-catalog", log_prints=False, validate_parameters=False, persist_result=False)
async def observed_catalog_flow(params: RunParameters, observer: RunObserver | None = None) -> State:
    """The catalog flow for a run started in this process (``listingflow run``): the same run, with the
    parameters already validated and ``observer`` told its progress. Deployments run ``catalog_flow``."""
    return await _run_and_report(params, observer)


async def _run_and_report(params: RunParameters, observer: RunObserver | None) -> State:
    """Run the catalog; log the headline and failures to the flow run; the final state carries the summary."""
    summary = await run_catalog(params, observer=observer)
    log = get_run_logger()
    log.info("%s; archive: %s", summary.headline(), summary.archive)
    for line in summary.failure_report():
        log.warning("%s", line)
    if compliance := compliance_report.summary_line(summary.products):
        log.info("%s", compliance)
    return final_state(summary)
