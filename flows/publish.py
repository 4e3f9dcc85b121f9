"""What a run leaves once it ends: ``runs/<id>/manifest.json``, ``cost-summary.json`` and the review
gallery in the archive, the ``cost-summary`` artifacts in Prefect. None of it changes the run's outcome:
while the archive is down the documents wait in the local spool, and a gallery that fails is a note."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.context import FlowRunContext

from .archive import ArchiveUnavailable, SpooledArchive, run_key, write_json_with_list
from .compliance import report as compliance_report
from .costs import CostSummary
from .gallery import gallery_link, product_costs, publish_gallery, run_cost
from .params import RunParameters
from .summary import RunSummary

logger = logging.getLogger("listingflow")


async def publish_run(summary: RunSummary, params: RunParameters, archive: SpooledArchive) -> None:
    """Run manifest, cost summary and review gallery into the archive; artifacts into Prefect. All at
    once, but the report artifact, which links the gallery: one after another, the archive's writes
    and the server's round trips added up at the end of every run."""
    head = manifest_head(summary, params)
    cost = summary.cost if FlowRunContext.get() is not None else None  # artifacts: only in a flow run
    table = None if cost is None else asyncio.ensure_future(_table_artifact(cost, summary.run_id))
    documents = [
        _put_run_document(
            archive,
            summary,
            "manifest.json",
            partial(write_json_with_list, head=head, key="products", items=entries(summary)),
        ),
        _publish_gallery(summary, archive, head),
    ]
    if summary.cost is not None:
        documents.append(
            _put_run_document(archive, summary, "cost-summary.json", summary.cost.write_document)
        )
    try:
        await asyncio.gather(*documents)
        if cost is not None:
            await acreate_markdown_artifact(
                _gallery_markdown(summary) + cost.markdown() + "\n\n" + _failures_markdown(summary),
                key="cost-summary-report",
                description="Cost summary, failures and compliance",
            )
    finally:
        if table is not None:
            await table


async def _table_artifact(cost: CostSummary, run_id: str) -> None:
    await acreate_table_artifact(
        cost.table(), key="cost-summary", description=f"Credits per provider, step and product, run {run_id}"
    )


async def _publish_gallery(summary: RunSummary, archive: SpooledArchive, head: dict[str, Any]) -> None:
    """``runs/<id>/index.html``: a page for reviewing the run is worth a note, never the run's outcome."""
    costs: dict[str, str] = {}
    total = run_cost(None, "")
    if (cost := summary.cost) is not None:
        costs = product_costs((x.model_dump(mode="json") for x in cost.product_totals()), cost.currency)
        total = run_cost(cost.total.model_dump(mode="json"), cost.currency)
    try:
        stored = await publish_gallery(archive, head, entries(summary), costs, total)
        summary.gallery = gallery_link(stored)
    except ArchiveUnavailable as exc:
        summary.notes.append(f"run index.html kept in the local spool: {exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. a template error: the run itself succeeded
        logger.warning("review gallery not written: %s: %s", type(exc).__name__, exc)
        summary.notes.append(f"review gallery not written: {type(exc).__name__}: {exc}")


def _gallery_markdown(summary: RunSummary) -> str:
    """A link to the review gallery above the cost report. A ``file://`` link opens only on the machine
    that holds the archive (and browsers may refuse it from the UI's page), so its text is the URL itself,
    to copy; an ``s3://`` URI is shown as code."""
    if not summary.gallery:
        return ""
    if summary.gallery.startswith("file://"):
        return f"**Review gallery:** [{summary.gallery}]({summary.gallery})\n\n"
    return f"**Review gallery:** `{summary.gallery}`\n\n"


def manifest_head(summary: RunSummary, params: RunParameters) -> dict[str, Any]:
    """``runs/<id>/manifest.json`` without its products: what the run was and how it ended. The
    products follow as ``entries``, one line each (``write_json_with_list``: as one dict, the manifest was
    ~3.7 MB of the publishing peak per 1,000 products, measured with tracemalloc)."""
    return {
        "run_id": summary.run_id,
        "catalog": summary.catalog,
        "started_at": summary.started_at,
        "finished_at": summary.finished_at,
        "parameters": params.model_dump(mode="json", by_alias=True),
        "headline": summary.headline(),
        "rejected_rows": [r.model_dump() for r in summary.rejected_rows],
        "spooled": summary.spooled,
        "notes": summary.notes,
        "status": summary.status,
        "interrupted_by": summary.interrupted,
        "in_flight": summary.in_flight,
        "compliance": dict(compliance_report.tally(summary.products)),
    }


def entries(summary: RunSummary) -> Iterator[dict[str, Any]]:
    """The run manifest's product entries, made one at a time as they are written."""
    for p in summary.products:
        yield {
            "key": p.key,
            "asin": p.asin,
            "country_code": p.country_code,
            "status": p.status,
            "failures": p.failures(),
            "manifest": p.manifest_key,
            "compliance": p.compliance,
            "compliance_findings": p.compliance_findings,
            "compliance_reasons": list(p.compliance_reasons),
            "jobs": {s: list(o.jobs) for s, o in p.steps.items()},
        }


async def _put_run_document(
    archive: SpooledArchive, summary: RunSummary, name: str, write: Callable[[BinaryIO], None]
) -> None:
    """``runs/<id>/<name>``, written by ``write`` to a file first: one line per product, never held whole
    (a 5,000-product cost summary is ~7 MB; as bytes, and copied once more while joined, it was most of
    the publishing peak)."""
    with tempfile.TemporaryDirectory(prefix="listingflow-run-") as folder:
        path = Path(folder) / name
        with path.open("wb") as out:
            write(out)
        try:
            await archive.put_file(
                run_key(archive.prefix, summary.run_id, name), path, content_type="application/json"
            )
        except ArchiveUnavailable as exc:
            summary.notes.append(f"run {name} kept in the local spool: {exc}")


def _failures_markdown(summary: RunSummary) -> str:
    lines = [f"**{summary.headline()}**", ""]
    lines += [f"- {line}" for line in summary.failure_report()]
    if compliance := compliance_report.markdown(summary.products):
        lines += ["", compliance]
    if summary.notes:  # e.g. what a rerun kept of the failed run's parameters and what it overrode
        lines += ["", "**Notes:**", *[f"- {note}" for note in summary.notes]]
    return "\n".join(lines)
