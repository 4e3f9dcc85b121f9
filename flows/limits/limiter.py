"""``ProviderLimiter``: the throttle and in-flight guard one provider's calls go through in this
process, each a ``SlotPool`` per route group (rate) and one for the provider's jobs in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from flows.settings import Settings
from providers.contract import Provider, RouteLimit

from .pool import SlotPool
from .specs import inflight_limit, route_limits, slug, window_hold


def _release_all(taken: list[tuple[SlotPool, Any]]) -> None:
    """Give back each slot once (a second call finds none left)."""
    while taken:
        window, lease = taken.pop()
        window.release(lease)


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
    margin: float = 0.001
    answer_timeout: float = 120.0  # a request's slots are handed back by then even if never answered
    _windows: dict[str, SlotPool] = field(default_factory=dict)
    _sem: asyncio.Semaphore | None = None
    _pool: SlotPool | None = None
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
        taken: list[tuple[SlotPool, Any]] = []
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

    def _window(self, group: str) -> SlotPool:
        if group not in self._windows:
            g = self.groups[group]
            self._windows[group] = SlotPool(
                name=f"{self.prefix}-{self.provider}-{slug(group)}",
                hold=window_hold(g, self.margin),
                use_global=self.use_global,
                local_slots=g.requests,
                limit=g.requests,  # as ensure_limits created it: the first request asks for slots at once
            )
        return self._windows[group]

    @asynccontextmanager
    async def job_slot(self) -> AsyncIterator[None]:
        """Held from submit until the job is seen finished: one slot of the provider's in-flight limit,
        from this process's pool of leases (``SlotPool`` without a hold)."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.inflight)
        async with self._sem:
            if not self.use_global:
                yield
                return
            pool = self._inflight_pool()
            lease = await pool.acquire()
            try:
                yield
            finally:
                pool.release(lease)

    async def prime(self, slots: int, keep: float = 10.0) -> None:
        """Up to ``slots`` of each of this provider's pools (in flight and each route group's window;
        each within its limit) taken ahead of the run's first requests, all pools at once
        (``SlotPool.prime``). ``slots``: what the run's start is expected to use, e.g. one per
        product: a slot held and not used goes back after ``keep`` seconds."""
        if not self.use_global:
            return
        pools = [self._inflight_pool(), *(self._window(g) for g in self.groups)]
        await asyncio.gather(*(pool.prime(slots, keep) for pool in pools))

    @property
    def engaged(self) -> bool:
        """Slots held here or asked for: this provider's requests have started."""
        return any(pool.held or pool.waiting for pool in self._pools())

    def ask_ahead(self, slots: int) -> None:
        """The first lease of each route group's window asks for ``slots`` (within the limit): the
        request that takes it brings the next ones' slots in the same round trip."""
        if self.use_global:
            for group in self.groups:
                self._window(group).ahead = slots

    def _pools(self) -> list[SlotPool]:
        """The pools this process has opened so far (route groups' windows and the in-flight one)."""
        return [*self._windows.values(), *([self._pool] if self._pool else [])]

    def _inflight_pool(self) -> SlotPool:
        if self._pool is None:
            self._pool = SlotPool(f"{self.prefix}-{self.provider}-inflight", limit=self.inflight)
        return self._pool

    @property
    def lease_acquisitions(self) -> int:
        return self._pool.acquisitions if self._pool else 0

    async def aclose(self) -> None:
        """Give back the slots this process still holds (end of the flow run); a rate slot whose
        window is not over is left to expire."""
        await asyncio.gather(*(pool.aclose() for pool in self._pools()))  # at the end of every run: at once
