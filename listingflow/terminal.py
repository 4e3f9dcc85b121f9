"""Where a ``listingflow run`` is, while it runs: one line per provider and an overall line.

On a terminal, a live display refreshed a few times a second; piped (CI, ``| tee``), plain lines that
are never wrapped or cut: one per finished product and a status line per provider every
``PLAIN_STATUS_SECONDS``. Both are run observers (``flows.observer``): the flow calls them on its
event loop, and the display is refreshed from a task on that loop, so nothing is read across threads.

The expected end is what the providers' limits allow for the work left: per provider, the submissions
left at its slowest route group's rate (after those its current window still has room for), or its
jobs left through its in-flight cap at the mean time a job has been in flight so far, whichever is
longer, plus one job's time; the run ends with its slowest provider.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from flows.observer import JobEvent, ProviderPlan, RunObserver, RunStart

REFRESH_SECONDS = 0.25
PLAIN_STATUS_SECONDS = 10.0
STATUS_STYLES = {"complete": "green", "deferred": "yellow", "interrupted": "yellow", "skipped": "yellow"}


@dataclass
class ProviderTally:
    """One provider's jobs in this run, from the observer's events."""

    submitted: int = 0
    resumed: int = 0
    done: int = 0
    failed: int = 0
    rejected: int = 0
    reused: int = 0
    busy_seconds: float = 0.0  # jobs in flight integrated over time: / finished jobs = mean time in flight
    _since: float = field(default_factory=time.monotonic)

    @property
    def in_flight(self) -> int:
        return max(0, self.submitted + self.resumed - self.done - self.failed)

    def add(self, event: JobEvent) -> None:
        now = time.monotonic()
        self.busy_seconds += self.in_flight * (now - self._since)
        self._since = now
        setattr(self, event, getattr(self, event) + 1)

    def mean_job_seconds(self) -> float | None:
        finished = self.done + self.failed
        return self.busy_seconds / finished if finished else None


def provider_seconds_left(plan: ProviderPlan, tally: ProviderTally) -> float | None:
    """Seconds until this provider's share is done at its limits (None: no job finished yet to time)."""
    reused = tally.reused // max(1, plan.batch_size)
    left = max(0, plan.submissions - tally.submitted - tally.rejected - reused)
    if not left and not tally.in_flight:
        return 0.0
    rates = plan.limiter.rate_use() if plan.limiter else []
    slowest = min(rates, key=lambda r: r.limit / r.window, default=None)
    at_rate = 0.0
    if slowest is not None:
        room = max(0, slowest.limit - slowest.used)
        at_rate = max(0, left - room) * slowest.window / slowest.limit
    mean = tally.mean_job_seconds()
    if mean is None:
        return None
    cap = plan.limiter.inflight if plan.limiter else 1
    through_cap = (left + tally.in_flight) / max(1, cap) * mean
    return max(at_rate, through_cap) + mean


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Board(RunObserver):
    """The counts and lines both displays show; ``bind_stop`` receives the run's stop switch."""

    def __init__(self, console: Console, bind_stop: Callable[[Any], None] | None = None) -> None:
        self.console = console
        self.bind_stop = bind_stop
        self.run: RunStart | None = None
        self.tallies: dict[str, ProviderTally] = {}
        self.products_done = 0
        self.t0 = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self.run is not None

    def phase(self, text: str) -> None:
        """What the command is doing before the run starts (sandboxes, Prefect server, pre-flight)."""

    def note(self, text: str) -> None:
        """A line worth keeping on screen (where the sandboxes and the Prefect API are)."""
        self.console.print(text, style="dim", soft_wrap=True, markup=False, highlight=False)

    def close(self) -> None:
        """The run is over (or never started): stop refreshing. Safe to call more than once."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def on_stoppable(self, stop: Any) -> None:
        if self.bind_stop is not None:
            self.bind_stop(stop)

    def on_start(self, start: RunStart) -> None:
        self.run, self.t0 = start, time.monotonic()
        self.tallies = {name: ProviderTally() for name in start.providers}
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def on_job_event(self, provider: str, step: str, event: JobEvent) -> None:
        self.tallies.setdefault(provider, ProviderTally()).add(event)

    def on_product_done(self, outcome: Any, done: int, total: int) -> None:
        self.products_done = done

    async def _tick(self) -> None:
        """Override: refresh the display from the run's event loop."""

    def seconds_left(self) -> float | None:
        assert self.run is not None
        left = [provider_seconds_left(plan, self.tallies[name]) for name, plan in self.run.providers.items()]
        return None if any(s is None for s in left) else max([0.0, *[s for s in left if s is not None]])

    def provider_counts(self, name: str) -> str:
        t = self.tallies[name]
        reused = f", reused {t.reused}" if t.reused else ""
        return (
            f"submitted {t.submitted}, in flight {t.in_flight}, done {t.done}, "
            f"failed {t.failed + t.rejected}{reused}"
        )

    def provider_rate(self, name: str) -> str:
        """The busiest route group: requests in its current window against its limit, and the next slot."""
        limiter = self.run.providers[name].limiter if self.run else None
        rates = limiter.rate_use() if limiter else []
        if not rates:
            return "no rate limit"
        busiest = max(rates, key=lambda r: (r.waiting, r.used / r.limit))
        text = f"{busiest.group} {busiest.used}/{busiest.limit} per {busiest.window:g}s"
        if busiest.waiting:
            text += f", {busiest.waiting} waiting for a slot"
        if busiest.used >= busiest.limit and busiest.next_slot_seconds > 0:
            text += f", next window in {busiest.next_slot_seconds:.0f}s"
        return text

    def overall(self) -> str:
        assert self.run is not None
        elapsed = time.monotonic() - self.t0
        line = f"products {self.products_done}/{self.run.products}, elapsed {duration(elapsed)}"
        left = self.seconds_left()
        if left is None:
            return line + ", expected end: after the first jobs finish"
        end = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
        return line + f", expected end in {duration(left)} ({end})"


