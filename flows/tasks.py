"""The Prefect tasks around every billable provider call.

* ``submit`` spends credits. It is cached under ``submission_key`` (provider, step, canonical payload,
  explicit version) with persisted results, so a new run with the same inputs reuses the job instead of
  paying again, and SERIALIZABLE isolation with a lock manager, so two overlapping runs submit it once.
  The job reference is persisted the moment the submit returns, before any waiting: a run killed while
  polling resumes on the same job.
* ``wait`` polls inside one task run (never one task run per poll) and is cached by job id, so a
  rerun does not poll finished jobs again. Failed jobs raise and are therefore never cached.
* ``prepare`` is the per-product set-up some providers need (ListingRVA's product record), cached
  the same way so reruns never create duplicates in the user's workspace.

Nothing here retries a provider call: transient HTTP failures are retried inside the client call
(``providers.retries``), polls keep one deadline per job (``providers.polling``), and a paid
submission is resent only under the money rule (``flows.submission``). Prefect task retries stay off.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, TypeVar

from prefect import task
from prefect.blocks.core import Block
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import ObjectNotFound
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.utilities.collections import visit_collection
from pydantic import BaseModel

from flows.settings import Settings
from providers.contract import JobRef, JobResult, Product, Step
from providers.errors import InsufficientCredits, JobFailed, ProviderError, QuotaExhausted

from .locks import lock_manager
from .runtime import Deferred, ProviderBlocked, RunContext, current_run
from .stopping import Interrupted
from .submission import submit_paid

_T = TypeVar("_T")


class JobFailedWithResult(JobFailed):
    """A failed job, carrying its result so the refund still reaches the cost summary."""

    def __init__(self, result: JobResult) -> None:
        self.result = result
        super().__init__(
            f"job {result.ref.job_id} failed: {result.error_message or 'no reason given'}",
            provider=result.ref.provider,
            code=result.error_code,
        )


def _key_param(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return str(parameters["cache_key"])


def wait_key(ref: JobRef, version: str) -> str:
    return f"wait-{ref.provider}-{ref.job_id}-{version}"


def _wait_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return wait_key(parameters["ref"], parameters["version"])


@task(name="prepare", task_run_name="prepare {provider} {product.asin}", persist_result=True)
async def prepare_task(provider: str, product: Product, cache_key: str) -> dict[str, Any]:
    run = current_run()
    plugin = run.provider(provider)
    return await plugin.prepare(product)  # its requests' transient failures are retried by the client


@task(name="submit", task_run_name="submit {provider} {step} {label}", persist_result=True)
async def submit_task(
    provider: str,
    step: Step,
    request: BaseModel,
    label: str,
    cache_key: str,
    estimate: int | None = None,
    intent_keys: list[str] | None = None,
) -> JobRef:
    """The only task that spends credits. Its result, cached under ``cache_key``, is the job, or a
    held reference when the submission's outcome could not be known (``flows.submission``)."""
    run = current_run()
    run.stop.check(f"submit {provider} {label}")
    if provider in run.blocked:
        raise run.blocked[provider]
    plugin = run.provider(provider)
    hold = await run.budget.reserve(provider, plugin.price_key(step, request), estimate)
    with run.budget.freed_on_error(hold):
        try:
            ref = await submit_paid(
                run,
                plugin,
                step,
                request,
                label=label,
                cache_key=cache_key,
                estimate=estimate,
                intent_keys=intent_keys,
            )
        except QuotaExhausted as exc:
            run.blocked.setdefault(
                provider,
                Deferred(
                    f"{provider} daily cap reached: {exc.message}",
                    provider=provider,
                    retry_after=exc.retry_after,
                ),
            )
            raise run.blocked[provider] from None
        except InsufficientCredits as exc:
            run.blocked.setdefault(
                provider,
                ProviderBlocked(
                    f"{provider} is out of credits: {exc.message}", provider=provider, code=exc.code
                ),
            )
            run.observer.on_job_event(provider, str(step), "rejected")
            raise
        except ProviderError as exc:
            if not isinstance(exc, Interrupted):
                run.observer.on_job_event(provider, str(step), "rejected")
            raise
    return _book_submission(run, ref, hold, provider=provider, step=step, label=label)


