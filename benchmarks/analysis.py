"""Figures from the sandboxes' own records, and the wall-time lower bound of a catalog.

Everything here reads what the "provider" saw (``Sandbox.requests``, ``charges``, ``jobs``), never
what listingflow says about itself.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any


def counted_times(box: Any, group: str, since: float = 0.0, until: float = math.inf) -> list[float]:
    return sorted(r.t for r in list(box.requests) if r.counted and group in r.groups and since <= r.t < until)


def paid_submissions(box: Any, since: float = 0.0, until: float = math.inf) -> list[Any]:
    """Charge records of paid submissions (one per job or batch), oldest first."""
    return sorted(
        (c for c in list(box.charges) if c.kind == "charge" and since <= c.t < until), key=lambda c: c.t
    )


def status_count(box: Any, status: int, since: float = 0.0, until: float = math.inf) -> int:
    return sum(1 for r in list(box.requests) if r.status == status and since <= r.t < until)


def route_counts(box: Any, since: float = 0.0, until: float = math.inf) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in list(box.requests):
        if since <= r.t < until:
            out[r.route] = out.get(r.route, 0) + 1
    return dict(sorted(out.items()))


def timeline(box: Any, start: float, until: float = math.inf) -> dict[str, Any]:
    """When each route was asked, in seconds from ``start`` (the run's start): where a run's time went
    (start-up before the first request, gaps between paid submissions, the tail after the last)."""
    requests = sorted((r for r in list(box.requests) if start <= r.t < until), key=lambda r: r.t)
    routes: dict[str, list[float]] = {}
    for r in requests:
        routes.setdefault(r.route, []).append(round(r.t - start, 3))
    paid = [round(c.t - start, 3) for c in paid_submissions(box, start, until)]
    gaps = sorted((round(b - a, 3) for a, b in itertools.pairwise(paid)), reverse=True)
    return {
        "first_request_s": min((t[0] for t in routes.values()), default=None),
        "paid_s": paid,
        "largest_paid_gaps_s": gaps[:5],
        "routes_s": routes,
    }


def rate_per_window(times: list[float], window: float) -> float | None:
    """Events per ``window`` seconds between the first and the last event: (n - 1) / span."""
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0]) * window


def per_window(times: list[float], window: float) -> list[int]:
    """Events in consecutive windows of ``window`` seconds, counted from the first event."""
    if not times:
        return []
    counts = [0] * (int((times[-1] - times[0]) // window) + 1)
    for t in times:
        counts[int((t - times[0]) // window)] += 1
    return counts


def max_in_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def saturation(
    box: Any, group: str, limit: int, window: float, *, since: float = 0.0, until: float = math.inf
) -> dict[str, Any]:
    """Paid submissions and counted requests per window vs the limit of ``group``."""
    paid = [c.t for c in paid_submissions(box, since, until)]
    counted = counted_times(box, group, since, until)
    paid_rate = rate_per_window(paid, window)
    req_rate = rate_per_window(counted, window)
    return {
        "group": group,
        "limit": limit,
        "window_s": window,
        "paid_submissions": len(paid),
        "counted_requests": len(counted),
        "span_s": (paid[-1] - paid[0]) if len(paid) > 1 else None,
        "paid_per_window": paid_rate,
        "requests_per_window": req_rate,
        "paid_saturation": None if paid_rate is None else paid_rate / limit,
        "request_saturation": None if req_rate is None else req_rate / limit,
        "max_counted_in_any_window": max_in_window(counted, window),
        "http_429": status_count(box, 429, since, until),
    }


@dataclass(frozen=True)
class Limit:
    requests: int
    window: float

    @property
    def interval(self) -> float:
        return self.window / self.requests

    def span(self, requests: int) -> float:
        """From the first to the last of ``requests`` sent as the window allows: N at once, N more
        a window later."""
        return math.floor(max(0, requests - 1) / self.requests) * self.window


def pipeline_lower_bound(
    *,
    products: int,
    variations: int,
    styles: int,
    limits: dict[str, Limit],
    job: dict[str, float],
    any_without_variations: bool,
) -> dict[str, Any]:
    """Lower bound of the default pipeline scheduled by data (copy: ListingRVA and images: ProdVisual
    batches at once; A+ on Pixii once both exist; Scale on Pixii once the image exists), from the
    catalog's minimal request counts, the limits and the job durations.

    Minimal counted requests (independent of how listingflow polls):
    * ListingRVA ``ai``: one submit and at least one poll per listing job (listing jobs have no webhook);
      ``products``: one create per product plus one list request; ``global``: both.
    * ProdVisual ``api``: ceil(images / 50) batch submits, one poll each (batches are asynchronous),
      one ``/v1/styles``.
    * Pixii ``submit``: one per A+ job and one per variation (polls are not limited).

    For each group: head (the earliest its first request can be useful) + the time R requests need
    at N per window sent as the window allows (N at once, the next N a window later) + tail (the least
    work left after its last request); the bound is the largest of these and of one product's chain.
    """
    d_l, d_p, d_x = job["listingrva"], job["prodvisual"], job["pixii"]
    batches = math.ceil(products * styles / 50)
    groups = {
        ("listingrva", "ai"): (2 * products, 0.0, d_x),
        ("listingrva", "products"): (products + 1, 0.0, d_l + d_x),
        ("listingrva", "global"): (3 * products + 1, 0.0, d_x),
        ("prodvisual", "api"): (2 * batches + 1, 0.0, d_x),
        ("pixii", "submit"): (products + variations, d_p if variations else max(d_l, d_p), d_x),
    }
    parts = {}
    for (provider, group), (requests, head, tail) in groups.items():
        limit = limits.get(f"{provider}.{group}")
        if limit is None:
            continue
        parts[f"{provider}.{group}"] = {
            "requests": requests,
            "head_s": head,
            "tail_s": tail,
            "bound_s": head + limit.span(requests) + tail,
        }
    chain = max(d_l, d_p) + d_x
    binding = max(parts, key=lambda k: parts[k]["bound_s"])
    bound = max(chain, parts[binding]["bound_s"])
    return {
        "bound_s": bound,
        "binding": binding if bound > chain else "chain",
        "chain_s": chain,
        "groups": parts,
    }


def single_group_bound(*, requests: int, limit: Limit, head: float = 0.0, tail: float = 0.0) -> float:
    return head + limit.span(requests) + tail
