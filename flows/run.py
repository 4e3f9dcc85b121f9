"""One catalog run: its inputs and pre-flight checks (a refused run spends nothing), the products, the
reports.

Products run concurrently (bounded ``asyncio.gather``: async task runs are cheap, thousands of
``.submit()`` futures are not); each product's chain runs in order; independent steps of different
products overlap (flows/run_products.py). At the end: a run manifest, a ``cost-summary`` artifact
(table and markdown) and ``cost-summary.json`` in the archive (flows/publish.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import httpx
from prefect.context import FlowRunContext

from flows.settings import Settings, get_settings
from providers.contract import Product, Provider

from .batching import batches_across_products
from .estimate import estimate_run
from .held import HeldStore
from .intents import Intents
from .limits import ProviderLimiter, ensure_limits, limit_specs
from .limits.client import warm_prefect_tls
from .observer import GuardedObserver, ProviderPlan, RunObserver, RunStart
from .params import RunParameters
from .pipeline import ProductRecord
from .publish import publish_run
from .reconcile import balance_checks
from .run_inputs import Refused, RunInputs, checked_products, load_inputs
from .run_products import run_products
from .runtime import Budget as RunBudget
from .runtime import RunContext, gate_submissions, past_the_stop, reset_current_run, set_current_run
from .summary import ProductRecords, RunSummary
from .tasks import TaskSet, configure_tasks

_T = TypeVar("_T")
END_BALANCE_AFTER_STOP_SECONDS = 3.0  # a stopped run must exit promptly: an end balance is not worth a wait


async def run_catalog(
    params: RunParameters,
    *,
    settings: Settings | None = None,
    observer: RunObserver | None = None,
    prepared: Awaitable[Prepared] | None = None,
) -> RunSummary:
    """One run: inputs and pre-flight checks (a refused run spends nothing), the products, the reports.
    ``prepared``: the inputs and pre-flight already under way (``prepare_run``, started before the
    flow run), else they are prepared here."""
    settings = settings or get_settings()
    ready = await (prepared if prepared is not None else prepare_run(params, settings))
    ready.taken = True
    summary = ready.summary
    summary.run_id = _run_id()
    if ready.inputs is None or ready.clients is None or ready.tasks is None:
        await ready.stack.aclose()
        return summary  # refused: nothing was submitted
    inputs, clients, products = ready.inputs, ready.clients, ready.products
    try:
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
            start_balances=ready.balances,
        )
        run.on_first_submission = _prime_once(ready.stack, clients, len(products))
        await _run_checked(run, await ready.tasks, products, summary, inputs.names)
    except BaseException:
        await ready.stack.aclose()
        raise
    summary.finished_at = time.time()
    await _close_and_publish(ready.stack, summary, inputs)
    return summary


async def _close_and_publish(stack: AsyncExitStack, summary: RunSummary, inputs: RunInputs) -> None:
    """The run's clients closed and its slots given back while its documents and artifacts are
    published: publishing uses neither, and each pool's give-back is a lease call, one at a time
    (0.03 s at the end of the benchmark's runs)."""
    outcomes = await asyncio.gather(
        stack.aclose(), publish_run(summary, inputs.params, inputs.archive), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


@dataclasses.dataclass
class Prepared:
    """A run's inputs, provider clients and pre-flight outcome; ``stack`` closes the clients. Without
    ``inputs`` the run was refused (``summary.refused`` says why). ``taken`` once a run uses it."""

    summary: RunSummary
    stack: AsyncExitStack
    inputs: RunInputs | None = None
    tasks: asyncio.Task[TaskSet] | None = None
    clients: _Clients | None = None
    products: list[Product] = dataclasses.field(default_factory=list)
    balances: dict[str, int] = dataclasses.field(default_factory=dict)
    taken: bool = False


async def prepare_run(params: RunParameters, settings: Settings) -> Prepared:
    """Inputs, provider clients and pre-flight checks: everything before the first paid request that
    needs no flow run (its id is set once the run starts: ``RunSummary.run_id`` is a stand-in until
    then), so the CLI runs it while Prefect creates the flow run."""
    _freeze_startup_objects()
    summary = _new_summary(params, settings)
    try:
        inputs = await load_inputs(params, settings, summary)
    except Refused as refused:
        return Prepared(_refuse(summary, refused.problems), AsyncExitStack())
    stack = AsyncExitStack()
    try:
        # the tasks' result storage is read from the server while the limits are set and pre-flight
        # runs: all three are server or provider round trips on the way to the first paid request
        tasks = _in_background(stack, configure_tasks(settings))
        clients = await _open_providers(stack, inputs, settings)
        _ask_ahead(clients)
        products, balances = await checked_products(inputs, clients.providers, summary)
    except Refused as refused:
        await stack.aclose()
        return Prepared(_refuse(summary, refused.problems), AsyncExitStack())
    except BaseException:
        await stack.aclose()
        raise
    return Prepared(summary, stack, inputs, tasks, clients, products, balances)


def _freeze_startup_objects() -> None:
    """Once per process: the objects alive as its first run starts (the modules of Prefect and its
    dependencies, their classes and caches) leave the garbage collector's generations (``gc.freeze``).
    Every full collection walked them all, 65-85 ms of the event loop each; at a run's start one fell
    between the last image joining ProdVisual's batch and the batch's lease call (cProfile, benchmark
    x10). They live as long as the process; the collector still walks everything made after."""
    if gc.get_freeze_count() == 0:
        gc.freeze()


async def discard_unused(prepared: asyncio.Future[Prepared]) -> None:
    """A preparation no run took (the flow run did not start): stopped, its clients closed."""
    if not prepared.done():
        prepared.cancel()
    (outcome,) = await asyncio.gather(prepared, return_exceptions=True)
    if isinstance(outcome, Prepared) and not outcome.taken:
        await outcome.stack.aclose()


def _new_summary(params: RunParameters, settings: Settings) -> RunSummary:
    started = time.time()
    return RunSummary(
        run_id=_run_id(),
        catalog=params.catalog,
        archive=params.archive or settings.archive,
        started_at=started,
        finished_at=started,
    )


def _run_id() -> str:
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        return str(ctx.flow_run.id)
    return uuid.uuid4().hex


@dataclasses.dataclass
class _Clients:
    providers: dict[str, Provider]
    limiters: dict[str, ProviderLimiter]
    download_http: httpx.AsyncClient


async def _open_providers(stack: AsyncExitStack, inputs: RunInputs, settings: Settings) -> _Clients:
    """One HTTP client and limiter per provider (closed with ``stack``), and one for output downloads."""
    limiters = {n: ProviderLimiter.for_provider(inputs.classes[n], settings) for n in inputs.names}
    # One TLS context for every provider client, and the lease calls' Prefect client context, built in
    # threads before the first of those calls (``ensure_limits``) needs it: loading the CA bundle
    # takes ~16-35 ms each and lets go of the GIL, while Prefect creates the flow run on this loop.
    tls, _ = await asyncio.gather(asyncio.to_thread(httpx.create_ssl_context), warm_prefect_tls())
    if settings.use_global_limits:
        await ensure_limits([spec for n in inputs.names for spec in limit_specs(inputs.classes[n], settings)])

    async def close_limiters() -> None:  # each gives slots back to the server: all at once
        await asyncio.gather(*(limiter.aclose() for limiter in limiters.values()))

    stack.push_async_callback(close_limiters)
    providers = {}
    for n in inputs.names:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=TIMEOUT, limits=POOL, verify=tls))
        providers[n] = inputs.classes[n](http, throttle=gate_submissions(n, limiters[n].throttle))
        stack.push_async_callback(providers[n].aclose)
    download_http = await stack.enter_async_context(
        httpx.AsyncClient(timeout=TIMEOUT, limits=POOL, follow_redirects=False, verify=tls)
    )
    return _Clients(providers, limiters, download_http)


TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# httpcore scans every pooled connection (a poll() and getpeername() each) for every request and response:
# with httpx's default 100 connections that was ~15% of the run's CPU at zero latency (cProfile, phase D).
# Requests to one provider are paced by its rate limit, so a few connections per client carry them.
# Idle connections are dropped after 4 s, before servers that close them at 5 s (uvicorn's default, as
# the sandboxes run, and many others): reusing one as the server closes it fails a request that was
# already written, and for a paid submission that is "outcome unknown" (benchmark phase E saw one in
# 5,000 products with httpx's default of 5 s).
POOL = httpx.Limits(max_connections=16, max_keepalive_connections=8, keepalive_expiry=4.0)


async def _finish(work: asyncio.Future[Any]) -> None:
    """Let ``work`` end (its outcome dropped) rather than cancel it: a lease request cut off on its
    way would leave slots held on the server for a whole lease, out of this process's reach."""
    await asyncio.gather(work, return_exceptions=True)


FIRST_REQUESTS = 3  # of a batching provider: pre-flight's balance read, the first batch, its first poll


def _ask_ahead(clients: _Clients) -> None:
    """Pre-flight's balance read of a batching provider takes the slots of the run's first batch and
    its first poll with its own, in one lease: the batch waited 0.03 s for a lease of its own (the
    priming's, started by the first submission) against a server busy with the run's start. A rerun
    that sends nothing holds two slots more for one window."""
    for name, limiter in clients.limiters.items():
        if clients.providers[name].limits.max_batch_size > 1:
            limiter.ask_ahead(FIRST_REQUESTS)


