"""Per-provider rate and in-flight limits, held across processes by Prefect global concurrency limits.

Each provider route group gets a rate limit (``<prefix>-<provider>-<group>``) and each provider an
in-flight limit (``<prefix>-<provider>-inflight``). Every acquisition uses ``strict=True``: a missing
limit raises instead of running unthrottled.

**Rate limits are granted in chunks, spent at a local pace.** A route group's global limit is a leaky
bucket of ``chunk`` slots decaying at the documented rate (less ``rate_margin``). A process takes a whole
chunk in one acquisition and spends it locally, one request per interval, within the span the chunk
covers (``chunk / decay`` seconds from the moment it asked). The server grants the next
chunk, to this process or another, only once the previous one has decayed, so chunks never overlap in
time and the combined stream of every process stays at the documented rate. Nothing is held across a
crash: an unused chunk simply decays. The chunk covers about ``rate_chunk_seconds`` (10 s) of requests.

Why our own code in front of Prefect's: asking the server once per request costs one round trip per
request, serialized per process, and a request that arrives a moment early is denied and restarts the
bucket's decay (the denial rewrites the row; PrefectHQ/prefect#23183, #15618). Measured on this 2-core
machine against SQLite: one round trip per request reached 0.13-0.69 of the rate, local pacing alone
0.98-0.99 (``benchmarks/README.md``). Asking once per chunk, at the moment the bucket is known to be empty,
keeps the server the arbiter across processes and costs one round trip per ~10 s instead. The
acquisition is the client call ``prefect.concurrency.asyncio.rate_limit`` makes
(``increment_concurrency_slots(mode="rate_limit")``), not ``rate_limit`` itself: that one retries
denials inside, which hides when the successful attempt was sent, and the chunk's span starts then.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency._asyncio import (
    ConcurrencySlotAcquisitionError,
    aacquire_concurrency_slots_with_lease,
    arelease_concurrency_slots_with_lease,
)
from prefect.exceptions import ObjectNotFound

from listingflow.settings import Settings
from providers.contract import Provider, RouteLimit


@dataclass(frozen=True)
class LimitSpec:
    name: str
    limit: int
    slot_decay_per_second: float | None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def route_limits(provider: type[Provider], settings: Settings) -> list[RouteLimit]:
    """The provider's declared route limits with operator overrides applied."""
    overrides = settings.rate_limits.get(provider.name, {})
    out = []
    for group in provider.limits.route_groups:
        o = overrides.get(group.group)
        out.append(RouteLimit(group=group.group, requests=o.requests, per_seconds=o.per_seconds) if o else group)
    return out


def inflight_limit(provider: type[Provider], settings: Settings) -> int:
    return settings.inflight_limits.get(provider.name, provider.limits.max_inflight_jobs)


def server_decay(group: RouteLimit, margin: float) -> float:
    """Slots per second the global bucket frees: the documented rate less the safety margin."""
    return group.requests / group.per_seconds / (1 + margin)


def chunk_size(group: RouteLimit, margin: float, chunk_seconds: float) -> int:
    """Requests granted per global acquisition: about ``chunk_seconds`` worth, never more than the
    documented window allows, at least one."""
    return max(1, min(group.requests, int(server_decay(group, margin) * chunk_seconds)))


def limit_specs(provider: type[Provider], settings: Settings) -> list[LimitSpec]:
    prefix = settings.limit_prefix
    specs = [
        LimitSpec(
            f"{prefix}-{provider.name}-{_slug(g.group)}",
            chunk_size(g, settings.rate_margin, settings.rate_chunk_seconds),
            server_decay(g, settings.rate_margin),
        )
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
                except Exception:  # noqa: BLE001 - a concurrent creator won: read again and update
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
            GlobalConcurrencyLimitCreate(name=spec.name, limit=spec.limit, active=True, slot_decay_per_second=decay)
        )
        return f"created {spec.name}"
    if existing.limit == spec.limit and existing.active and abs((existing.slot_decay_per_second or 0.0) - decay) < 1e-9:
        return None
    await client.update_global_concurrency_limit(
        spec.name, GlobalConcurrencyLimitUpdate(limit=spec.limit, active=True, slot_decay_per_second=decay)
    )
    return f"updated {spec.name}"


_LATE_SECONDS = 0.005  # a request sent this much after its turn shifts what follows (``_Bucket.sent_late``)
_LEAD_SECONDS = 0.05  # how long before its turn in its slowest group a request takes turns in the others


