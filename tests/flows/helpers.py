"""Helpers for flow tests: run the flow, read the archive, compare with the sandboxes' records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flows.catalog_flow import LAST_SUMMARY, RunSummary, catalog_flow
from flows.params import RunParameters

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "catalog.csv")


async def run_flow(**params: Any) -> tuple[Any, RunSummary]:
    params.setdefault("catalog", EXAMPLE)
    model = RunParameters.model_validate(params)
    LAST_SUMMARY.pop("last", None)
    state = await catalog_flow(**model.model_dump(mode="json", by_alias=True), return_state=True)
    return state, LAST_SUMMARY["last"]


def paid_submissions(sandboxes: dict[str, Any]) -> dict[str, int]:
    """Jobs each sandbox charged credits for (its own ledger is the truth)."""
    return {name: sum(1 for c in box.charges if c.kind == "charge") for name, box in sandboxes.items()}


def net_charged(sandboxes: dict[str, Any]) -> dict[str, int]:
    return {name: box.net_credits() for name, box in sandboxes.items()}


def archived_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta.json"))


def meta(path: Path) -> dict[str, Any]:
    return json.loads(path.with_name(path.name + ".meta.json").read_text())
