"""Every product's chain of a run that passed its checks, ``product_concurrency`` at a time, and
stopping: on a stop request the products not started are recorded as interrupted, and those still
running after ``STOP_GRACE_SECONDS`` are cancelled (paid calls in progress are let finish)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.context import FlowRunContext

from providers.contract import Product
from providers.errors import redact

from .gallery import prepare_template
from .pipeline import ProductOutcome, ProductRecord, run_product
from .runtime import RunContext
from .stopping import RunStop
from .tasks import forget_empty_task_assets

logger = logging.getLogger("listingflow.run")

STOP_GRACE_SECONDS = 4.0
"""After a stop request, products still running this long (waiting for an in-flight slot, a download)
are cancelled; paid calls in progress are still let finish (``RunStop.finish``)."""


async def run_products(run: RunContext, tasks: Any, products: list[Product]) -> list[ProductRecord | None]:
    """Every product's chain, ``product_concurrency`` at a time; on a stop request the products not
    started are recorded as interrupted, and those still running after ``STOP_GRACE_SECONDS`` are
    cancelled."""
    progress = _Progress(len(products))
    records: list[ProductRecord | None] = [None] * len(products)
    queue = iter(enumerate(products))  # shared by the workers: each product is taken once
    run.products_unstarted = len(products)
    running: set[asyncio.Task[ProductOutcome]] = set()
    secrets = run.secrets()

    async def worker() -> None:
        # A fixed set of workers rather than one waiting coroutine per product: a gather over
        # the whole catalog holds every product's task (and result) until the last one ends.
        for index, product in queue:
            if run.stop.requested:
                run.products_unstarted -= 1
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
            run.observer.on_product_done(outcome, progress.done + 1, len(products))
            if progress.done == 0 and len(products) > 1:
                prepare_template()  # while the rest of the run waits on its providers, not at its end
            await progress.finished()

    watcher = asyncio.create_task(_cancel_after_grace(run.stop, running))
    try:
        await asyncio.gather(*(worker() for _ in range(min(run.settings.product_concurrency, len(products)))))
    finally:
        watcher.cancel()
        await progress.aclose()
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


def _crash_step(message: str) -> Any:
    from .pipeline import StepOutcome
    from .reasons import Reason

    return StepOutcome(step=None, provider="-", status="failed", error=message, reason=Reason.CRASH)


class _Progress:
    """The run's progress artifact: created while the first products start (a server round trip,
    0.06 s on the way to the first batch), updated at most every 2 s and at the last product."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.updated = total, 0, 0.0
        self.artifact = asyncio.ensure_future(_progress_artifact(total))

    async def finished(self) -> None:
        """One more product finished."""
        self.done += 1
        artifact = await self.artifact
        if artifact is not None and (time.monotonic() - self.updated > 2 or self.done == self.total):
            self.updated = time.monotonic()
            await aupdate_progress_artifact(
                artifact,
                100.0 * self.done / max(1, self.total),
                description=f"{self.done}/{self.total} products finished",
            )

    async def aclose(self) -> None:
        if not self.artifact.done():  # no product finished (a stop came before any did)
            self.artifact.cancel()
        await asyncio.gather(self.artifact, return_exceptions=True)


async def _progress_artifact(total: int) -> Any:
    """The run's progress artifact (None outside a flow run, or when the server refused it: the
    products run all the same)."""
    if FlowRunContext.get() is None:
        return None
    try:
        return await acreate_progress_artifact(0.0, description=f"0/{total} products finished")
    except Exception as exc:  # noqa: BLE001 - a progress display never stops the run
        logger.warning("progress artifact not created: %s", exc)
        return None
