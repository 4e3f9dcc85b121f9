"""One product's chain: listing copy -> images -> A+ -> variation scaling, each step as soon as the
upstream outputs its provider's request reads exist (``Provider.inputs``).

Copy's title, bullets and keywords feed the image prompt and the A+ ``user_prompt``; the first
generated image feeds A+'s ``main_image_url`` and Scale's reference items; Scale runs once per
variation ASIN. Each job is submit (cached, paid once) then wait (polling inside the task), under the
provider's in-flight slot, then every output is downloaded and archived at once (URLs expire).

A step whose upstream step is not part of this run reuses the upstream outputs recorded in the
product's manifest in the archive. A failure stops only the steps that read its output; the outcome
records which step failed and why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from prefect.states import State
from pydantic import BaseModel, Field

from providers.contract import (
    STEP_ORDER,
    STEP_SPECS,
    UPSTREAM_OUTPUTS,
    JobRef,
    JobResult,
    ListingCopy,
    Product,
    Provider,
    Step,
    StepContext,
    producer,
)
from providers.errors import ProviderError, QuotaExhausted, SubmitOutcomeUnknown

from .archive import ArchiveUnavailable, product_manifest_key
from .batching import Batcher, batches_across_products, cached_share
from .compliance import ComplianceResult, Regeneration, check_product
from .costs import JobCost
from .intents import Intent
from .outputs import ArchivedOutput, archive_outputs
from .params import RunParameters
from .reasons import NOT_SUBMITTED, Reason, reason_of
from .reconcile import Verdict
from .runtime import Deferred, RunContext, submission_key
from .stopping import InFlightJob, Interrupted
from .submission import HeldSubmission, held_ref, interrupted_submission
from .tasks import JobFailedWithResult, TaskSet, forget, wait_key

logger = logging.getLogger("listingflow.pipeline")

StepStatus = Literal["done", "reused", "failed", "deferred", "interrupted", "skipped", "not_applicable"]


class StepOutcome(BaseModel):
    step: Step | None = Field(description="None: not a step's outcome (a crash, a run stopped first...)")
    provider: str
    status: StepStatus
    reason: Reason | None = Field(None, description="why it was not done, as a code (flows.reasons)")
    jobs: list[str] = Field(default_factory=list)
    outputs: list[ArchivedOutput] = Field(default_factory=list)
    copy_result: ListingCopy | None = None
    credits_charged: int | None = 0
    credits_refunded: int = 0
    reused_jobs: int = 0
    item_errors: list[str] = Field(default_factory=list)
    error: str | None = None


class ProductOutcome(BaseModel):
    asin: str
    country_code: str
    title: str
    status: Literal["complete", "partial", "failed", "deferred", "interrupted", "skipped"] = "complete"
    steps: dict[str, StepOutcome] = Field(default_factory=dict)
    manifest_key: str | None = None
    finished_at: float | None = None
    compliance: ComplianceResult | None = None

    @property
    def key(self) -> str:
        return f"{self.country_code}/{self.asin}"

    def failures(self) -> list[str]:
        return _failures(self.steps)

    def record(self) -> ProductRecord:
        return ProductRecord(
            asin=self.asin,
            country_code=self.country_code,
            status=self.status,
            manifest_key=self.manifest_key,
            compliance=self.compliance.status if self.compliance else None,
            compliance_findings=len(self.compliance.findings) if self.compliance else 0,
            compliance_reasons=self.compliance.reasons(limit=3) if self.compliance else (),
            steps={
                s: StepRecord(
                    provider=o.provider,
                    status=o.status,
                    jobs=tuple(o.jobs),
                    error=o.error,
                    item_errors=tuple(o.item_errors),
                    output_count=len(o.outputs),
                    reason=o.reason,
                )
                for s, o in self.steps.items()
            },
        )


@dataclass(frozen=True, slots=True)
class StepRecord:
    provider: str
    status: StepStatus
    jobs: tuple[str, ...]
    error: str | None
    item_errors: tuple[str, ...]
    output_count: int
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class ProductRecord:
    """What a run keeps of a finished product until its end: status, jobs and errors per step.

    The outputs, their checksums and the listing copy are in the product's manifest in the archive
    (``manifest_key``). Holding every ``ProductOutcome`` to the end of the run was ~25 KB per product
    (benchmarks, phase E: a 5,000-product run grew to 2.4x a 100-product one); a record is ~1.5 KB."""

    asin: str
    country_code: str
    status: str
    manifest_key: str | None
    steps: dict[str, StepRecord]
    compliance: str | None = None
    """pass / warn / fail, None when not checked; apart from ``status`` (a non-compliant product is
    still complete)"""
    compliance_findings: int = 0
    compliance_reasons: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.country_code}/{self.asin}"

    def failures(self) -> list[str]:
        return _failures(self.steps)

    def not_submitted(self) -> list[str]:
        """Work the run chose not to pay for (budget, daily cap, out of credits), one line per step."""
        return [f"{self.key} {s}: {o.error}" for s, o in self.steps.items() if o.reason in NOT_SUBMITTED]


def _failures(steps: dict[str, Any]) -> list[str]:
    out = [f"{s}: {o.error}" for s, o in steps.items() if o.status in ("failed", "deferred", "skipped")]
    return out + [f"{s}: {e}" for s, o in steps.items() for e in o.item_errors]


@dataclass
class _Started:
    """A product whose steps are scheduled: what finishing it needs."""

    params: RunParameters
    ctx: StepContext
    previous: dict[str, Any] | None
    running: dict[Step, asyncio.Task[StepOutcome]] = field(default_factory=dict)
    prepared: dict[str, asyncio.Task[dict[str, Any]]] = field(default_factory=dict)
    """Provider set-ups (``Provider.prepare``), once per provider, shared by its steps."""
    first_image: dict[Step, asyncio.Future[str | None]] = field(default_factory=dict)
    """Each image step's first image URL once it is downloaded and checked (None: the step ended
    without one)."""


async def run_product(run: RunContext, tasks: TaskSet, product: Product) -> ProductOutcome:
    outcome = ProductOutcome(asin=product.asin, country_code=product.country_code, title=product.title)
    params = _product_params(run, product, outcome)
    # Before anything is awaited: the batches it will join expect it, and it no longer counts as a
    # product still to start, so a batch waiting for every product leaves as soon as each has joined
    # (and not at the linger's end while some are still reading their manifests).
    expected = _expect_in_batches(run, tasks, product, params) if params is not None else []
    run.products_unstarted -= 1
    started: _Started | None = None
    try:
        started = await _start_steps(run, tasks, product, params) if params is not None else None
    finally:
        for batcher, step in expected:
            _arrive_when_done(batcher, product, started.running[step] if started else None)
    if started is None:
        return outcome
    await asyncio.gather(*started.running.values())
    # reports keep the logical order copy -> images -> aplus -> scale
    for step in started.params.ordered_steps():
        outcome.steps[step] = started.running[step].result()
    _set_status(outcome)
    regenerate = started.params.regenerate_noncompliant
    steps = await _comply(
        run, tasks, product, started.ctx, outcome, started.previous, started.prepared, regenerate
    )
    outcome.finished_at = time.time()
    outcome.manifest_key = await _write_manifest(run, product, outcome, started.previous, steps)
    return outcome


def _set_status(outcome: ProductOutcome) -> None:
    """The product's status from its steps': a stop wins over a daily cap, which wins over a failure."""
    statuses = {o.status for o in outcome.steps.values()}
    if "interrupted" in statuses:
        outcome.status = "interrupted"
    elif "deferred" in statuses:
        outcome.status = "deferred"
    elif "failed" in statuses:
        outcome.status = "failed" if not any(s in statuses for s in ("done", "reused")) else "partial"
    elif any(o.item_errors for o in outcome.steps.values()):
        outcome.status = "partial"


def _product_params(run: RunContext, product: Product, outcome: ProductOutcome) -> RunParameters | None:
    """The run's parameters with the product's overrides; None (and ``outcome`` failed) when invalid."""
    try:
        return run.params.for_product(product.overrides)
    except ValueError as exc:
        outcome.status = "failed"
        outcome.steps["overrides"] = StepOutcome(
            step=None,
            provider="-",
            status="failed",
            error=f"invalid overrides: {exc}",
            reason=Reason.INVALID_OVERRIDES,
        )
        return None


async def _start_steps(run: RunContext, tasks: TaskSet, product: Product, params: RunParameters) -> _Started:
    """The product's steps, scheduled."""
    previous = await _read_manifest(run, product)
    ctx = params.context_for(product)
    _reuse_upstream(ctx, previous)
    started = _Started(params=params, ctx=ctx, previous=previous)
    order, after_members = _start_order(run, params)
    for step in order:  # each waits only for the earlier steps whose outputs it reads
        provider_name, force = params.providers.for_step(step), step in params.force
        if STEP_SPECS[step].produces == "image":
            started.first_image[step] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(
            _run_when_ready(
                run,
                tasks,
                product,
                started,
                step,
                provider_name,
                force=force,
                after_members=step in after_members,
            )
        )
        started.running[step] = task
        if step in started.first_image:
            task.add_done_callback(partial(_no_image, started.first_image[step]))
    return started


