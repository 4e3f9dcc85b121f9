"""Per-provider rate and in-flight limits, held across processes by Prefect global concurrency limits.

Each provider route group gets a limit of N slots (``<prefix>-<provider>-<group>``: N requests per
window) and each provider an in-flight limit (``<prefix>-<provider>-inflight``). A missing limit raises
instead of running unthrottled.

**A rate limit is a sliding window of slots.** Every request takes a slot of each group it counts
against and leaves it unusable for the group's window (plus a small margin): N slots allow N requests
at once, as the providers document (Pixii: 10 submissions, then 10 more a minute later), and never more
than N in any window, whichever processes, runs or workers send them. A slot goes back to the server
only once its window is over, so a slot another process takes next cannot overlap it. Daily caps are
the providers' own and handled as deferrals, not here.

Why our own pool in front of Prefect's: one ``concurrency()``/``rate_limit()`` call per request is a
server round trip serialized per process, and a decaying rate limit spreads requests evenly instead of
allowing the documented burst (a script sending 10 at once finished Pixii's queue ~30 s earlier per 36
submissions). Here a process takes slots in leases sized to the requests waiting (within the room the
limit has), hands them out locally and renews them from one task (``_SlotPool``); the Prefect server
stays the arbiter across processes, and a crashed process's leases expire on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound

from flows.settings import Settings
from providers.contract import Provider, RouteLimit


@dataclass(frozen=True)
class LimitSpec:
    name: str
    limit: int
    slot_decay_per_second: float | None
    window: float | None = None  # a rate limit's window in seconds (None: an in-flight limit)

    def describe(self) -> str:
        if self.window:
            return f"{self.limit} requests per {self.window:g} s window"
        return f"{self.limit} job(s) in flight"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def route_limits(provider: type[Provider], settings: Settings) -> list[RouteLimit]:
    """The provider's declared route limits with operator overrides applied."""
    overrides = settings.rate_limits.get(provider.name, {})
    out = []
    for group in provider.limits.route_groups:
        o = overrides.get(group.group)
        out.append(
            RouteLimit(group=group.group, requests=o.requests, per_seconds=o.per_seconds) if o else group
        )
    return out


def inflight_limit(provider: type[Provider], settings: Settings) -> int:
    return settings.inflight_limits.get(provider.name, provider.limits.max_inflight_jobs)


# A request's slot is held for its window from just before it is sent; the margin covers the time to
# the provider receiving it (and clock drift), never less than 50 ms.
_MIN_MARGIN_SECONDS = 0.05


def window_hold(group: RouteLimit, margin: float) -> float:
    """Seconds a rate slot stays unusable after a request: the documented window plus a margin."""
    return group.per_seconds + max(_MIN_MARGIN_SECONDS, group.per_seconds * margin)


def limit_specs(provider: type[Provider], settings: Settings) -> list[LimitSpec]:
    """One plain limit of N slots per route group (N requests per window: each request holds a slot
    for the window) and one in-flight limit per provider."""
    prefix = settings.limit_prefix
    specs = [
        LimitSpec(f"{prefix}-{provider.name}-{_slug(g.group)}", g.requests, None, g.per_seconds)
        for g in route_limits(provider, settings)
    ]
    specs.append(LimitSpec(f"{prefix}-{provider.name}-inflight", inflight_limit(provider, settings), None))
    return specs


async def ensure_limits(specs: list[LimitSpec]) -> list[str]:
    """Create or update (and activate) each global limit; returns what changed. Idempotent, and safe
    when several runs start at once (a create that loses the race becomes an update)."""
    async with get_client() as client:

        async def one(spec: LimitSpec) -> str | None:
            for attempt in range(3):
                try:
                    return await _ensure_one(client, spec)
                except Exception:  # a concurrent creator won: read again and update
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            return None

        # concurrently: a run's limits are independent, and this is on every run's path to its first request
        changes = await asyncio.gather(*(one(spec) for spec in specs))
    return [c for c in changes if c]


async def _ensure_one(client: Any, spec: LimitSpec) -> str | None:
    decay = spec.slot_decay_per_second or 0.0
    try:
        existing = await client.read_global_concurrency_limit_by_name(spec.name)
    except ObjectNotFound:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name=spec.name, limit=spec.limit, active=True, slot_decay_per_second=decay
            )
        )
        return f"created {spec.name}"
    if (
        existing.limit == spec.limit
        and existing.active
        and abs((existing.slot_decay_per_second or 0.0) - decay) < 1e-9
    ):
        return None
    await client.update_global_concurrency_limit(
        spec.name, GlobalConcurrencyLimitUpdate(limit=spec.limit, active=True, slot_decay_per_second=decay)
    )
    return f"updated {spec.name}"


