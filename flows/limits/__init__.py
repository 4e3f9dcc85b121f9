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
limit has), hands them out locally and renews them from one task (``SlotPool``); the Prefect server
stays the arbiter across processes, and a crashed process's leases expire on their own.

The package: ``specs`` (the limits' names and sizes, and creating them on the Prefect server),
``pool`` (``SlotPool``: this process's leases of one limit, the only code that talks to the server per
request) and ``limiter`` (``ProviderLimiter``: one provider's throttle and in-flight guard).
"""

from .limiter import ProviderLimiter, RateUse
from .pool import LimitMissing
from .specs import LimitSpec, ensure_limits, inflight_limit, limit_specs, route_limits, window_hold

__all__ = [
    "LimitMissing",
    "LimitSpec",
    "ProviderLimiter",
    "RateUse",
    "ensure_limits",
    "inflight_limit",
    "limit_specs",
    "route_limits",
    "window_hold",
]