@dataclass
class _Bucket:
    """One route group's pace in this process, and the chunk of global grants it is spending."""

    name: str
    interval: float  # seconds between two requests of this process
    chunk: int  # slots per global acquisition
    span: float  # seconds a chunk covers: chunk / server decay
    use_global: bool
    next_at: float = 0.0  # earliest moment for this process's next request
    tokens: int = 0  # grants left in the current chunk
    expires: float = 0.0  # the current chunk's grants are void from this moment
    next_ask: float = 0.0  # the server bucket is certainly empty again from this moment
    lag: float = 0.0  # how late the current chunk's requests went out, at most
    asks: int = 0  # global acquisitions made (diagnostics, benchmarks)
    _refilling: asyncio.Future[None] | None = None

    async def reserve(self, not_before: float) -> tuple[float, float]:
        """A send time no earlier than ``not_before`` and the moment the grant it spends expires."""
        while True:
            start = max(time.monotonic(), not_before, self.next_at)
            if not self.use_global:
                self.next_at = start + self.interval
                return start, float("inf")
            if self.tokens > 0 and start < self.expires:
                self.tokens -= 1
                self.next_at = start + self.interval
                return start, self.expires
            # One refill at a time, awaited outside any lock: a request queued beyond this chunk (its
            # turn in another group is seconds ahead) waits for the next chunk, while the requests
            # whose turns still fall inside this one take its grants meanwhile. Holding a lock across
            # the refill made them miss their turns (ListingRVA: /ai/* requests stalled 0.5-1.6 s
            # every ~30 s behind a refill of the global group, measured).
            if self._refilling is None or self._refilling.done():
                self._refilling = asyncio.ensure_future(self._refill())
                self._refilling.add_done_callback(_retrieve)
            await asyncio.shield(self._refilling)

    def sent_late(self, sent: float, late: float) -> None:
        """A request left ``late`` seconds after its turn (a busy event loop): the requests after it keep
        their distance from when it really went, and so does the next chunk, or the request a window
        later would land inside that request's window (a benchmark under full CPU load saw one 429)."""
        self.next_at = max(self.next_at, sent + self.interval)
        self.lag = max(self.lag, late)

    async def _refill(self) -> None:
        dropped = 0  # connections to the Prefect server lost in a row (Prefect's client retries 5xx itself)
        async with get_client() as client:
            while True:
                while (delay := self.next_ask + self.lag - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                # Ask only when the server's bucket has room for a whole chunk: reading costs nothing,
                # while a denied ask rewrites the row and restarts the decay (module docstring).
                try:
                    state = await self._read_limit(client)
                except httpx.TransportError as exc:
                    dropped = await _backoff(dropped, exc)
                    continue
                if state.limit < self.chunk:  # set up by a process with smaller chunks: ask for what fits
                    self.chunk, self.span = state.limit, state.limit / state.slot_decay_per_second
                wait = self._seconds_until_free(state)
                if wait > 0:
                    self.next_ask = time.monotonic() + wait + 0.02
                    continue
                asked = time.monotonic()
                try:
                    response = await client.increment_concurrency_slots(
                        names=[self.name], slots=self.chunk, mode="rate_limit"
                    )
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code != 423:
                        raise
                    continue  # another process took the room first: read again
                except httpx.TransportError as exc:  # the ask may or may not have been counted: read again
                    dropped = await _backoff(dropped, exc)
                    continue
                if not response.json():  # strict: a limit that vanished never means "unthrottled"
                    raise LimitMissing(self.name)
                break
        granted = time.monotonic()
        self.asks += 1
        # The server granted somewhere between ``asked`` and ``granted``: the chunk covers
        # [grant, grant + span), so spend it in [granted, asked + span) and ask again after granted + span.
        self.tokens = self.chunk
        self.lag = 0.0
        self.expires = asked + self.span
        self.next_ask = granted + self.span + 0.02

    async def _read_limit(self, client: Any) -> Any:
        try:
            state = await client.read_global_concurrency_limit_by_name(self.name)
        except ObjectNotFound:
            raise LimitMissing(self.name) from None
        if (state.slot_decay_per_second or 0.0) <= 0:
            raise LimitMissing(self.name, "has no slot decay: it is not a rate limit")
        return state

    def _seconds_until_free(self, state: Any) -> float:
        """How long until the server's bucket has room for a whole chunk (0: now)."""
        decay = state.slot_decay_per_second
        room = state.limit - self.chunk
        if state.active_slots <= room:
            return 0.0
        # active_slots is already decayed to now; the stored count decays in whole slots from ``updated``
        since = max(0.0, (datetime.now(timezone.utc) - state.updated).total_seconds())
        stored = state.active_slots + math.floor(decay * since)
        return (stored - room) / decay - since


@dataclass
class _LeasePool:
    """This process's share of a provider's in-flight limit, held as a few Prefect leases.

    Why not ``prefect.concurrency.asyncio.concurrency()`` per job, as before: each one is an
    acquisition, a release and a renewal thread with its own sync client that renews at once, all
    serialized per process; at zero latency that was ~0.12 s per product (benchmarks phase D,
    0.125 -> 0.246 s per product with global limits on). Here a process takes slots in leases sized to
    the jobs waiting for them (as many as the limit has room for), hands them out locally, renews all of
    its leases from one task, and gives back a lease once its slots have stayed unused for ``linger``
    seconds. The server stays the arbiter across processes (a slot is in use here only while a lease
    holds it), and a crashed process's leases expire after ``lease_seconds`` (the repossessor frees them).
    """

    name: str
    lease_seconds: float = 60.0
    linger: float = 1.0
    leases: dict[Any, int] = field(default_factory=dict)  # lease id -> slots it holds
    renewed: dict[Any, float] = field(default_factory=dict)
    held: int = 0
    used: int = 0
    waiting: int = 0
    free_low: int = 0  # the fewest held slots left free since the last trim
    acquisitions: int = 0  # leases taken (diagnostics, benchmarks)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _grower: asyncio.Task[None] | None = None
    _keeper: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            while self.used >= self.held:
                # one grower at a time; a finished one (seen by its waiters or not) is never waited on
                if self._grower is None or self._grower.done():
                    self._grower = asyncio.create_task(self._grow())
                    self._grower.add_done_callback(_retrieve)
                grower = self._grower
                self._changed.clear()
                await self._changed.wait()
                if grower.done() and not grower.cancelled() and grower.exception() is not None:
                    raise grower.exception()  # type: ignore[misc]
        finally:
            self.waiting -= 1
        self.used += 1
        self.free_low = min(self.free_low, self.held - self.used)

    def release(self) -> None:
        self.used -= 1
        self._changed.set()

    async def _grow(self) -> None:
        try:
            async with get_client() as client:
                try:
                    state = await client.read_global_concurrency_limit_by_name(self.name)
                except ObjectNotFound:
                    raise LimitMissing(self.name) from None
            # as many as are waiting here, within the room the limit has now (at least one: then wait)
            want = max(1, min(self.waiting, state.limit - state.active_slots))
            try:
                response = await aacquire_concurrency_slots_with_lease(
                    [self.name], slots=want, lease_duration=self.lease_seconds, strict=True, suppress_warnings=True
                )
            except ConcurrencySlotAcquisitionError as exc:
                if "must be created" in str(exc):
                    raise LimitMissing(self.name) from None
                raise
            self.leases[response.lease_id] = want
            self.renewed[response.lease_id] = time.monotonic()
            self.held += want
            self.acquisitions += 1
            if self._keeper is None or self._keeper.done():
                self.free_low = self.held - self.used
                self._keeper = asyncio.create_task(self._keep())
                self._keeper.add_done_callback(_retrieve)
        finally:
            self._changed.set()

    async def _keep(self) -> None:
        """Renew the leases and give back those whose slots stayed unused, until none is held."""
        while self.leases:
            await asyncio.sleep(self.linger)
            spare = min(self.free_low, self.held - self.used) if not self.waiting else 0
            for lease_id, slots in sorted(self.leases.items(), key=lambda kv: -kv[1]):
                if slots <= spare:
                    spare -= slots
                    with contextlib.suppress(Exception):  # not given back: it expires on its own
                        await self._give_back(lease_id)
            self.free_low = self.held - self.used
            due = [i for i, at in self.renewed.items() if time.monotonic() - at > self.lease_seconds / 3]
            if due:
                async with get_client() as client:
                    for lease_id in due:
                        try:
                            await client.renew_concurrency_lease(lease_id=lease_id, lease_duration=self.lease_seconds)
                            self.renewed[lease_id] = time.monotonic()
                        except httpx.HTTPStatusError as exc:
                            if exc.response.status_code != 404:
                                continue  # transient: the next pass retries well within the lease
                            # expired (this process stalled past its lease): the slots are no longer ours
                            self.held -= self.leases.pop(lease_id)
                            self.renewed.pop(lease_id, None)
                        except httpx.TransportError:
                            continue

    async def _give_back(self, lease_id: Any) -> None:
        self.held -= self.leases.pop(lease_id)
        self.renewed.pop(lease_id, None)
        await arelease_concurrency_slots_with_lease(lease_id)

    async def aclose(self) -> None:
        for task in (self._grower, self._keeper):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for lease_id in list(self.leases):
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


class LimitMissing(RuntimeError):
    """A global limit listingflow relies on does not exist (or is not a rate limit): never run unthrottled."""

    def __init__(self, name: str, why: str = "does not exist") -> None:
        super().__init__(f"global concurrency limit {name!r} {why}; it is created at flow start (ensure_limits)")


@dataclass
class ProviderLimiter:
    """The throttle and in-flight guard one provider's calls go through in this process."""

    provider: str
    groups: dict[str, RouteLimit]
    inflight: int
    prefix: str
    use_global: bool = True
    margin: float = 0.01
    chunk_seconds: float = 10.0
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _sem: asyncio.Semaphore | None = None
    _pool: _LeasePool | None = None
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
            chunk_seconds=settings.rate_chunk_seconds,
        )

    @property
    def global_acquisitions(self) -> int:
        return sum(b.asks for b in self._buckets.values())

    async def throttle(self, groups: list[str]) -> None:
        """Awaited before every request: wait for this request's turn in every group it counts against."""
        self.requests += 1
        # the slowest group first: its turn decides when the request goes
        limited = sorted((g for g in groups if g in self.groups), key=lambda g: (-self._bucket(g).interval, g))
        if not limited:
            return
        not_before = time.monotonic()
        for _ in range(5):
            slots = [await self._bucket(limited[0]).reserve(not_before)]
            if len(limited) > 1:
                # Take turns in the faster groups only shortly before that turn. Taken at once, they
                # moved those groups' pace to where this request stood in the slow group's queue: a
                # ListingRVA product create (products + global groups) then waited behind every queued
                # /ai/* submission's global turn, and the submissions ran dry behind the creates
                # (every other /ai/* turn unused for seconds at a time, measured).
                if (lead := slots[0][0] - time.monotonic() - _LEAD_SECONDS) > 0:
                    await asyncio.sleep(lead)
                slots += [await self._bucket(g).reserve(slots[0][0]) for g in limited[1:]]
            start = max(s for s, _ in slots)
            # a request that counts against several groups goes when all of them allow it; if waiting
            # for one made another's grant expire, take fresh turns from that moment on
            if all(start < expires for _, expires in slots):
                break
            not_before = start
        for g in limited:
            bucket = self._buckets[g]
            bucket.next_at = max(bucket.next_at, start + bucket.interval)
        delay = start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = time.monotonic()
        if sent - start > _LATE_SECONDS:
            for g in limited:
                self._buckets[g].sent_late(sent, sent - start)

    def seconds_until_free(self) -> float:
        """How long until this process could send this provider's next request in its busiest group
        (0 when a request could go now). Batching keeps collecting items while this is positive."""
        now = time.monotonic()
        return max([0.0] + [b.next_at - now for b in self._buckets.values()])

    def _bucket(self, group: str) -> _Bucket:
        if group not in self._buckets:
            g = self.groups[group]
            decay = server_decay(g, self.margin)
            chunk = chunk_size(g, self.margin, self.chunk_seconds)
            self._buckets[group] = _Bucket(
                name=f"{self.prefix}-{self.provider}-{_slug(group)}", interval=1 / decay, chunk=chunk,
                span=chunk / decay, use_global=self.use_global,
            )  # fmt: skip
        return self._buckets[group]

    @asynccontextmanager
    async def job_slot(self) -> AsyncIterator[None]:
        """Held from submit until the job is seen finished: one slot of the provider's in-flight limit,
        from this process's pool of leases (``_LeasePool``)."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.inflight)
        async with self._sem:
            if not self.use_global:
                yield
                return
            if self._pool is None:
                self._pool = _LeasePool(f"{self.prefix}-{self.provider}-inflight")
            await self._pool.acquire()
            try:
                yield
            finally:
                self._pool.release()

    @property
    def lease_acquisitions(self) -> int:
        return self._pool.acquisitions if self._pool else 0

    async def aclose(self) -> None:
        """Give back every in-flight slot this process still holds (end of the flow run)."""
        if self._pool is not None:
            await self._pool.aclose()