@dataclass
class _SlotPool:
    """This process's share of one global limit, held as a few Prefect leases and handed out locally.

    A slot in use blocks its limit's room; a slot given back locally is ready again ``hold`` seconds
    later. With ``hold=0`` this is an in-flight limit (a job holds a slot from submit until it is seen
    finished). With ``hold`` = a rate window it is that window, exactly as the providers count: a slot is
    used by one request and ready again a window after, so ``limit`` slots allow ``limit`` requests at
    once and never more than ``limit`` in any sliding window, across every process holding slots of the
    limit (a slot is only ever given back to the server once its window is over).

    Why not ``prefect.concurrency.asyncio.concurrency()`` per job or request: each one is an acquisition,
    a release and a renewal thread, serialized per process; at zero latency that was ~0.12 s per product
    (benchmarks phase D), and a rate limit with slot decay spreads requests evenly instead of allowing
    the documented burst. Here a process takes slots in leases sized to the callers waiting (within the
    room the limit has), renews all of its leases from one task, and gives a lease back once all its
    slots have been ready and unused for ``linger`` seconds. A crashed process's leases expire after
    ``lease_seconds`` (the repossessor frees them); that is at least a window after their last use.
    """

    name: str
    hold: float = 0.0
    use_global: bool = True
    local_slots: int = 0  # without global limits: this many slots, held locally from the start
    linger: float = 1.0
    poll: float = 0.5  # how often to ask the server again while it has no room
    leases: dict[Any, int] = field(default_factory=dict)  # lease id -> slots it holds
    in_use: dict[Any, int] = field(default_factory=dict)
    renewed: dict[Any, float] = field(default_factory=dict)
    free: list[tuple[float, int, Any]] = field(default_factory=list)  # heap of (ready at, seq, lease id)
    waiting: int = 0
    limit: int | None = None  # the server's limit, as last read
    acquisitions: int = 0  # leases taken (diagnostics, benchmarks)
    _dropped: int = 0  # connections to the Prefect server lost in a row
    _seq: Any = field(default_factory=itertools.count)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _grower: asyncio.Task[None] | None = None
    _keeper: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        if not self.use_global:
            self.leases[None], self.in_use[None] = self.local_slots, 0
            for _ in range(self.local_slots):
                heapq.heappush(self.free, (0.0, next(self._seq), None))

    @property
    def lease_seconds(self) -> float:
        """Renewed every third of it: a lease outlives its slots' last use by at least a window."""
        return max(60.0, 4 * self.hold)

    @property
    def held(self) -> int:
        return sum(self.leases.values())

    async def acquire(self) -> Any:
        """A slot (its lease id), once one is ready here or the limit has room for more."""
        self.waiting += 1
        try:
            while True:
                now = time.monotonic()
                if self.free and self.free[0][0] <= now:
                    lease = heapq.heappop(self.free)[2]
                    self.in_use[lease] += 1
                    return lease
                may_grow = self.use_global and (self.limit is None or self.held < self.limit)
                if may_grow and (self._grower is None or self._grower.done()):
                    self._grower = asyncio.create_task(self._grow())
                    self._grower.add_done_callback(_retrieve)
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.free[0][0] - now if self.free else None)
                grower = self._grower
                if grower is not None and grower.done() and not grower.cancelled():
                    failure = grower.exception()
                    if failure is not None:
                        raise failure
        finally:
            self.waiting -= 1

    def release(self, lease: Any) -> None:
        """The slot is free again ``hold`` seconds from now."""
        if lease in self.in_use:
            self.in_use[lease] -= 1
            heapq.heappush(self.free, (time.monotonic() + self.hold, next(self._seq), lease))
        self._changed.set()

    def used(self, now: float) -> int:
        """Slots taken here within their window: requests this process sent in the current window."""
        return sum(self.in_use.values()) + sum(1 for at, _, _ in self.free if at > now)

    def seconds_until_ready(self) -> float:
        """0 when a slot is ready here or more could be asked for; else until the next one is ready."""
        if not self.free or (self.use_global and (self.limit is None or self.held < self.limit)):
            return 0.0
        return max(0.0, self.free[0][0] - time.monotonic())

    async def _grow(self) -> None:
        try:
            await self._ask()
            self._dropped = 0
        except httpx.TransportError as exc:  # the ask may or may not have been counted: ask again
            self._dropped = await _backoff(self._dropped, exc)
        finally:
            self._changed.set()

    async def _ask(self) -> None:
        async with get_client() as client:
            try:
                state = await client.read_global_concurrency_limit_by_name(self.name)
            except ObjectNotFound:
                raise LimitMissing(self.name) from None
            self.limit = state.limit
            room = state.limit - state.active_slots
            if room <= 0:  # held elsewhere: ask again shortly (slots here may get ready meanwhile)
                await asyncio.sleep(self.poll)
                return
            want = max(1, min(self.waiting, room))
            try:
                response = await client.increment_concurrency_slots_with_lease(
                    names=[self.name], slots=want, mode="concurrency", lease_duration=self.lease_seconds
                )
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:
                    raise
                return  # another process took the room first
            body = response.json()
            if not body.get("limits"):  # strict: a limit that vanished never means "unlimited"
                raise LimitMissing(self.name)
        self._add_lease(body["lease_id"], want)

    def _add_lease(self, lease_id: Any, slots: int) -> None:
        self.leases[lease_id], self.in_use[lease_id] = slots, 0
        self.renewed[lease_id] = time.monotonic()
        for _ in range(slots):
            heapq.heappush(self.free, (0.0, next(self._seq), lease_id))
        self.acquisitions += 1
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep())
            self._keeper.add_done_callback(_retrieve)

    async def _keep(self) -> None:
        """Renew the leases and give back those whose slots stayed ready and unused, until none is held."""
        while self.leases:
            await asyncio.sleep(self.linger)
            if not self.waiting:
                for lease_id in self._idle_leases(time.monotonic() - self.linger):
                    with contextlib.suppress(Exception):  # not given back: it expires on its own
                        await self._give_back(lease_id)
            due = [i for i, at in self.renewed.items() if time.monotonic() - at > self.lease_seconds / 3]
            if due:
                await self._renew(due)

    def _idle_leases(self, ready_before: float) -> list[Any]:
        """Leases none of whose slots is in use or was used within its window (plus ``linger``)."""
        ready: dict[Any, int] = {}
        for at, _, lease in self.free:
            if at <= ready_before:
                ready[lease] = ready.get(lease, 0) + 1
        return [lease for lease, n in ready.items() if lease is not None and n == self.leases.get(lease)]

    async def _renew(self, due: list[Any]) -> None:
        async with get_client() as client:
            for lease_id in due:
                try:
                    await client.renew_concurrency_lease(lease_id=lease_id, lease_duration=self.lease_seconds)
                    self.renewed[lease_id] = time.monotonic()
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code == 404:  # expired (this process stalled): no longer ours
                        self._drop(lease_id)
                except httpx.TransportError:
                    continue  # transient: the next pass retries well within the lease

    def _drop(self, lease_id: Any) -> None:
        self.leases.pop(lease_id, None)
        self.in_use.pop(lease_id, None)
        self.renewed.pop(lease_id, None)
        self.free = [entry for entry in self.free if entry[2] != lease_id]
        heapq.heapify(self.free)

    async def _give_back(self, lease_id: Any) -> None:
        self._drop(lease_id)
        async with get_client() as client:
            await client.release_concurrency_slots_with_lease(lease_id)

    async def aclose(self) -> None:
        for task in (self._grower, self._keeper):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for lease_id in [lease for lease in self.leases if lease is not None]:
            if self.hold and any(at > time.monotonic() for at, _, lease in self.free if lease == lease_id):
                continue  # its window is not over: giving it back now could let another process burst
            with contextlib.suppress(Exception):  # an unreleased lease still expires on its own
                await self._give_back(lease_id)