def _prime_once(stack: AsyncExitStack, clients: _Clients, products: int) -> Callable[[], None]:
    """``RunContext.on_first_submission``: the first call starts ``_prime`` (later ones do nothing);
    the run's end lets it finish before the limiters give their slots back. Not before: a rerun of
    a finished catalog would take slots it never uses, and on Prefect's SQLite server each lease
    call meeting another write waits ~2 s (a rerun took 7.5 s instead of 4.4 s)."""
    started: list[asyncio.Future[None]] = []

    def start() -> None:
        if not started:
            started.append(asyncio.ensure_future(_prime(clients, products)))
            stack.push_async_callback(_finish, started[0])

    return start


async def _prime(clients: _Clients, products: int) -> None:
    """Each provider's first slots (one per product, within each limit; ``ProviderLimiter.prime``),
    so the first batch and the first window of Pixii submissions find them ready. The lease calls
    go one at a time (``server_turn``; requests waiting for a slot first), batching providers'
    first: their first request carries every product's items (ProdVisual's batch waited ~0.1 s
    behind ListingRVA's four pools). Then the providers not asked for a slot yet: those with
    requests out already get their slots on demand, and with 60 products Pixii's first Scale
    submissions waited 0.13 s for the in-flight slot and 0.23 s more for the rate slot behind
    ListingRVA's primes."""
    if not products:
        return

    def order(name: str) -> tuple[bool, bool]:
        return clients.providers[name].limits.max_batch_size == 1, clients.limiters[name].engaged

    names = sorted(clients.limiters, key=order)
    await asyncio.gather(*(clients.limiters[n].prime(products) for n in names))


def _in_background(stack: AsyncExitStack, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
    """``work`` started now; cancelled (and its outcome dropped) if the run ends before awaiting it."""
    task = asyncio.ensure_future(work)

    async def drop() -> None:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(drop)
    return task


async def _run_checked(
    run: RunContext, tasks: TaskSet, products: list[Product], summary: RunSummary, names: list[str]
) -> None:
    """The products of a run that passed its pre-flight checks, told to the observer; fills in the summary."""
    token = set_current_run(run)
    run.observer.on_stoppable(run.stop)
    try:
        run.intents = Intents(tasks.cache)
        run.observer.on_start(_run_start(run, products, names))
        records = await run_products(run, tasks, products)
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
    summary.products = ProductRecords(r for r in records if r is not None)
    summary.spooled = list(run.archive.spooled)
    summary.cost = run.costs.summary(
        run.run_id,
        price_per_credit=params.price_per_credit,
        currency=params.currency,
        requests={n: run.limiters[n].requests for n in names},
        skipped=[line for p in summary.products for line in p.not_submitted()],
    )
    # a stopped run reads them too (they spend nothing), without waiting long for a rate-limit turn
    with past_the_stop():
        timeout = END_BALANCE_AFTER_STOP_SECONDS if run.stop.requested else None
        summary.cost.balances = await balance_checks(run.gates, summary.cost, timeout)
    summary.notes += [str(blocked) for blocked in run.blocked.values()]
    summary.notes += [b.text() for b in summary.cost.balances if not b.explained]
    summary.notes += [note for note in [run.budget.note()] if note]
    if run.stop.requested:
        summary.interrupted = run.stop.reason
        summary.in_flight = [dataclasses.asdict(j) for j in run.stop.in_flight.values()]


def _refuse(summary: RunSummary, problems: list[str]) -> RunSummary:
    """The run does not start: nothing was submitted, and each problem is one line of the summary."""
    summary.refused = problems
    summary.finished_at = time.time()
    return summary