def _book_submission(
    run: RunContext, ref: JobRef, hold: str | None, *, provider: str, step: Step, label: str
) -> JobRef:
    """Stamps the returned job with this run and label and settles its budget hold: a held
    reference counts as spent, a real job keeps the hold for the wait task to settle."""
    ref.host.run_id = ref.host.run_id or run.run_id
    ref.host.label = ref.host.label or label
    if ref.held:  # no job to wait on: what it may have cost counts as spent
        run.budget.release(hold, maybe_charged=True)
        return ref
    run.budget.submitted(hold, ref.credits_at_submit)
    run.observer.on_job_event(provider, str(step), "submitted")
    ref.host.budget_hold = hold  # the wait task settles it
    return ref


@task(name="wait", task_run_name="wait {ref.provider} {ref.job_id}", persist_result=True)
async def wait_task(ref: JobRef, version: str) -> JobResult:
    run = current_run()
    plugin = run.provider(ref.provider)
    gate = run.gate(ref.provider)
    if ref.host.run_id != run.run_id:
        gate.watching()  # an earlier run's job: a refund of it could land while this run checks a balance
        run.observer.on_job_event(ref.provider, str(ref.step), "resumed")

    hold = ref.host.budget_hold
    try:  # one wait, never retried here: the plugin polls until the job's one deadline (providers.polling)
        # a stop abandons the polling, never the job: the next run resumes it
        result = await run.stop.race(plugin.wait(ref), f"wait {ref.provider} {ref.job_id}")
    except BaseException as exc:
        run.budget.settle(hold, ref.credits_at_submit)  # paid at submission, result not seen
        if isinstance(exc, ProviderError) and not isinstance(exc, Interrupted):
            run.observer.on_job_event(ref.provider, str(ref.step), "failed")
        raise
    gate.settled(result.credits_refunded)
    run.budget.settle(hold, result.credits_charged, result.credits_refunded)
    run.observer.on_job_event(ref.provider, str(ref.step), "failed" if result.status == "failed" else "done")
    if result.status == "failed":
        raise JobFailedWithResult(result)
    return result


def forget(result: _T) -> _T:
    """Drop a task's return value from the flow run's registry of results, and return it.

    Prefect keeps every task result of a flow run (``FlowRunContext.run_results``, which links results
    to their states for futures) until the flow run ends. Our results are consumed at once, and at
    catalog scale that registry was what memory grew with (benchmarks: ~75 MB per 1,000 products).
    """
    context = FlowRunContext.get()
    if context is not None and context.run_results:
        results = context.run_results

        def drop(obj: Any) -> None:
            results.pop(id(obj), None)

        # the same traversal Prefect links with (prefect.utilities.engine.link_state_to_result): the
        # result and its direct fields, each entry holding a copy of the task run's final state
        visit_collection(expr=result, visit_fn=drop, max_depth=1)
    return result


def forget_empty_task_assets() -> None:
    """Drop the flow run's empty asset records of finished task runs.

    Prefect records, for every task run of a flow run, the assets it passes downstream
    (``FlowRunContext.task_run_assets``), an empty set for each of ours, and keeps them until the flow
    run ends: ~7 task runs, ~2.5 KB per product (benchmarks, phase E). Prefect reads an entry only to
    add its assets to a downstream task's (``AssetContext.from_task_and_inputs``: ``if task_assets``),
    so a missing entry and an empty one mean the same. Called once per finished product, the map then
    holds only the entries added since."""
    assets = getattr(FlowRunContext.get(), "task_run_assets", None)
    if assets:
        for key in [k for k, v in assets.items() if not v]:
            del assets[key]