async def _backoff(dropped: int, exc: Exception, attempts: int = 5) -> int:
    """Wait before asking the Prefect server again after a lost connection; raise ``exc`` after
    ``attempts``. A refill is shared by every request waiting on the group, so one dropped connection
    would otherwise fail all of them."""
    if dropped >= attempts:
        raise exc
    await asyncio.sleep(0.2 * 2**dropped)
    return dropped + 1


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a task's exception as seen: its waiters re-raise it, and it is not logged again at exit."""
    if not task.cancelled():
        task.exception()


def _release_all(taken: list[tuple[_SlotPool, Any]]) -> None:
    """Give back each slot once (a second call finds none left)."""
    while taken:
        window, lease = taken.pop()
        window.release(lease)


class LimitMissing(RuntimeError):
    """A global limit listingflow relies on does not exist (or is not a rate limit): never run unthrottled."""

    def __init__(self, name: str, why: str = "does not exist") -> None:
        super().__init__(
            f"global concurrency limit {name!r} {why}; it is created at flow start (ensure_limits)"
        )


@dataclass(frozen=True)
class RateUse:
    """One route group's rate use, as a progress display shows it."""

    group: str
    used: int
    limit: int
    window: float
    next_slot_seconds: float  # 0 when a request could go now
    waiting: int = 0  # requests waiting for a slot (room held by this run's window or by other runs)


