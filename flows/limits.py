"""Per-provider rate and in-flight limits, held across processes by Prefect global concurrency limits.

Each provider route group gets a rate limit (``<prefix>-<provider>-<group>``, ``limit=1`` and
``slot_decay_per_second = requests / per_seconds``) and each provider an in-flight limit
(``<prefix>-<provider>-inflight``). A leaky bucket with ``limit=1`` never lets more than the documented
number of requests into any sliding window, which is how the providers count (a larger burst would
need a lower sustained rate to stay under a sliding window). Every acquisition uses ``strict=True``:
a missing limit raises instead of running unthrottled.

In front of each global limit sits a process-local twin: a pacer that spaces requests exactly at the
documented rate, and a semaphore of the in-flight size. Why our own code: Prefect serializes
acquisitions per process and a waiter only retries after the server's ``Retry-After`` (measured ~80%
of the configured rate, freed slots idle 0.5-2 s; PrefectHQ/prefect#23183, #15618). With the local
twin in front, a single process asks the server only when a slot is already free, so its grant is
immediate; across processes the global limit still arbitrates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.asyncio import concurrency, rate_limit
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


def limit_specs(provider: type[Provider], settings: Settings) -> list[LimitSpec]:
    prefix = settings.limit_prefix
    specs = [
        LimitSpec(f"{prefix}-{provider.name}-{_slug(g.group)}", 1, g.requests / g.per_seconds)
        for g in route_limits(provider, settings)
    ]
    specs.append(LimitSpec(f"{prefix}-{provider.name}-inflight", inflight_limit(provider, settings), None))
    return specs


async def ensure_limits(specs: list[LimitSpec]) -> list[str]:
    """Create or update (and activate) each global limit; returns what changed. Idempotent, and safe
    when several runs start at once (a create that loses the race becomes an update)."""
    changed = []
    async with get_client() as client:
        for spec in specs:
            for attempt in range(3):
                try:
                    change = await _ensure_one(client, spec)
                    break
                except Exception:  # noqa: BLE001 - a concurrent creator won: read again and update
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            if change:
                changed.append(change)
    return changed


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


@dataclass
class _Pacer:
    """Spaces acquisitions ``interval`` seconds apart, first come first served."""

    interval: float
    next_at: float = 0.0


@dataclass
class ProviderLimiter:
    """The throttle and in-flight guard one provider's calls go through in this process."""

    provider: str
    groups: dict[str, RouteLimit]
    inflight: int
    prefix: str
    use_global: bool = True
    margin: float = 0.01
    _pacers: dict[str, _Pacer] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _sem: asyncio.Semaphore | None = None
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

    def _names(self, groups: list[str]) -> list[str]:
        return [f"{self.prefix}-{self.provider}-{_slug(g)}" for g in groups if g in self.groups]

    async def throttle(self, groups: list[str]) -> None:
        """Awaited before every request: pace locally, then take the global rate-limit slot."""
        self.requests += 1
        limited = [g for g in groups if g in self.groups]
        if not limited:
            return
        async with self._lock:
            now = time.monotonic()
            start = max([now] + [self._pacer(g).next_at for g in limited])
            for g in limited:
                self._pacers[g].next_at = start + self._pacers[g].interval
        delay = start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.use_global:
            await rate_limit(self._names(limited), occupy=1, strict=True)

    def _pacer(self, group: str) -> _Pacer:
        if group not in self._pacers:
            g = self.groups[group]
            self._pacers[group] = _Pacer(interval=g.per_seconds / g.requests * (1 + self.margin))
        return self._pacers[group]

    @asynccontextmanager
    async def job_slot(self, *, lease_seconds: float = 60) -> AsyncIterator[None]:
        """Held from submit until the job is seen finished. The lease is renewed in the background
        while held, so a short lease only matters when the holder dies: its slot frees within a
        minute (plus the server's repossessor cycle) instead of blocking the next run."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.inflight)
        async with self._sem:
            if not self.use_global:
                yield
                return
            async with concurrency(
                f"{self.prefix}-{self.provider}-inflight",
                occupy=1,
                strict=True,
                lease_duration=max(60.0, lease_seconds),
                raise_on_lease_renewal_failure=False,
            ):
                yield
