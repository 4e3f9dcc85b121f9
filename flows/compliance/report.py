"""Compliance across a run's products, for the run manifest, the report artifact and the CLI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

MAX_LISTED = 50
"""Non-compliant products listed by name in the report and the CLI; the run manifest has them all."""


STATUSES = ("pass", "warn", "fail", "not checked")


def tally(products: Iterable[Any]) -> dict[str, int]:
    """Products per compliance status (``pass``/``warn``/``fail``; ``not checked`` for the rest)."""
    counts = Counter(p.compliance or "not checked" for p in products)
    return {s: counts[s] for s in STATUSES}


def summary_line(products: Iterable[Any]) -> str | None:
    """``compliance: 4 pass, 1 warn, 2 fail`` (None when no product was checked)."""
    counts = tally(products)
    if not any(counts[s] for s in ("pass", "warn", "fail")):
        return None
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s] or s != "not checked"]
    return "compliance: " + ", ".join(parts)


def noncompliant(products: Iterable[Any], limit: int = MAX_LISTED, reasons: int | None = None) -> list[str]:
    """``US/B0... fail: reason; reason`` per failing then warning product, at most ``limit`` lines and
    ``reasons`` reasons each (all recorded ones by default)."""
    flagged = sorted(
        (p for p in products if p.compliance in ("fail", "warn")), key=lambda p: p.compliance != "fail"
    )
    lines = [f"{p.key} {p.compliance}: " + "; ".join(p.compliance_reasons[:reasons]) for p in flagged[:limit]]
    if len(flagged) > limit:
        lines.append(f"... and {len(flagged) - limit} more (run manifest: products[].compliance)")
    return lines


def markdown(products: Iterable[Any]) -> str:
    """The report artifact's compliance section."""
    line = summary_line(products)
    if line is None:
        return ""
    return "\n".join([f"**{line[0].upper()}{line[1:]}**", "", *[f"- {x}" for x in noncompliant(products)]])