@dataclass
class ProviderLimiter:
    """The throttle and in-flight guard one provider's calls go through in this process."""

    provider: str
    groups: dict[str, RouteLimit]
    inflight: int
    prefix: str
    use_global: bool = True
    margin: float = 0.01
    answer_timeout: float = 120.0  # a request's slots are handed back by then even if never answered
    _windows: dict[str, _SlotPool] = field(default_factory=dict)
    _sem: asyncio.Semaphore | None = None
    _pool: _SlotPool | None = None
    requests: int = 0

    @classmethod
    def for_provider(cls, provider: type[Provider], settings: Settings) -> ProviderLimiter:
        return cls(
            provider=provider.name,
            groups={g.group: g for g in route_limits(provider, settings)},
            inflight=inflight_limit(provider, settings),
            prefix=settings.limit_prefix,
            use_global=settings.use_global_limits,
            margin=settings.rate_margin,
        )

    @property
    def global_acquisitions(self) -> int:
        return sum(w.acquisitions for w in self._windows.values())

    async def throttle(self, groups: list[str]) -> Callable[[], None]:
        """Awaited right before every request: a slot of each group it counts against. The slowest group
        first: its turn decides when the request goes. Returns what to call once the answer is in: the
        slots are ready again a window after that (the provider counted the request at some moment
        between sending and answering). Not called within ``answer_timeout`` (a plugin's own code, a
        lost task), the slots are handed back then."""
        self.requests += 1
        limited = sorted(
            (g for g in groups if g in self.groups),
            key=lambda g: (self.groups[g].requests / self.groups[g].per_seconds, g),
        )
        taken: list[tuple[_SlotPool, Any]] = []
        try:
            for g in limited:
                window = self._window(g)
                taken.append((window, await window.acquire()))
        except BaseException:
            _release_all(taken)
            raise
        fallback = asyncio.get_running_loop().call_later(self.answer_timeout, _release_all, taken)

        def answered() -> None:
            fallback.cancel()
            _release_all(taken)

        return answered

    def seconds_until_free(self) -> float:
        """How long until this process could send this provider's next request in its busiest group
        (0 when a request could go now). Batching keeps collecting items while this is positive."""
        return max([0.0] + [w.seconds_until_ready() for w in self._windows.values()])

    def rate_use(self) -> list[RateUse]:
        """Each route group's requests in its current window against its limit, and when its next slot
        is ready (for progress displays; read on the run's event loop)."""
        now = time.monotonic()
        out = []
        for name, group in self.groups.items():
            pool = self._windows.get(name)
            used, wait, waiting = (
                (pool.used(now), pool.seconds_until_ready(), pool.waiting) if pool else (0, 0.0, 0)
            )
            out.append(RateUse(name, used, group.requests, group.per_seconds, wait, waiting))
        return out

    def _window(self, group: str) -> _SlotPool:
        if group not in self._windows:
            g = self.groups[group]
            self._windows[group] = _SlotPool(
                name=f"{self.prefix}-{self.provider}-{_slug(group)}",
                hold=window_hold(g, self.margin),
                use_global=self.use_global,
                local_slots=g.requests,
            )
        return self._windows[group]

    @asynccontextmanager
    async def job_slot(self) -> AsyncIterator[None]:
        """Held from submit until the job is seen finished: one slot of the provider's in-flight limit,
        from this process's pool of leases (``_SlotPool`` without a hold)."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.inflight)
        async with self._sem:
            if not self.use_global:
                yield
                return
            if self._pool is None:
                self._pool = _SlotPool(f"{self.prefix}-{self.provider}-inflight")
            lease = await self._pool.acquire()
            try:
                yield
            finally:
                self._pool.release(lease)

    @property
    def lease_acquisitions(self) -> int:
        return self._pool.acquisitions if self._pool else 0

    async def aclose(self) -> None:
        """Give back the slots this process still holds (end of the flow run); a rate slot whose
        window is not over is left to expire."""
        for pool in [*self._windows.values(), *([self._pool] if self._pool else [])]:
            await pool.aclose()