async def _comply(
    run: RunContext,
    tasks: TaskSet,
    product: Product,
    ctx: StepContext,
    outcome: ProductOutcome,
    previous: dict[str, Any] | None,
    prepared: dict[str, asyncio.Task[dict[str, Any]]],
    regenerate: bool,
) -> dict[str, Any]:
    """The product's compliance (flows/compliance), checked on its archived outputs before it is
    reported done; its manifest's steps. With ``regenerate``, each step of this run with a failing
    output is paid for once more (within the budget, never twice across runs) and checked again. The
    product's status does not change either way."""
    steps = _manifest_steps(outcome, previous)
    if outcome.status == "interrupted":  # a stopping run does not read its outputs back
        return steps
    compliance = await check_product(run.archive, product.country_code, product.asin, steps, previous)
    redo = _to_regenerate(compliance, outcome, previous) if regenerate else []
    done: list[Regeneration] = []
    for step in redo:
        if run.stop.requested:
            break
        upstream = ctx.model_copy()
        _reuse_upstream(upstream, {"steps": steps})  # e.g. A+ again from the main image as archived
        again = await _run_step(
            run, tasks, product, upstream, step, outcome.steps[step].provider, force=True, prepared=prepared
        )
        why = None if again.status == "done" else f"{again.status}: {again.error}"
        done.append(Regeneration(step=step, run_id=run.run_id, jobs=again.jobs, done=why is None, reason=why))
        if again.status == "done":
            outcome.steps[step] = again
            steps = _manifest_steps(outcome, previous)
    if done:
        compliance = await check_product(run.archive, product.country_code, product.asin, steps, previous)
    if compliance is not None:
        compliance.regenerated = _earlier_regenerations(previous) + done
    outcome.compliance = compliance
    return steps