class PlainBoard(Board):
    """Plain lines for a pipe or a log: never wrapped, never cut, no control characters."""

    def __init__(
        self,
        console: Console,
        bind_stop: Callable[[Any], None] | None = None,
        every: float = PLAIN_STATUS_SECONDS,
    ) -> None:
        super().__init__(console, bind_stop)
        self.every = every

    def line(self, text: str) -> None:
        print(text, file=self.console.file, flush=True)

    def phase(self, text: str) -> None:
        self.line(text)

    def note(self, text: str) -> None:
        self.line(text)

    def close(self) -> None:
        if self._ticker is not None:  # the last counts, once
            self.status()
        super().close()

    def on_start(self, start: RunStart) -> None:
        super().on_start(start)
        self.line(f"run {start.run_id}: {start.products} products; outputs: {start.archive}")

    def on_product_done(self, outcome: Any, done: int, total: int) -> None:
        super().on_product_done(outcome, done, total)
        self.line(f"product {done}/{total} {outcome.key} {outcome.status}")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.status()

    def status(self) -> None:
        for name in self.tallies:
            self.line(f"{name}: {self.provider_counts(name)}; {self.provider_rate(name)}")
        self.line(self.overall())


class LiveBoard(Board):
    """A live display on a terminal: a spinner while starting, then the provider and overall lines."""

    def __init__(self, console: Console, bind_stop: Callable[[Any], None] | None = None) -> None:
        super().__init__(console, bind_stop)
        self.live = Live(console=console, refresh_per_second=1 / REFRESH_SECONDS, transient=True)

    def phase(self, text: str) -> None:
        self.live.update(Spinner("dots", text=Text(text, style="dim")))
        if not self.live.is_started:
            self.live.start()

    def close(self) -> None:
        super().close()
        if self.live.is_started:
            if self.run is not None:
                self.live.update(self.render())
            self.live.stop()
            if self.run is not None:  # the last state stays on screen above the summary
                self.console.print(self.render())

    def on_product_done(self, outcome: Any, done: int, total: int) -> None:
        super().on_product_done(outcome, done, total)
        style = STATUS_STYLES.get(outcome.status, "red")
        self.console.print(Text.assemble("  ", (outcome.key, "bold"), " ", (outcome.status, style)))

    async def _tick(self) -> None:
        while True:
            self.live.update(self.render())
            await asyncio.sleep(REFRESH_SECONDS)

    def render(self) -> Group:
        """Two lines per provider (counts; rate) and the overall line, each short enough for 80 columns."""
        lines: list[Text] = []
        for name in self.tallies:
            lines.append(Text.assemble((f"{name:<11}", "bold"), self.provider_counts(name)))
            lines.append(Text(" " * 11 + self.provider_rate(name), style="dim"))
        lines.append(Text(self.overall(), style="bold"))
        return Group(*lines)


def make_board(console: Console, bind_stop: Callable[[Any], None] | None = None) -> Board:
    """The live display on a terminal, plain lines otherwise."""
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveBoard(console, bind_stop)
    return PlainBoard(console, bind_stop)
