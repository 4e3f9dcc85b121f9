"""Cross-product batching for providers that accept many items per job (ProdVisual: 50 images).

Products reach the images step at different moments; the batcher collects their requests until a
batch is full, a short linger is over (started again by each arrival while products expected are still
coming, up to ``MAX_LINGERS``; ``MAX_LINGERS`` at once for products that start as others finish), or
every product that could still come has arrived (each one started
has, ``expect``, and none is left to start); while the provider's pace holds a batch back it keeps
collecting. It asks the plugin to merge them (``merge_requests``), runs each merged batch as one
ordinary cached submit + wait, and hands every product its share (``split_result``). When the images
step waits for no other output (the default providers) and the whole catalog is in progress at once,
the batch leaves as soon as the last product has arrived, with no linger.

Reruns must not depend on how products happened to be grouped. So as soon as a batch is submitted,
each member's *own* submission key gets a pointer record to the batch job in Prefect's result store:
a rerun finds its product's share through that pointer (and the batch's cached wait result), and a run
killed mid-wait resumes the batch job instead of paying for the items again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from providers.contract import JobRef, JobResult, Step

from .costs import JobCost
from .runtime import RunContext, submission_key
from .stopping import InFlightJob, Interrupted
from .submission import HeldSubmission
from .tasks import JobFailedWithResult, TaskSet, forget, wait_key

MAX_LINGERS = 4  # a batch collects for at most this many lingers while expected products keep arriving


@dataclass
class _Member:
    id: str
    key: str
    request: BaseModel
    items: int
    estimate: int | None
    future: asyncio.Future[JobResult]


@dataclass
class Batcher:
    run: RunContext
    tasks: TaskSet
    provider: str
    step: Step
    linger: float = 1.0
    queue: list[_Member] = field(default_factory=list)
    _timer: asyncio.TimerHandle | None = None
    _running: set[asyncio.Task[Any]] = field(default_factory=set)
    _resumed: dict[str, asyncio.Task[JobResult]] = field(default_factory=dict)
    _expected: set[str] | None = None
    """Products whose step may still bring members and none of which has arrived yet (``expect``);
    None while nobody said what to expect: then only the linger ends a batch's collection."""
    _collecting_since: float = 0.0
    _departing: int = 0
    """Batches flushed whose submission has not been answered yet."""
    _first_sent: bool = False
    _settled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the first batch has been sent, or while none is on its way (``settled``)."""

    def __post_init__(self) -> None:
        self._update_settled()

    @property
    def max_items(self) -> int:
        return self.run.provider(self.provider).limits.max_batch_size

    def expect(self, product: str) -> None:
        """``product``'s step will bring members to this batcher unless it ends first (``arrived``)."""
        if self._expected is None:
            self._expected = set()
        self._expected.add(product)
        self._update_settled()

    def arrived(self, product: str) -> None:
        """``product`` brought its members, or its step ended without them: stop waiting for it."""
        if self._expected is not None:
            self._expected.discard(product)
        if self._all_arrived() and self.queue:
            self._nobody_else_coming()
        self._update_settled()

    async def settled(self) -> None:
        """Returns once the run's first batch has been sent (its submission answered), at once while
        none is on its way (nobody expected, nothing queued), and after ``MAX_LINGERS`` lingers at most.

        A run's other steps wait on this as they start (``pipeline``). Each of their task runs takes
        ~5 ms of the event loop and sends events the Prefect server writes: the members, which reach
        the batcher through several awaits, came in behind them (the last of 20 arrived 0.12 s after
        the first), and the batch's in-flight lease then took 0.12 s against the busy server (0.03 s
        without them). Only the first batch: a later one may wait long for an in-flight slot."""
        if not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), MAX_LINGERS * self.linger)

    def _update_settled(self) -> None:
        if self._first_sent or not (self._expected or self.queue or self._departing):
            self._settled.set()
        else:
            self._settled.clear()

    async def submit(
        self, member: str, key: str, request: BaseModel, items: int, estimate: int | None
    ) -> tuple[JobResult, bool]:
        """This member's share of a batch job, and whether the batch was reused from an earlier run."""
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self.queue.append(_Member(member, key, request, items, estimate, future))
        if self._expected is not None:
            self._expected.discard(member.split("#")[0])
        if sum(m.items for m in self.queue) >= self.max_items:
            self._flush()
        elif self._all_arrived():
            self._nobody_else_coming()
        else:
            self._linger_from_now()
        self._update_settled()
        share = await future
        return share, share.ref.host.run_id != self.run.run_id

    async def resume(self, pointer: JobRef) -> JobResult:
        """Wait on a batch job an earlier (crashed) run submitted; each batch is waited on once."""
        job = pointer.model_copy(update={"host": pointer.host.model_copy(update={"member": None})})
        if job.job_id not in self._resumed:
            self._resumed[job.job_id] = asyncio.create_task(self._wait(job))
        result = await asyncio.shield(self._resumed[job.job_id])
        return self.run.provider(self.provider).split_result(result, member_of(pointer))

    def _linger_from_now(self) -> None:
        """Collect for ``linger`` more seconds. While products expected are still arriving, each
        arrival starts the linger again, up to ``MAX_LINGERS`` of them since the batch's first member:
        products are started one after another (~7 ms each of the event loop's time), so at a short
        linger (0.1 s, the benchmark's x10) 20 products that were all expected split into two
        batches: one request and one poll more, against ProdVisual's 60 a minute."""
        loop = asyncio.get_running_loop()
        if self._timer is None:
            self._collecting_since = loop.time()
            if self.run.products_unstarted and not self._expected:
                # Products the run still has to start start as earlier ones finish, a few at a time
                # over some tenths of a second: one batch for them, not one each (60 products at x10:
                # ProdVisual 3 batches in 0.24 s for 3 products, where the script sent 1).
                self._timer = loop.call_at(
                    self._collecting_since + MAX_LINGERS * self.linger, self._linger_over
                )
                return
        elif self._expected:
            self._timer.cancel()
        else:
            return
        due = min(loop.time() + self.linger, self._collecting_since + MAX_LINGERS * self.linger)
        self._timer = loop.call_at(due, self._linger_over)

    def _all_arrived(self) -> bool:
        """Every product that could still bring members has: each one expected (``expect``) arrived,
        and the run has no product left to start (one that starts later would want the same batch)."""
        return self._expected == set() and self.run.products_unstarted == 0

    def _nobody_else_coming(self) -> None:
        """Every product expected has arrived: lingering would only delay the batch. It still waits
        while the provider's pace holds it back (``_linger_over``): products that start meanwhile join
        it, and a fuller batch costs nothing then (at ProdVisual's real rate, sending each product's
        images as soon as it came cut the images per request from 50 to 10)."""
        if self._timer is not None:
            self._timer.cancel()
        self._linger_over()

    def _linger_over(self) -> None:
        """The linger is over; but while the provider's pace would hold the batch back anyway, keep
        collecting: a fuller batch costs nothing then and saves requests (ProdVisual counts its
        polls against the same 60/min and caps requests at 10,000 a day)."""
        self._timer = None
        wait = self.run.limiters[self.provider].seconds_until_free()
        if wait > 0.05 and self.queue:
            self._timer = asyncio.get_running_loop().call_later(wait, self._linger_over)
            return
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        members, self.queue = self.queue, []
        chunk: list[_Member] = []
        for member in members:  # never split one product's items across two batches
            if chunk and sum(m.items for m in chunk) + member.items > self.max_items:
                self._start(chunk)
                chunk = []
            chunk.append(member)
        if chunk:
            self._start(chunk)

    def _start(self, members: list[_Member]) -> None:
        self._departing += 1
        self._update_settled()
        task = asyncio.create_task(self._run_batch(members))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _wait(self, ref: JobRef) -> JobResult:
        try:
            result: JobResult = forget(await self.tasks.wait(ref, version=self.run.settings.cache_version))
            return result
        except JobFailedWithResult as exc:
            return exc.result

    async def _submit(
        self, members: list[_Member], batch: BaseModel, key: str, estimate: int | None, *, again: bool
    ) -> JobRef:
        # each member's own record of the batch on its way (written as it is sent): a rerun may group
        # the products otherwise, and must still find that their items may have been paid for
        submit = self.tasks.submit_forced if again else self.tasks.submit
        ref: JobRef = forget(
            await submit(
                self.provider,
                self.step,
                batch,
                label=f"batch-{len(members)}-products",
                cache_key=key,
                estimate=estimate,
                intent_keys=[m.key for m in members],
            )
        )
        await asyncio.gather(  # one record each, written at once (a batch has up to 50 members)
            *(
                self.tasks.cache.put(
                    m.key, ref.model_copy(update={"host": ref.host.model_copy(update={"member": m.id})})
                )
                for m in members
            )
        )
        # the batch's JobRef and each member's pointer are persisted: nothing of it is on its way any more
        await self.run.intents.end([key, *[m.key for m in members]], self.run.run_id)
        return ref

    def _sent(self) -> None:
        self._departing -= 1
        self._first_sent = True
        self._update_settled()

    def _keep(self, members: list[_Member], ref: JobRef) -> None:
        """A batch job this run stopped waiting for: kept for the next run; paid by this run unless an
        earlier run submitted it."""
        products = tuple(dict.fromkeys(m.id.split("#")[0] for m in members))
        self.run.stop.keep(
            InFlightJob(provider=self.provider, step=str(self.step), job_id=ref.job_id, products=products)
        )
        if ref.host.run_id == self.run.run_id:
            for m in members:
                self.run.costs.add(
                    JobCost(
                        provider=self.provider,
                        step=str(self.step),
                        product=m.id.split("#")[0],
                        job_id=ref.job_id,
                        charged=m.estimate,
                        original_run=self.run.run_id,
                    )
                )

    async def _run_batch(self, members: list[_Member]) -> None:
        plugin = self.run.provider(self.provider)
        sent = _Once(self._sent)
        try:
            merged = plugin.merge_requests(self.step, [(m.id, m.request) for m in members])
            if not merged or len(merged) != 1:
                raise RuntimeError(
                    f"{self.provider} merged {len(members)} members into {len(merged or [])} batches"
                )
            [batch] = merged
            key = submission_key(self.provider, self.step, batch, self.run.settings.cache_version)
            estimates = [m.estimate for m in members]
            estimate = (
                None if any(e is None for e in estimates) else sum(e for e in estimates if e is not None)
            )
            async with self.run.limiters[self.provider].job_slot():
                result, ref = await self._batch_job(members, batch, key, estimate, again=False, sent=sent)
                if result.status == "failed" and ref.host.run_id != self.run.run_id:
                    # An earlier run's batch of exactly these items failed, every item refunded: this
                    # run pays for a new one, once (as for a job of its own, pipeline._obtain_alone).
                    # Without it, a failed product whose rerun groups it alone as before never got
                    # another image.
                    result, ref = await self._batch_job(members, batch, key, estimate, again=True, sent=sent)
        except BaseException as exc:  # every member learns why its batch failed
            sent()
            for m in members:
                if not m.future.done():
                    m.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for m in members:
            if not m.future.done():
                m.future.set_result(plugin.split_result(result, m.id))

    async def _batch_job(
        self,
        members: list[_Member],
        batch: BaseModel,
        key: str,
        estimate: int | None,
        *,
        again: bool,
        sent: Callable[[], None],
    ) -> tuple[JobResult, JobRef]:
        """The batch submitted (or its earlier job, unless ``again``; then ``sent``) and waited on."""
        # finished even when the run stops meanwhile: the job and its members' pointers persist
        ref = await self.run.stop.finish(
            self._submit(members, batch, key, estimate, again=again),
            orphaned=lambda r: self._keep(members, r),
        )
        sent()
        if ref.held:  # every member's share is held with it
            raise HeldSubmission(ref, earlier=ref.host.run_id != self.run.run_id)
        try:
            return await self._wait(ref), ref
        except (Interrupted, asyncio.CancelledError):
            self._keep(members, ref)
            raise


class _Once:
    """``call`` on the first call only."""

    def __init__(self, call: Callable[[], None]) -> None:
        self.call: Callable[[], None] | None = call

    def __call__(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            call()


def member_of(pointer: JobRef) -> str:
    """The batch member a pointer record stands for (set on every member pointer)."""
    if pointer.host.member is None:
        raise ValueError(f"{pointer.provider} job {pointer.job_id} is not a batch member's pointer")
    return pointer.host.member


async def cached_share(run: RunContext, tasks: TaskSet, pointer: JobRef) -> JobResult | None:
    """A finished member share found through its pointer record, or None."""
    result = await tasks.cache.get(wait_key(pointer, run.settings.cache_version))
    if not isinstance(result, JobResult):
        return None
    share = run.provider(pointer.provider).split_result(result, member_of(pointer))
    return share if share.status == "completed" else None


def batches_across_products(run: RunContext, provider: str) -> bool:
    from providers.contract import Provider

    plugin = run.provider(provider)
    return plugin.limits.max_batch_size > 1 and type(plugin).merge_requests is not Provider.merge_requests