def _to_regenerate(
    compliance: ComplianceResult | None, outcome: ProductOutcome, previous: dict[str, Any] | None
) -> list[Step]:
    """Steps this run ran whose outputs fail a rule, not regenerated by an earlier run already."""
    failing = {f.step for f in (compliance.findings if compliance else []) if f.severity == "fail"}
    earlier = {r.step for r in _earlier_regenerations(previous) if r.done}
    return [
        s
        for s in STEP_ORDER
        if s in failing
        and s not in earlier
        and s in outcome.steps
        and outcome.steps[s].status in ("done", "reused")
    ]


def _earlier_regenerations(previous: dict[str, Any] | None) -> list[Regeneration]:
    found = ((previous or {}).get("compliance") or {}).get("regenerated") or []
    return [Regeneration.model_validate(r) for r in found]


async def _run_when_ready(
    run: RunContext,
    tasks: TaskSet,
    product: Product,
    started: _Started,
    step: Step,
    provider_name: str,
    *,
    force: bool,
    after_members: bool = False,
) -> StepOutcome:
    """Run ``step`` once the upstream outputs its provider's request reads exist (``Provider.inputs``):
    with the default providers, copy and images start together, A+ waits for both, Scale for the
    image only. An image exists once it is downloaded and checked (``first_image``), before it is
    archived. A failed or deferred upstream step stops only the steps that read its output. With
    ``after_members``, it also waits for the cross-product batches (``_start_order``)."""
    running, first_image = started.running, started.first_image
    ctx = started.ctx.model_copy()
    for need in _needs(run, step, provider_name, running):
        if need in first_image and (url := await asyncio.shield(first_image[need])) is not None:
            ctx.main_image_url = url
            continue
        upstream = await asyncio.shield(running[need])
        if upstream.status in ("failed", "deferred", "interrupted") or (
            upstream.status == "skipped" and _stopped(upstream)
        ):
            return StepOutcome(
                step=step,
                provider=provider_name,
                status="skipped",
                error=f"not run: {need} {upstream.status}",
            )
        if STEP_SPECS[need].produces == "copy" and upstream.copy_result is not None:
            ctx.copy_result = upstream.copy_result
        if STEP_SPECS[need].produces == "image" and upstream.outputs:
            ctx.main_image_url = upstream.outputs[0].source_url
    if after_members:
        for batcher in list(run.batchers.values()):
            await batcher.settled()
    checked = None if step not in first_image else partial(_image_checked, first_image[step])
    return await _run_step(
        run,
        tasks,
        product,
        ctx,
        step,
        provider_name,
        force=force,
        prepared=started.prepared,
        on_first_image=checked,
    )


def _image_checked(first: asyncio.Future[str | None], url: str) -> None:
    """The image step's first output is downloaded and checked: the steps reading it may start."""
    if not first.done():
        first.set_result(url)


