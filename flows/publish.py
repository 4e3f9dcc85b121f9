"""What a run leaves once it ends: ``runs/<id>/manifest.json``, ``cost-summary.json`` and the review
gallery in the archive, the ``cost-summary`` artifacts in Prefect. None of it changes the run's outcome:
while the archive is down the documents wait in the local spool, and a gallery that fails is a note."""

from __future__ import annotations

import asyncio
import logging

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.context import FlowRunContext

from .archive import ArchiveUnavailable, SpooledArchive, json_with_list, run_key
from .compliance import report as compliance_report
from .gallery import gallery_link, publish_gallery
from .params import RunParameters
from .summary import RunSummary

logger = logging.getLogger("listingflow")


async def publish_run(summary: RunSummary, params: RunParameters, archive: SpooledArchive) -> None:
    """Run manifest, cost summary and review gallery into the archive; artifacts into Prefect."""
    manifest = run_manifest(summary, params)
    await _put_run_document(archive, summary, "manifest.json", manifest)
    cost = summary.cost.document() if summary.cost is not None else None
    if cost is not None:
        await _put_run_document(archive, summary, "cost-summary.json", cost)
    await _publish_gallery(summary, archive, manifest, cost)
    del manifest, cost  # not held while Prefect serializes the artifacts below
    if FlowRunContext.get() is None or summary.cost is None:
        return
    await asyncio.gather(  # two round trips to the server at the end of every run: at once
        acreate_table_artifact(
            summary.cost.table(),
            key="cost-summary",
            description=f"Credits per provider, step and product, run {summary.run_id}",
        ),
        acreate_markdown_artifact(
            _gallery_markdown(summary) + summary.cost.markdown() + "\n\n" + _failures_markdown(summary),
            key="cost-summary-report",
            description="Cost summary, failures and compliance",
        ),
    )


async def _publish_gallery(
    summary: RunSummary, archive: SpooledArchive, manifest: bytes, cost: bytes | None
) -> None:
    """``runs/<id>/index.html``: a page for reviewing the run is worth a note, never the run's outcome."""
    try:
        summary.gallery = gallery_link(await publish_gallery(archive, manifest, cost))
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


def run_manifest(summary: RunSummary, params: RunParameters) -> bytes:
    """``runs/<id>/manifest.json``, one product line at a time (``json_with_list``: as one dict, it was
    ~3.7 MB of the publishing peak per 1,000 products, measured with tracemalloc)."""
    head = {
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
    products = (
        {
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
        for p in summary.products
    )
    return json_with_list(head, "products", products)


async def _put_run_document(archive: SpooledArchive, summary: RunSummary, name: str, body: bytes) -> None:
    try:
        await archive.put(
            run_key(archive.prefix, summary.run_id, name), body, content_type="application/json", metadata={}
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
