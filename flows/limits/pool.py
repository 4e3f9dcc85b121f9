"""``SlotPool``: this process's share of one global limit, held as a few Prefect leases.

The only module that takes, renews and gives back slots on the Prefect server, through the client's
lease endpoints (``increment_concurrency_slots_with_lease``, ``renew_concurrency_lease``,
``release_concurrency_slots_with_lease``); ``LimitMissing`` when the limit is not there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from prefect.exceptions import ObjectNotFound

from .client import prefect_client

MIN_LEASE_SECONDS = 60.0  # the Prefect server refuses shorter leases


@dataclass
class SlotPool:
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
    _dropped: int = 0  # asks lost in a row (connection dropped, server error)
    _seq: Any = field(default_factory=itertools.count)
    _line: collections.deque[asyncio.Future[Any]] = field(default_factory=collections.deque)
    _timer: asyncio.TimerHandle | None = None
    _grower: asyncio.Task[None] | None = None
    _keeper: asyncio.Task[None] | None = None
    _kept_until: float = 0.0  # a primed lease is not given back before this (``prime``)
    ahead: int = 0
    """The next lease asks for at least this many slots (``ProviderLimiter.ask_ahead``)."""

    def __post_init__(self) -> None:
        if not self.use_global:
            self.leases[None], self.in_use[None] = self.local_slots, 0
            for _ in range(self.local_slots):
                heapq.heappush(self.free, (0.0, next(self._seq), None))

    @property
    def lease_seconds(self) -> float:
        """Renewed every third of it: a lease outlives its slots' last use by at least a window."""
        return max(MIN_LEASE_SECONDS, 4 * self.hold)

    @property
    def held(self) -> int:
        return sum(self.leases.values())

    async def acquire(self) -> Any:
        """A slot (its lease id), once one is ready here or the limit has room for more. Callers wait
        in line and are handed slots in order as they get ready (``_serve``): each waiting on the
        pool's changes and timing out at the next slot's ready time, ~80 A+ submissions waiting on
        Pixii's window all woke for every slot, ~20 ms of the event loop at each window's start,
        when its submissions were due."""
        self.waiting += 1
        served: asyncio.Future[Any] | None = None
        try:
            if not self._line and self.free and self.free[0][0] <= time.monotonic():
                return self._take()
            served = asyncio.get_running_loop().create_future()
            self._line.append(served)
            self._serve()
            return await served
        except BaseException:
            if served is not None and served.done() and not served.cancelled() and not served.exception():
                self._untake(served.result())  # handed a slot as it was cancelled: never used
            raise
        finally:
            self.waiting -= 1
            if served is not None and served in self._line:
                self._line.remove(served)

    def _take(self) -> Any:
        lease = heapq.heappop(self.free)[2]
        self.in_use[lease] += 1
        return lease

    def _untake(self, lease: Any) -> None:
        if lease in self.in_use:
            self.in_use[lease] -= 1
            heapq.heappush(self.free, (0.0, next(self._seq), lease))
        self._serve()

    def _serve(self) -> None:
        """Hand the ready slots to the callers in line, first come first served; for the others,
        ask the server for more (``_grow``) where the limit has room, and wake again when the next
        slot here gets ready."""
        now = time.monotonic()
        while self._line and self.free and self.free[0][0] <= now:
            served = self._line.popleft()
            if not served.done():
                served.set_result(self._take())
        if not self._line:
            return
        may_grow = self.use_global and (self.limit is None or self.held < self.limit)
        if may_grow and _idle(self._grower):
            self._grower = asyncio.create_task(self._grow())
            self._grower.add_done_callback(self._grown)
        if self.free and (self._timer is None or self._timer.when() > self.free[0][0]):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(self.free[0][0], self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._serve()

    def _grown(self, grower: asyncio.Task[None]) -> None:
        """A failed ask fails the callers in line (they raise its error); otherwise serve them (not
        after a cancelled one: the pool is closing)."""
        if grower.cancelled():
            return
        failure = grower.exception()
        if failure is None:
            self._serve()
            return
        while self._line:
            served = self._line.popleft()
            if not served.done():
                served.set_exception(failure)

    async def prime(self, slots: int, keep: float) -> None:
        """Up to ``slots`` held (within the limit as known) before any caller wants them, kept
        ``keep`` seconds even unused: the run's first requests through this pool then find them ready
        instead of waiting a round trip to the server (0.06-0.2 s each on the benchmark's way to its
        first ProdVisual batch and its first window of Pixii submissions). Best effort: a failure
        leaves the pool as it was, to grow on demand."""
        upto = min(slots, self.limit or 1)  # a pool that served pre-flight holds a slot already
        if not self.use_global or upto <= self.held or self.waiting or not _idle(self._grower):
            return
        self._kept_until = time.monotonic() + keep
        self._grower = asyncio.create_task(self._prime_slots(upto))
        self._grower.add_done_callback(self._grown)
        await asyncio.shield(self._grower)

    async def _prime_slots(self, upto: int) -> None:
        try:
            await self._ask(upto=upto)
        except Exception:  # noqa: BLE001 - priming only saves time; callers ask again themselves
            self._kept_until = 0.0

    def release(self, lease: Any) -> None:
        """The slot is free again ``hold`` seconds from now."""
        if lease in self.in_use:
            self.in_use[lease] -= 1
            heapq.heappush(self.free, (time.monotonic() + self.hold, next(self._seq), lease))
        self._serve()

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
        except httpx.HTTPStatusError as exc:
            # A busy server (SQLite locked by its own writes) answers 503 even after the Prefect
            # client's retries: seen on 50 of 800 products' first requests under load. A lease it
            # did create anyway is never handed out here and expires on its own: ask again.
            if exc.response.status_code < 500:
                raise
            self._dropped = await _backoff(self._dropped, exc)

    async def _ask(self, *, upto: int | None = None) -> None:
        """More slots from the server: one per caller waiting, or (``upto``, a prime) as many as make
        the pool hold ``upto``; counted once this process's turn to ask has come. Straight away when
        the limit is known (as created, or as last read): one round trip on the way to a run's first
        requests instead of two. Only when the server has no room for that many (or the limit shrank)
        is the limit read to ask for what room it has."""
        async with server_turn(self) as client:
            want = max(self.waiting if upto is None else upto - self.held, self.ahead - self.held)
            if want <= 0:
                return
            if self.limit is not None and await self._increment(
                client, max(1, min(want, self.limit - self.held))
            ):
                return
            try:
                state = await client.read_global_concurrency_limit_by_name(self.name)
            except ObjectNotFound:
                raise LimitMissing(self.name) from None
            self.limit = state.limit
            room = state.limit - state.active_slots
            if room > 0:
                await self._increment(client, max(1, min(want, room)))
                return
        # held elsewhere: ask again shortly (slots here may get ready meanwhile)
        await asyncio.sleep(self.poll)

    async def _increment(self, client: Any, want: int) -> bool:
        """``want`` slots in one new lease; False when the server has no room for them (423: another
        process took it) or the limit is now below ``want`` (422)."""
        try:
            response = await client.increment_concurrency_slots_with_lease(
                names=[self.name], slots=want, mode="concurrency", lease_duration=self.lease_seconds
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in (422, 423):
                raise
            return False
        body = response.json()
        limits = body.get("limits")
        if not limits:  # strict: a limit that vanished never means "unlimited"
            raise LimitMissing(self.name)
        self.limit = limits[0].get("limit", self.limit)
        self._add_lease(body["lease_id"], want)
        return True

    def _add_lease(self, lease_id: Any, slots: int) -> None:
        self.ahead = 0
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
            if not self.waiting and time.monotonic() >= self._kept_until:
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
        async with server_turn(self) as client:
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
        async with server_turn() as client:
            await client.release_concurrency_slots_with_lease(lease_id)

    async def aclose(self) -> None:
        for task in (self._grower, self._keeper):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await asyncio.gather(*(self._close_lease(lease) for lease in self.leases if lease is not None))

    async def _close_lease(self, lease_id: Any) -> None:
        """At the process's end: a lease is given back, or held until its slots' window is over."""
        window_left = max(
            [self.hold if self.in_use.get(lease_id) else 0.0]  # a request not answered: a whole window
            + [at - time.monotonic() for at, _, lease in self.free if lease == lease_id]
        )
        with contextlib.suppress(Exception):  # an unreleased lease still expires on its own
            if self.hold and window_left > 0:
                await self._hold_until(lease_id, window_left)
            else:
                await self._give_back(lease_id)

    async def _hold_until(self, lease_id: Any, seconds: float) -> None:
        """A lease whose slots' window is not over when the process ends: giving it back now could let
        another process burst, and left alone it would block the limit for its whole ``lease_seconds``
        (four windows: a run started right after this one waited four minutes for Pixii). So it is
        renewed to end with the window (Prefect's shortest lease is 60 s)."""
        async with server_turn() as client:
            await client.renew_concurrency_lease(
                lease_id=lease_id, lease_duration=max(MIN_LEASE_SECONDS, seconds)
            )


class _Turns:
    """One process's lease calls, one at a time. Next goes a call of a pool that has requests waiting
    for a slot, then the others (primes, renewals, give-backs) in the order they asked: a run's start
    primes eight pools or more, ~0.03 s each, and its first ProdVisual batch waited behind all the
    ListingRVA ones."""

    def __init__(self) -> None:
        self.busy = False
        self.queue: list[tuple[SlotPool | None, asyncio.Future[None]]] = []
        self.opened: asyncio.Event | None = None  # ``lease_calls_wait_for``

    async def take(self, pool: SlotPool | None) -> None:
        if self.opened is not None:
            await self.opened.wait()
        if not self.busy:
            self.busy = True
            return
        entry = (pool, asyncio.get_running_loop().create_future())
        self.queue.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if not entry[1].cancelled():  # handed the turn as it was cancelled: pass it on
                self.give()
            elif entry in self.queue:
                self.queue.remove(entry)
            raise

    def give(self) -> None:
        """The turn to the next caller still waiting (one cancelled meanwhile is skipped), or free."""
        while self.queue:
            entry = next((e for e in self.queue if e[0] is not None and e[0].waiting), self.queue[0])
            self.queue.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)
                return
        self.busy = False


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = weakref.WeakKeyDictionary()


def _turns_here() -> _Turns:
    loop = asyncio.get_running_loop()
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = _Turns()
    return turns


@contextlib.contextmanager
def lease_calls_wait_for(opened: asyncio.Event) -> Iterator[None]:
    """Within it, this process's lease calls wait until ``opened`` is set. The CLI's run reads its
    inputs and runs pre-flight while Prefect creates its flow run; on Prefect's SQLite server a lease
    call that met those writes waited ~2 s (measured: pre-flight's ProdVisual read came 2.3 s late),
    so they wait for the flow run instead. Reads (the limits, the providers' free checks) do not."""
    turns = _turns_here()
    turns.opened = opened
    try:
        yield
    finally:
        turns.opened = None


@contextlib.asynccontextmanager
async def server_turn(pool: SlotPool | None = None) -> AsyncIterator[Any]:
    """A Prefect client for one lease call of ``pool``, one call at a time in this process (``_Turns``).

    Measured against Prefect 3.9.1's server: four lease increments of different limits sent at once
    took 1.9-2.5 s each on SQLite (its writers wait on each other's locks; the default local server
    of ``listingflow server``, and the tests'), 0.03 s each one after another. On PostgreSQL both
    ways take the same ~0.1 s for four: the server handles them one by one anyway."""
    turns = _turns_here()
    await turns.take(pool)
    try:
        async with prefect_client() as client:
            yield client
    finally:
        turns.give()


async def _backoff(dropped: int, exc: Exception, attempts: int = 5) -> int:
    """Wait before asking the Prefect server again after a lost connection; raise ``exc`` after
    ``attempts``. A refill is shared by every request waiting on the group, so one dropped connection
    would otherwise fail all of them."""
    if dropped >= attempts:
        raise exc
    await asyncio.sleep(0.2 * 2**dropped)
    return dropped + 1


def _idle(grower: asyncio.Task[None] | None) -> bool:
    return grower is None or grower.done()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a task's exception as seen: its waiters re-raise it, and it is not logged again at exit."""
    if not task.cancelled():
        task.exception()


class LimitMissing(RuntimeError):
    """A global limit listingflow relies on does not exist (or is not a rate limit): never run unthrottled."""

    def __init__(self, name: str, why: str = "does not exist") -> None:
        super().__init__(
            f"global concurrency limit {name!r} {why}; it is created at flow start (ensure_limits)"
        )