def _no_image(first: asyncio.Future[str | None], _: Any) -> None:
    """The image step ended without telling of a checked image: its outcome decides."""
    if not first.done():
        first.set_result(None)


def _start_order(run: RunContext, params: RunParameters) -> tuple[list[Step], set[Step]]:
    """The run's steps in the order they are started, and those of them that wait for the run's first
    cross-product batch to be sent (``Batcher.settled``).

    The steps that join a batch come first: a batch leaves when every product has joined, so each
    product's member is started before its other steps' task runs take the loop. The steps that
    neither join a batch nor feed one start once it is sent: their task runs took the event loop the
    members needed on their way to the batcher, and the Prefect server the batch's lease needed (with
    ListingRVA's copy and ProdVisual's images, the first batch of 20 products left 0.14 s earlier;
    benchmark, x10)."""
    steps = params.ordered_steps()
    batched = [s for s in steps if _joins_batch(run, params.providers.for_step(s))]
    order = batched + [s for s in steps if s not in batched]
    if not batched:
        return order, set()
    in_run = dict.fromkeys(steps)
    feeding = {need for s in batched for need in _needs(run, s, params.providers.for_step(s), in_run)}
    return order, set(steps) - set(batched) - feeding


def _joins_batch(run: RunContext, provider_name: str) -> bool:
    return provider_name in run.providers and batches_across_products(run, provider_name)


def _expect_in_batches(
    run: RunContext, tasks: TaskSet, product: Product, params: RunParameters
) -> list[tuple[Batcher, Step]]:
    """Tell each cross-product batcher the product's steps will join that they will bring members
    unless the step ends first (``_arrive_when_done``): once every product expected has arrived, the
    batch leaves without lingering."""
    expected = []
    for step in params.ordered_steps():
        provider_name = params.providers.for_step(step)
        if _joins_batch(run, provider_name):
            batcher = _batcher(run, tasks, provider_name, step, step in params.force)
            batcher.expect(product.key)
            expected.append((batcher, step))
    return expected


def _arrive_when_done(
    batcher: Batcher, product: Product, step_task: asyncio.Task[StepOutcome] | None
) -> None:
    """The product has arrived at ``batcher`` once its step ends (at once when it never started)."""
    if step_task is None:
        batcher.arrived(product.key)
    else:
        step_task.add_done_callback(lambda _: batcher.arrived(product.key))


def _needs(run: RunContext, step: Step, provider_name: str, running: dict[Step, Any]) -> list[Step]:
    """The earlier steps of this run whose outputs the provider's request for ``step`` reads."""
    plugin = run.providers.get(provider_name)
    inputs = plugin.inputs(step) if plugin is not None else frozenset(UPSTREAM_OUTPUTS)
    produced = [UPSTREAM_OUTPUTS[i] for i in sorted(inputs) if i in UPSTREAM_OUTPUTS]
    return [s for s in STEP_ORDER[: STEP_ORDER.index(step)] if s in produced and s in running]


def _stopped(outcome: StepOutcome) -> bool:
    return (outcome.error or "").startswith("not run:")


def _reuse_upstream(ctx: StepContext, previous: dict[str, Any] | None) -> None:
    """Upstream outputs from earlier runs, for steps this run does not execute."""
    if not previous:
        return
    steps = previous.get("steps", {})
    copy = steps.get(producer("copy"), {}).get("copy_result")
    if copy:
        ctx.copy_result = ListingCopy.model_validate(copy)
    images = steps.get(producer("image"), {}).get("outputs") or []
    if images and images[0].get("source_url"):
        ctx.main_image_url = images[0]["source_url"]


async def _run_step(
    run: RunContext,
    tasks: TaskSet,
    product: Product,
    ctx: StepContext,
    step: Step,
    provider_name: str,
    *,
    force: bool,
    prepared: dict[str, asyncio.Task[dict[str, Any]]],
    on_first_image: Callable[[str], None] | None = None,
) -> StepOutcome:
    outcome = StepOutcome(step=step, provider=provider_name, status="done")
    try:
        plugin = run.provider(provider_name)
        if type(plugin).prepare is not Provider.prepare:
            if provider_name not in prepared:  # once per product and provider, shared by its steps
                prepared[provider_name] = asyncio.ensure_future(_prepare(run, tasks, product, provider_name))
            ctx.prepared = {
                **ctx.prepared,
                provider_name: True,
                **await asyncio.shield(prepared[provider_name]),
            }
        contexts = STEP_SPECS[step].fan_out(ctx)
        if not contexts:  # a per-variation step for a product without variations
            outcome.status = "not_applicable"
            return outcome
        if "image" in STEP_SPECS[step].requires and ctx.main_image_url is None and not product.image_urls:
            raise _StepSkip("needs a main image: run the images step first or give image_url")
        requests = [(c, r) for c in contexts for r in plugin.build_requests(step, c)]
    except Interrupted as exc:
        outcome.status, outcome.error = "interrupted", str(exc)
        return outcome
    except ProviderError as exc:
        return _failed(outcome, exc)
    except _StepSkip as exc:
        outcome.status, outcome.error = "skipped", str(exc)
        return outcome

    results = await asyncio.gather(
        *[
            _run_request(
                run, tasks, product, step, provider_name, c, r, i, force, on_first_image if i == 0 else None
            )
            for i, (c, r) in enumerate(requests)
        ],
        return_exceptions=True,
    )
    return _settle(outcome, results)


