"""Helpers for flow tests: run the flow, read the archive, compare with the sandboxes' records."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from flows.catalog_flow import catalog_flow, observed_catalog_flow
from flows.observer import RunObserver
from flows.params import RunParameters
from flows.summary import RunSummary

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "catalog.csv")


async def run_flow(observer: RunObserver | None = None, **params: Any) -> tuple[Any, RunSummary]:
    """The deployment's flow with these parameters (the CLI's, ``observed_catalog_flow``, when an
    ``observer`` is given): its final state and its result, the run's summary."""
    params.setdefault("catalog", EXAMPLE)
    model = RunParameters.model_validate(params)
    if observer is None:
        state = await catalog_flow(**model.model_dump(mode="json", by_alias=True), return_state=True)
    else:
        state = await observed_catalog_flow(model, observer)
    summary = await state.aresult(raise_on_failure=False)
    assert isinstance(summary, RunSummary), f"the flow run ended without a summary: {state!r}"
    return state, summary


def paid_submissions(sandboxes: dict[str, Any]) -> dict[str, int]:
    """Jobs each sandbox charged credits for (its own ledger is the truth)."""
    return {name: sum(1 for c in box.charges if c.kind == "charge") for name, box in sandboxes.items()}


def net_charged(sandboxes: dict[str, Any]) -> dict[str, int]:
    return {name: box.net_credits() for name, box in sandboxes.items()}


def archived_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta.json"))


def archived_outputs(
    archive: Path | dict[str, bytes], manifest_key: str | None, step: str
) -> list[dict[str, Any]]:
    """A step's archived outputs, as recorded in the product's manifest: in a local archive folder,
    or in a bucket's objects (key -> body)."""
    assert manifest_key, "the product has no manifest"
    body = archive[manifest_key] if isinstance(archive, dict) else (archive / manifest_key).read_bytes()
    return list(json.loads(body)["steps"][step]["outputs"])


def meta(path: Path) -> dict[str, Any]:
    return json.loads(path.with_name(path.name + ".meta.json").read_text())


def duplicate_payments(sandboxes: dict[str, Any]) -> list[tuple[str, str]]:
    """Charged jobs whose request payload another charged, unrefunded job already had."""
    dupes = []
    for name, box in sandboxes.items():
        seen: set[str] = set()
        for job in sorted(box.jobs.values(), key=lambda j: j.created):
            if job.charged <= 0 or (job.fail and job.refunded >= job.charged):
                continue
            # a batch pays per item: two batches must not share an item, whatever their grouping
            units = (
                job.payload["items"]
                if "items" in job.payload and "item_ids" in job.payload
                else [job.payload]
            )
            for unit in units:
                key = json.dumps([job.kind if len(units) == 1 else "item", unit], sort_keys=True, default=str)
                if key in seen:
                    dupes.append((name, key))
                seen.add(key)
    return dupes


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment (sandboxes, settings) plus the test Prefect server's URL."""
    import os

    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    env.update(extra or {})
    return env


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` (a sandbox ledger, a process) until it holds, or fail naming ``what``."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def written(write: Callable[[BinaryIO], None]) -> Any:
    """The JSON document ``write`` produces (a writer such as ``CostSummary.write_document``), parsed."""
    out = io.BytesIO()
    write(out)
    return json.loads(out.getvalue())
