"""What a run tells whoever started it in the same process (the CLI's progress display).

The observer is an argument of the flow the CLI calls (``observed_catalog_flow``), never module state: a
run started by a worker from a deployment has none, and gets ``RunObserver()``, which does nothing.
Every callback runs on the flow's event loop and must return at once (no I/O that waits).

Events are per provider job, as the providers see them: ``submitted`` (a paid submission accepted),
``rejected`` (a submission refused or failed), ``resumed`` (an earlier run's job waited on again),
``done`` and ``failed`` (a job seen finished), and ``reused`` (an output an earlier run paid for).
Rate use and the next window are read from the providers' limiters when a display asks for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # only for annotations: the CLI imports this module before Prefect, to show progress sooner
    from .limits import ProviderLimiter
    from .pipeline import ProductOutcome
    from .stopping import RunStop

logger = logging.getLogger("listingflow")

JobEvent = Literal["submitted", "rejected", "resumed", "done", "failed", "reused"]


@dataclass(frozen=True)
class ProviderPlan:
    """One provider's share of the run: the jobs it is expected to take and the limits it runs under."""

    name: str
    jobs: int  # requests the run expects to send or reuse (the estimate's jobs)
    batch_size: int = 1
    limiter: ProviderLimiter | None = None

    @property
    def submissions(self) -> int:
        """Submissions the planned jobs take: a provider batching across products sends one per batch."""
        return -(-self.jobs // max(1, self.batch_size))


@dataclass(frozen=True)
class RunStart:
    """The run is under way: what it will do, and where its outputs go."""

    run_id: str
    products: int
    archive: str
    providers: dict[str, ProviderPlan]


class RunObserver:
    """Progress callbacks of a run; each does nothing here. Subclass and override what you need."""

    def wants_plan(self) -> bool:
        """Whether ``on_start`` is used: the plan's estimate is skipped for observers that ignore it."""
        return type(self).on_start is not RunObserver.on_start

    def on_stoppable(self, stop: RunStop) -> None:
        """The run's stop switch, once the flow is running (the CLI binds Ctrl-C and SIGTERM to it then:
        Prefect's flow engine installs its own SIGTERM handler when a flow run starts)."""

    def on_start(self, start: RunStart) -> None:
        """Pre-flight checks passed; products are about to start."""

    def on_job_event(self, provider: str, step: str, event: JobEvent) -> None:
        """A provider job changed state (see the module's docstring)."""

    def on_product_done(self, outcome: ProductOutcome, done: int, total: int) -> None:
        """A product's chain ended (``done`` of ``total``), whatever its status."""


class GuardedObserver(RunObserver):
    """The caller's observer, whose errors never reach the run: a callback runs inside the submit task,
    after the provider was paid, and an error there would leave the paid job uncached. The first error is
    logged with its traceback and the observer is not called again."""

    def __init__(self, inner: RunObserver) -> None:
        self.inner = inner
        self.broken = False

    def wants_plan(self) -> bool:
        return self.inner.wants_plan()

    def _call(self, name: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            getattr(self.inner, name)(*args)
        except Exception:
            self.broken = True
            logger.exception(
                "progress observer %s failed in %s; it is not called again", type(self.inner).__name__, name
            )

    def on_stoppable(self, stop: RunStop) -> None:
        self._call("on_stoppable", stop)

    def on_start(self, start: RunStart) -> None:
        self._call("on_start", start)

    def on_job_event(self, provider: str, step: str, event: JobEvent) -> None:
        self._call("on_job_event", provider, step, event)

    def on_product_done(self, outcome: ProductOutcome, done: int, total: int) -> None:
        self._call("on_product_done", outcome, done, total)