def _settle(outcome: StepOutcome, results: list[Any]) -> StepOutcome:
    """The step's status from all its requests' results, gathered to the end so that every job paid
    for is recorded: a stop wins over a daily cap, which wins over a failure."""
    errors: list[BaseException] = []
    for jobs in results:
        if isinstance(jobs, BaseException):
            errors.append(jobs)
            continue
        _add_jobs(outcome, jobs)
    if errors:
        if any(isinstance(e, Interrupted) for e in errors):
            outcome.status = "interrupted"
            outcome.error = next(_describe(e) for e in errors if isinstance(e, Interrupted))
        elif any(isinstance(e, (Deferred, QuotaExhausted)) for e in errors):
            outcome.status, outcome.reason = "deferred", Reason.DAILY_CAP
            outcome.error = "; ".join(_describe(e) for e in errors)
        else:
            _failed(outcome, errors[0], more=errors[1:])
    elif outcome.reused_jobs and outcome.reused_jobs == len(outcome.jobs):
        outcome.status = "reused"
    return outcome


_JobDone = tuple[JobResult, bool, list["ArchivedOutput"]]

# A part that failed again is asked for again by the next run, not in a loop within one.
MAX_PART_RETRIES = 1


async def _run_request(
    run: RunContext,
    tasks: TaskSet,
    product: Product,
    step: Step,
    provider_name: str,
    ctx: StepContext,
    request: BaseModel,
    index: int,
    force: bool,
    on_first_image: Callable[[str], None] | None = None,
) -> list[_JobDone]:
    """One request's job, and, when an earlier run's job of it completed with parts failed (and
    refunded), a job for the failed parts only: never the parts already paid for."""
    done = [
        await _run_job(
            run,
            tasks,
            product,
            step,
            provider_name,
            ctx,
            request,
            index,
            force,
            on_first_image=on_first_image,
        )
    ]
    plugin = run.provider(provider_name)
    for attempt in range(1, MAX_PART_RETRIES + 1):
        result, reused, archived = done[-1]
        retry = plugin.retry_request(step, request, result) if reused and result.errors else None
        if retry is None:
            break
        done[-1] = (result.model_copy(update={"errors": []}), reused, archived)  # superseded by the retry
        request = retry
        done.append(
            await _run_job(run, tasks, product, step, provider_name, ctx, retry, index, force, part=attempt)
        )
    return done


def _add_jobs(outcome: StepOutcome, jobs: list[_JobDone]) -> None:
    for job_result, reused, archived in jobs:
        outcome.jobs.append(job_result.ref.job_id)
        outcome.outputs.extend(archived)
        if job_result.copy_result is not None:
            outcome.copy_result = job_result.copy_result
        outcome.item_errors.extend(
            f"{e.label}: {e.code or ''} {e.message}".strip() for e in job_result.errors
        )
        if reused:
            outcome.reused_jobs += 1
        else:
            _add_credits(outcome, job_result)


async def _prepare(run: RunContext, tasks: TaskSet, product: Product, provider_name: str) -> dict[str, Any]:
    key = f"prepare-{provider_name}-{product.country_code}-{product.asin}-" + _hash(
        [product.title, product.category, run.settings.cache_version]
    )
    # finished even when the run stops meanwhile: a record created but not cached would be created again
    return forget(await run.stop.finish(tasks.prepare(provider_name, product, cache_key=key)))


class _StepSkip(Exception):
    pass


def _add_credits(outcome: StepOutcome, result: JobResult) -> None:
    if result.credits_charged is None or outcome.credits_charged is None:
        outcome.credits_charged = None
    else:
        outcome.credits_charged += result.credits_charged
    outcome.credits_refunded += result.credits_refunded