class TaskSet(BaseModel):
    """The three tasks configured for this environment's result storage and lock manager."""

    model_config = {"arbitrary_types_allowed": True}

    prepare: Any
    submit: Any
    submit_forced: Any
    wait: Any
    cache: Any
    locks: Any

    def forced(self) -> TaskSet:
        """The same tasks with submissions that ignore (and overwrite) the cache."""
        return self.model_copy(update={"submit": self.submit_forced})


async def result_storage(settings: Settings) -> Any:
    """The saved storage block: the configured one (e.g. ``s3-bucket/listingflow-results``), else a
    local folder block for this state dir (Prefect requires result storage persisted server-side).
    Loaded once per run and passed as an instance, so task runs do not each resolve a slug."""
    if settings.result_storage:
        return await Block.aload(settings.result_storage)
    settings.results_path.mkdir(parents=True, exist_ok=True)
    name = "listingflow-results-" + hashlib.sha256(str(settings.results_path).encode()).hexdigest()[:10]
    try:  # saving registers the block type and schema again: only when missing or moved
        saved: LocalFileSystem = await LocalFileSystem.aload(name)  # prefect's inject_client loses the type
        if saved.basepath == str(settings.results_path):
            return saved
    except (ValueError, ObjectNotFound):
        pass
    block = LocalFileSystem(basepath=str(settings.results_path))
    await block.save(name, overwrite=True)
    return block


class CacheReader:
    """Reads Prefect's own cache records for work that is already finished.

    A rerun of a finished catalog would otherwise spend a task run (~0.1-0.5 s against a busy
    server, measured) and an in-flight slot per job just to be told "Cached". Reading the records
    that the submit and wait tasks persisted gives the same answer from one file read each; anything
    not fully cached still goes through the tasks (and their locks) as usual.
    """

    def __init__(self, storage: Any) -> None:
        self.store = ResultStore(result_storage=storage, cache_result_in_memory=False)  # read once each
        # A local folder is read and written in place: Prefect's async file calls make three hops to a
        # worker thread per write (0.42 ms per intent record against 0.2 ms in place, measured), and
        # on a loaded machine each hop waits for a CPU; a submission reads two or three records and
        # writes its intent on its way to the wire. Remote storage (S3) keeps the async calls.
        self.in_place = isinstance(storage, LocalFileSystem)

    async def get(self, key: str) -> Any | None:
        try:
            if self.in_place:
                return self.store.read(key).result if self.store.exists(key) else None
            if not await self.store.aexists(key):
                return None
            return (await self.store.aread(key)).result
        except Exception:  # noqa: BLE001 - an unreadable record is a cache miss, never an error
            return None

    async def put(self, key: str, value: Any) -> None:
        if self.in_place:
            self.store.write(value, key=key)
        else:
            await self.store.awrite(value, key=key)


async def configure_tasks(settings: Settings) -> TaskSet:
    storage = await result_storage(settings)
    locks = lock_manager(settings)
    serializable = CacheKeyFnPolicy(cache_key_fn=_key_param).configure(
        isolation_level="SERIALIZABLE", lock_manager=locks
    )
    # cache_result_in_memory=False: every result is persisted, and the run keeps what it needs of it;
    # Prefect's in-memory copy (an LRU of up to 1,000 records per run) only grew the run's memory
    common: dict[str, Any] = {
        "result_storage": storage,
        "persist_result": True,
        "retries": 0,
        "cache_result_in_memory": False,
    }
    return TaskSet(
        cache=CacheReader(storage),
        locks=locks,
        prepare=prepare_task.with_options(cache_policy=serializable, **common),
        submit=submit_task.with_options(cache_policy=serializable, **common),
        submit_forced=submit_task.with_options(cache_policy=serializable, refresh_cache=True, **common),
        wait=wait_task.with_options(
            cache_policy=CacheKeyFnPolicy(cache_key_fn=_wait_key),
            cache_expiration=dt.timedelta(days=30),
            **common,
        ),
    )
