"""The global concurrency limits a provider needs, and creating them on the Prefect server.

Each route group gets a plain limit of N slots (``<prefix>-<provider>-<group>``: N requests per
window) and each provider an in-flight limit (``<prefix>-<provider>-inflight``), sized from the
provider's declared limits and the operator's overrides (``LISTINGFLOW_RATE_LIMITS``, ...).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound

from flows.settings import Settings
from providers.contract import Provider, RouteLimit

from .client import prefect_client


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


def slug(text: str) -> str:
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


# A request's slot is held for its window from its answer, which comes after the provider counted it:
# the margin only covers the two clocks measuring the window differently (NTP slews a clock by at most
# 0.05%), never less than 10 ms. A margin of 1% at least 50 ms (as from the request's departure)
# put each Pixii window ~0.05 s later than the last at x10, 0.45 s over a 60-product run.
_MIN_MARGIN_SECONDS = 0.01


def window_hold(group: RouteLimit, margin: float) -> float:
    """Seconds a rate slot stays unusable after a request: the documented window plus a margin."""
    return group.per_seconds + max(_MIN_MARGIN_SECONDS, group.per_seconds * margin)


def limit_specs(provider: type[Provider], settings: Settings) -> list[LimitSpec]:
    """One plain limit of N slots per route group (N requests per window: each request holds a slot
    for the window) and one in-flight limit per provider."""
    prefix = settings.limit_prefix
    specs = [
        LimitSpec(f"{prefix}-{provider.name}-{slug(g.group)}", g.requests, None, g.per_seconds)
        for g in route_limits(provider, settings)
    ]
    specs.append(LimitSpec(f"{prefix}-{provider.name}-inflight", inflight_limit(provider, settings), None))
    return specs


async def ensure_limits(specs: list[LimitSpec]) -> list[str]:
    """Create or update (and activate) each global limit; returns what changed. Idempotent, and safe
    when several runs start at once (a create that loses the race becomes an update)."""
    async with prefect_client() as client:
        known = await _read_limits(client, {spec.name for spec in specs})

        async def one(spec: LimitSpec) -> str | None:
            for attempt in range(3):
                try:
                    return await _ensure_one(client, spec, known.pop(spec.name, _UNREAD))
                except Exception:  # a concurrent creator won: read again and update
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            return None

        # concurrently: a run's limits are independent, and this is on every run's path to its first request
        changes = await asyncio.gather(*(one(spec) for spec in specs))
    return [c for c in changes if c]


_UNREAD = object()
_PAGE = 200  # the most the server returns at once (PREFECT_API_DEFAULT_LIMIT)


async def _read_limits(client: Any, names: set[str]) -> dict[str, Any]:
    """The limits among ``names`` that exist, read in one request (a page of the server's limits)
    rather than one each: on a run's way to its first request, one round trip instead of eight
    concurrent ones (0.12 s on the benchmark's server); a missing name is one to create."""
    found: dict[str, Any] = {}
    offset = 0
    while True:
        page = await client.read_global_concurrency_limits(limit=_PAGE, offset=offset)
        found.update({limit.name: limit for limit in page if limit.name in names})
        if len(page) < _PAGE or len(found) == len(names):
            break
        offset += _PAGE
    return {name: found.get(name) for name in names}


async def _ensure_one(client: Any, spec: LimitSpec, existing: Any = _UNREAD) -> str | None:
    """``existing``: the limit as already read (None: it does not exist); read here when not given."""
    decay = spec.slot_decay_per_second or 0.0
    if existing is _UNREAD:
        try:
            existing = await client.read_global_concurrency_limit_by_name(spec.name)
        except ObjectNotFound:
            existing = None
    if existing is None:
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