def _failed(outcome: StepOutcome, exc: BaseException, more: list[BaseException] | None = None) -> StepOutcome:
    outcome.status, outcome.reason = "failed", reason_of(exc, *(more or []))
    outcome.error = "; ".join(
        dict.fromkeys(_describe(e) for e in [exc, *(more or [])])
    )  # one line per reason
    return outcome


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _hash(parts: list[Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


async def _run_job(
    run: RunContext,
    tasks: TaskSet,
    product: Product,
    step: Step,
    provider_name: str,
    ctx: StepContext,
    request: BaseModel,
    index: int,
    force: bool,
    part: int = 0,
    on_first_image: Callable[[str], None] | None = None,
) -> tuple[JobResult, bool, list[ArchivedOutput]]:
    plugin = run.provider(provider_name)
    key = submission_key(provider_name, step, request, run.settings.cache_version)
    asin = ctx.variation.asin if ctx.variation is not None else product.asin
    name = f"{step}-{index + 1}" + (f"-retry{part}" if part else "")
    job = _Job(
        key=key,
        label=f"{asin}-{name}",
        member=f"{product.key}#{name}",
        estimate=plugin.estimate_credits(step, request),
    )
    try:
        result, reused = await _obtain(run, tasks, step, provider_name, request, job, force)
    except JobFailedWithResult as exc:
        _record_cost(run, product, step, exc.result, reused=False)
        raise
    except HeldSubmission as exc:
        _record_held(run, product, step, exc, job)
        raise
    _record_cost(run, product, step, result, reused=reused)
    if reused:
        run.observer.on_job_event(provider_name, str(step), "reused")
    else:
        run.held.release(job.key)  # sent again on request (--resubmit-unknown): no longer held
    archived = await archive_outputs(
        run, plugin, product, step, asin, result, fresh=not reused, on_first_image=on_first_image
    )
    return result, reused, archived


class _Job(BaseModel):
    key: str
    label: str
    member: str
    estimate: int | None

    @property
    def member_key(self) -> str:
        """Where a cross-product batch leaves this job's pointer; also its lock. Distinct from
        ``key``: a batch of one product can have exactly this product's payload and key."""
        return f"member-{self.key}"


async def _obtain(
    run: RunContext,
    tasks: TaskSet,
    step: Step,
    provider_name: str,
    request: BaseModel,
    job: _Job,
    force: bool,
) -> tuple[JobResult, bool]:
    """The job's result and whether it was paid by an earlier run: from the cache when finished,
    resumed when an earlier run submitted it, else submitted (alone or in a cross-product batch).
    A held submission (outcome unknown, or charged and lost) is reported, never sent again, unless
    the user asked to resubmit unknown outcomes."""
    if not force:
        pointer = await _pointer(tasks, job)
        if pointer is not None and pointer.held:
            force = _resubmit_held(run, pointer)
        elif (
            pointer is not None
            and (found := await _cached(run, tasks, step, provider_name, pointer)) is not None
        ):
            return found
    run.on_first_submission()
    if batches_across_products(run, provider_name):
        return await _obtain_in_batch(run, tasks, step, provider_name, request, job, force)
    return await _obtain_alone(run, tasks, step, provider_name, request, job, force)


async def _obtain_in_batch(
    run: RunContext,
    tasks: TaskSet,
    step: Step,
    provider_name: str,
    request: BaseModel,
    job: _Job,
    force: bool,
) -> tuple[JobResult, bool]:
    """The job as a member of a cross-product batch, which submits it with other products' jobs."""
    # The batch's own key depends on which products it groups, so overlapping runs are kept
    # apart per product: whoever holds this product's key submits it; the other run then
    # finds the pointer its batch left and shares the same job.
    holder = f"{run.run_id}:{job.member}"
    await tasks.locks.aacquire_lock(job.member_key, holder)
    try:
        if not force and (pointer := await _pointer(tasks, job)) is not None:
            if pointer.held:
                raise HeldSubmission(pointer, earlier=pointer.host.run_id != run.run_id)
            if (found := await _cached(run, tasks, step, provider_name, pointer)) is not None:
                return found
        if not force and (earlier := await run.intents.pending(job.member_key)) is not None:
            raise await _held_interrupted_member(run, tasks, step, provider_name, request, job, earlier)
        items = len(getattr(request, "items", None) or [None])
        share, reused = await _batcher(run, tasks, provider_name, step, force).submit(
            job.member, job.member_key, request, items, job.estimate
        )
    finally:
        tasks.locks.release_lock(job.member_key, holder)
    if share.status == "failed":
        raise JobFailedWithResult(share)
    return share, reused


async def _obtain_alone(
    run: RunContext,
    tasks: TaskSet,
    step: Step,
    provider_name: str,
    request: BaseModel,
    job: _Job,
    force: bool,
) -> tuple[JobResult, bool]:
    """The job submitted on its own, under the provider's in-flight slot; a job an earlier run paid
    for and that failed (refunded) is submitted again, once."""
    submit = tasks.submit_forced if force else tasks.submit
    async with run.limiters[provider_name].job_slot():
        state, ref = await _submit(
            run,
            step,
            job,
            submit(
                provider_name,
                step,
                request,
                label=job.label,
                cache_key=job.key,
                estimate=job.estimate,
                return_state=True,
            ),
        )
        reused = state.name == "Cached" and ref.host.run_id != run.run_id
        if ref.held:  # held by this run, or by another run since this one looked
            raise HeldSubmission(ref, earlier=reused)
        try:
            return forget(await _wait(run, tasks, step, ref, job)), reused
        except JobFailedWithResult:
            if not reused or force:
                raise
        except (Exception, asyncio.CancelledError):
            if not reused:
                _record_unfinished(run, step, ref, job)
            raise
        # The earlier run's job failed (and was refunded): this run may pay for a new one.
        state, ref = await _submit(
            run,
            step,
            job,
            tasks.submit_forced(
                provider_name,
                step,
                request,
                label=job.label,
                cache_key=job.key,
                estimate=job.estimate,
                return_state=True,
            ),
        )
        if ref.held:
            raise HeldSubmission(ref, earlier=False)
        return forget(await _wait(run, tasks, step, ref, job)), False


async def _submit(run: RunContext, step: Step, job: _Job, submission: Any) -> tuple[State, JobRef]:
    """A paid submission, run to its end even when the run is stopped meanwhile: its job reference is
    then persisted by the cached task, and kept as in flight for the next run."""

    async def submitted() -> tuple[State, JobRef]:
        state: State = await submission
        ref = forget(await state.aresult())
        await run.intents.end([job.key], run.run_id)  # its JobRef is persisted (the task's cached result)
        return state, ref

    def orphaned(done: tuple[State, JobRef]) -> None:
        state, ref = done
        _keep_in_flight(run, step, ref, job)
        if not (state.name == "Cached" and ref.host.run_id != run.run_id):
            _record_unfinished(run, step, ref, job)

    return await run.stop.finish(submitted(), orphaned=orphaned)


async def _wait(run: RunContext, tasks: TaskSet, step: Step, ref: JobRef, job: _Job) -> JobResult:
    try:
        result: JobResult = await tasks.wait(ref, version=run.settings.cache_version)
        return result
    except (Interrupted, asyncio.CancelledError):
        _keep_in_flight(run, step, ref, job)
        raise


def _keep_in_flight(run: RunContext, step: Step, ref: JobRef, job: _Job) -> None:
    run.stop.keep(
        InFlightJob(
            provider=ref.provider, step=str(step), job_id=ref.job_id, products=(job.member.split("#")[0],)
        )
    )


async def _held_interrupted_member(
    run: RunContext,
    tasks: TaskSet,
    step: Step,
    provider_name: str,
    request: BaseModel,
    job: _Job,
    earlier: Intent,
) -> HeldSubmission:
    """A batch holding this product's items was on its way when an earlier run was stopped, and its
    answer was never saved: batches cannot be looked up, so the member is held (never sent again by
    itself; ``resubmit_unknown`` sends it)."""
    found = await interrupted_submission(run.provider(provider_name), step, request, earlier)
    why = (
        found
        if isinstance(found, ProviderError)
        else SubmitOutcomeUnknown(
            "an earlier run was stopped while a batch with this product's items was on its way",
            provider=provider_name,
        )
    )
    ref = held_ref(provider_name, step, job.key, job.label, job.estimate, Verdict.UNKNOWN, why)
    ref.host.run_id, ref.host.label = run.run_id, job.label
    await tasks.cache.put(job.member_key, ref)
    await run.intents.end([job.member_key], run.run_id)
    return HeldSubmission(ref, earlier=False)


def _resubmit_held(run: RunContext, pointer: JobRef) -> bool:
    """True when the user asked to send this held submission again; otherwise it stays held."""
    if pointer.outcome == "unknown" and run.params.resubmit_unknown:
        logger.warning(
            "resubmitting %s %s, held with an unknown outcome since run %s: this may pay twice",
            pointer.provider,
            pointer.host.label,
            pointer.host.run_id,
        )
        return True
    raise HeldSubmission(pointer, earlier=pointer.host.run_id != run.run_id)


async def _pointer(tasks: TaskSet, job: _Job) -> JobRef | None:
    """This job's submission record: its share of a batch, else its own submission."""
    pointer = await tasks.cache.get(job.member_key)
    if not isinstance(pointer, JobRef):
        pointer = await tasks.cache.get(job.key)
    return pointer if isinstance(pointer, JobRef) else None


async def _cached(
    run: RunContext, tasks: TaskSet, step: Step, provider_name: str, pointer: JobRef
) -> tuple[JobResult, bool] | None:
    """A finished (or resumable) result for this job's key from an earlier submission."""
    earlier = pointer.host.run_id != run.run_id
    if pointer.host.member:
        share = await cached_share(run, tasks, pointer)
        if share is None:
            share = await _batcher(run, tasks, provider_name, step, False).resume(pointer)
        return (share, earlier) if share.status == "completed" else None
    done = await tasks.cache.get(wait_key(pointer, run.settings.cache_version))
    return (done, earlier) if isinstance(done, JobResult) else None


def _batcher(run: RunContext, tasks: TaskSet, provider: str, step: Step, force: bool) -> Batcher:
    key = (provider, str(step), force)
    if key not in run.batchers:
        run.batchers[key] = Batcher(
            run, tasks.forced() if force else tasks, provider, step, linger=run.settings.batch_linger_seconds
        )
    batcher: Batcher = run.batchers[key]
    return batcher


def _record_cost(run: RunContext, product: Product, step: Step, result: JobResult, *, reused: bool) -> None:
    run.costs.add(
        JobCost(
            provider=result.ref.provider,
            step=str(step),
            product=product.key,
            job_id=result.ref.job_id,
            charged=result.credits_charged,
            refunded=result.credits_refunded,
            reused=reused,
            original_run=result.ref.host.run_id,
        )
    )


def _record_held(run: RunContext, product: Product, step: Step, held: HeldSubmission, job: _Job) -> None:
    """A held submission costs this run what it was charged or may have been charged, once: in the
    run that held it. Later runs list it (and ``listingflow unknown`` does) at no cost."""
    ref = held.ref
    charged = ref.outcome == "charged_not_retrievable"
    run.costs.add(
        JobCost(
            provider=ref.provider,
            step=str(step),
            product=product.key,
            job_id=ref.job_id,
            charged=job.estimate if charged else 0,
            reused=held.earlier,
            held=True,
            possibly_charged=0 if charged else job.estimate,
            original_run=ref.host.run_id,
        )
    )
    run.held.record(ref, product=product.key, key=job.key, label=job.label, credits=job.estimate)


def _record_unfinished(run: RunContext, step: Step, ref: JobRef, job: _Job) -> None:
    """Paid at submission, result never seen (the wait timed out or failed): still this run's cost."""
    charged = ref.credits_at_submit if ref.credits_at_submit is not None else job.estimate
    run.budget.settle(ref.host.budget_hold, charged)  # if the wait task never ran
    run.costs.add(
        JobCost(
            provider=ref.provider,
            step=str(step),
            product=job.member.split("#")[0],
            job_id=ref.job_id,
            charged=charged,
            reused=False,
            original_run=ref.host.run_id,
        )
    )


async def _read_manifest(run: RunContext, product: Product) -> dict[str, Any] | None:
    key = product_manifest_key(run.archive.prefix, product.country_code, product.asin)
    try:
        return await run.archive.get_json(key)
    except (ArchiveUnavailable, ValueError):
        return None


def _manifest_steps(outcome: ProductOutcome, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The product manifest keeps the latest successful result of every step across runs."""
    steps = dict((previous or {}).get("steps", {}))
    for step, step_outcome in outcome.steps.items():
        if step_outcome.status in ("done", "reused") or step not in steps:
            steps[step] = step_outcome.model_dump(mode="json")
    return steps


async def _write_manifest(
    run: RunContext,
    product: Product,
    outcome: ProductOutcome,
    previous: dict[str, Any] | None,
    steps: dict[str, Any],
) -> str | None:
    """The product's manifest: its steps across runs and, when checked, its compliance."""
    key = product_manifest_key(run.archive.prefix, product.country_code, product.asin)
    manifest = {
        "asin": product.asin,
        "country_code": product.country_code,
        "title": product.title,
        "variations": [v.model_dump() for v in product.variations],
        "last_run_id": run.run_id,
        "last_status": outcome.status,
        "updated_at": time.time(),
        "steps": steps,
    }
    if outcome.compliance is not None:
        manifest["compliance"] = outcome.compliance.model_dump(mode="json")
    elif previous and "compliance" in previous:
        manifest["compliance"] = previous["compliance"]  # this run checked nothing (e.g. it was stopped)
    try:
        await run.archive.put_json(key, manifest)
    except ArchiveUnavailable:
        return None
    return key
