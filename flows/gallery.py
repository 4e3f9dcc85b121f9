"""The run's review gallery: ``runs/<run-id>/index.html`` in the archive, one page a person opens to see
what every product got, whether it can go live and what it cost.

Built from what the run's documents hold (the head and product entries of ``runs/<run-id>/manifest.json``,
the costs of ``cost-summary.json``) and each product's manifest, which holds its outputs, listing copy,
variations and compliance results. The page is
self-contained (inline CSS and a little JS for the filters, no external fetches) and links every output
relative to ``runs/<run-id>/``, so the same file works opened from a local folder and from an S3 website
or public bucket. Products are rendered as their manifests arrive, a few at a time: a 1,000-product run
holds the page being written and a handful of manifests, never every manifest at once.
"""

from __future__ import annotations

import asyncio
import itertools
import posixpath
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from providers.contract import STEP_SPECS, STEPS

from .archive import ArchiveUnavailable, SpooledArchive, StoredObject, run_key

GALLERY_NAME = "index.html"
THUMB_PX = 140
"""Thumbnails are boxes of this size: width and height are set on every <img>, so 1,000 products'
lazily loaded images never shift the page as they arrive."""
MANIFEST_WINDOW = 16
"""Product manifests read at once (concurrent GETs against S3; the rest wait their turn)."""
NOT_DONE = frozenset({"failed", "deferred", "interrupted", "skipped"})
STEP_TITLES = {str(s.step): s.title for s in STEPS}


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    label: str


FILTERS = (
    Filter("all", "All"),
    Filter("failed", "Failed / not done"),
    Filter("partial", "Partial"),
    Filter("noncompliant", "Non-compliant"),
    Filter("warnings", "Compliance warnings"),
)


@dataclass(frozen=True, slots=True)
class Thumb:
    href: str
    label: str
    is_image: bool
    width: int = THUMB_PX
    height: int = THUMB_PX
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class VariationView:
    asin: str
    attributes: list[tuple[str, str]]
    thumbs: list[Thumb]


@dataclass(slots=True)
class SectionView:
    """One step of a product: its outputs (and, for copy, the text; for scale, the variations)."""

    title: str
    provider: str
    status: str
    error: str | None
    thumbs: list[Thumb] = field(default_factory=list)
    copy: dict[str, Any] | None = None
    variations: list[VariationView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FindingView:
    rule: str
    severity: str
    message: str
    step: str
    href: str | None


@dataclass(slots=True)
class ProductView:
    anchor: str
    asin: str
    country: str
    title: str
    status: str
    cost: str
    groups: str
    manifest_href: str | None
    failures: list[str]
    compliance: str | None = None
    findings: list[FindingView] = field(default_factory=list)
    sections: list[SectionView] = field(default_factory=list)


def relative_href(key: str, page_key: str) -> str:
    """``key`` (relative to the archive root, like every key in a manifest) as a link from the page, e.g.
    ``../../US/B0CHX1W1XY/images/x.png``. Percent-encoded, so a key can never become ``javascript:``."""
    rel = posixpath.relpath(key.lstrip("/"), posixpath.dirname(page_key.lstrip("/")) or ".")
    return quote(rel, safe="/")


def filter_groups(status: str, compliance: str | None) -> str:
    """The filters a product shows under (the ``data-groups`` the page's CSS matches)."""
    groups = ["failed"] if status in NOT_DONE else (["partial"] if status == "partial" else [])
    groups += {"fail": ["noncompliant"], "warn": ["warnings"]}.get(compliance or "", [])
    return " ".join(groups)


def product_costs(lines: Iterable[Mapping[str, Any]], currency: str) -> dict[str, str]:
    """Product key (``US/B0...``) -> what the product cost this run, e.g. ``31 credits (1.55 USD)``,
    from cost lines of scope ``product`` (one per product, or one per product, provider and step as in
    ``cost-summary.json``: they add up)."""
    totals: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.get("scope") != "product":
            continue
        t = totals.setdefault(
            line["product"], {"net": 0, "unknown": 0, "reused": 0, "money": 0.0, "priced": True}
        )
        t["net"] += line.get("net", 0)
        t["unknown"] += line.get("unknown_jobs", 0)
        t["reused"] += line.get("reused_jobs", 0)
        if line.get("jobs") and line.get("money_status") != "ok":
            t["priced"] = False
        t["money"] += line.get("money") or 0.0
    return {key: _cost_text(t, currency) for key, t in totals.items()}


def _cost_text(t: dict[str, Any], currency: str) -> str:
    text = f"{t['net']} credits" + (f" + {t['unknown']} job(s) of unknown cost" if t["unknown"] else "")
    if t["priced"] and not t["unknown"] and t["net"]:
        text += f" ({t['money']:.2f} {currency})"
    if t["reused"]:
        text += f", {t['reused']} reused job(s)"
    return text


def run_cost(total: Mapping[str, Any] | None, currency: str) -> str:
    """The run's total line as text, e.g. ``211 credits net (10.55 USD)``."""
    if total is None:
        return "not recorded"
    money = f" ({total['money']:.2f} {currency})" if total.get("money_status") == "ok" else ""
    return f"{total.get('net', 0)} credits net{money}"


def _when(timestamp: Any) -> str:
    if not isinstance(timestamp, (int, float)):
        return ""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_view(run_doc: dict[str, Any], cost: str) -> dict[str, Any]:
    """The page header: what the run was, how it ended, what it cost."""
    return {
        "run_id": run_doc.get("run_id", ""),
        "headline": run_doc.get("headline", ""),
        "status": run_doc.get("status", ""),
        "catalog": run_doc.get("catalog", ""),
        "started": _when(run_doc.get("started_at")),
        "finished": _when(run_doc.get("finished_at")),
        "cost": cost,
        "notes": list(run_doc.get("notes") or []),
        "rejected": [_rejected_text(r) for r in run_doc.get("rejected_rows") or []],
    }


def _rejected_text(row: Any) -> str:
    if isinstance(row, dict):
        return " ".join(f"{k}={v}" for k, v in row.items() if v not in (None, "", []))
    return str(row)


def product_view(
    entry: dict[str, Any], manifest: dict[str, Any] | None, costs: dict[str, str], page_key: str
) -> ProductView:
    """One product's card: the run manifest's entry (status, failures) with its product manifest
    (outputs, copy, variations, compliance); a product without a readable manifest still gets a card."""
    manifest = manifest or {}
    key = entry.get("key") or f"{entry.get('country_code', '')}/{entry.get('asin', '')}"
    checked = manifest.get("compliance")
    compliance_doc: dict[str, Any] = checked if isinstance(checked, dict) else {}
    compliance = entry.get("compliance") or compliance_doc.get("status")
    raw_findings = [f for f in compliance_doc.get("findings") or [] if isinstance(f, dict)]
    findings = [_finding(f, page_key) for f in raw_findings]
    flagged = {f.get("output_key") for f in raw_findings if f.get("output_key")}
    status = str(entry.get("status", manifest.get("last_status", "unknown")))
    view = ProductView(
        anchor=key.replace("/", "-"),
        asin=str(entry.get("asin", manifest.get("asin", ""))),
        country=str(entry.get("country_code", manifest.get("country_code", ""))),
        title=str(manifest.get("title") or ""),
        status=status,
        cost=costs.get(key, "nothing charged this run"),
        groups=filter_groups(status, compliance),
        manifest_href=relative_href(entry["manifest"], page_key) if entry.get("manifest") else None,
        failures=[str(f) for f in entry.get("failures") or []],
        compliance=compliance,
        findings=findings,
    )
    if not manifest and entry.get("manifest"):
        view.failures.append("product manifest not readable from the archive")
    steps = manifest.get("steps") or {}
    for name in [*(s for s in STEP_TITLES if s in steps), *(s for s in steps if s not in STEP_TITLES)]:
        if isinstance(steps[name], dict) and not _nothing_to_show(steps[name]):
            view.sections.append(_section(name, steps[name], manifest, page_key, flagged))
    return view


def _nothing_to_show(step: dict[str, Any]) -> bool:
    """A step that does not apply to the product (no variations to scale) and left no outputs."""
    return step.get("status") == "not_applicable" and not step.get("outputs")


def _finding(f: dict[str, Any], page_key: str) -> FindingView:
    href = relative_href(f["output_key"], page_key) if f.get("output_key") else None
    return FindingView(
        rule=str(f.get("rule", "")),
        severity=str(f.get("severity", "")),
        message=str(f.get("message", "")),
        step=str(f.get("step", "")),
        href=href,
    )


def _section(
    name: str, step: dict[str, Any], manifest: dict[str, Any], page_key: str, flagged: set[Any]
) -> SectionView:
    outputs = [o for o in step.get("outputs") or [] if isinstance(o, dict) and o.get("key")]
    section = SectionView(
        title=STEP_TITLES.get(name, name),
        provider=str(step.get("provider", "")),
        status=str(step.get("status", "")),
        error=step.get("error"),
    )
    spec = STEP_SPECS.get(name)  # type: ignore[call-overload]
    if spec and spec.produces == "copy" and isinstance(step.get("copy_result"), dict):
        section.copy = _copy_view(step["copy_result"])
    if not (spec and spec.per_variation):
        section.thumbs = [_thumb(o, page_key, flagged) for o in outputs]
        return section
    own = str(manifest.get("asin", ""))
    variations = [v for v in manifest.get("variations") or [] if isinstance(v, dict)]
    known = {str(v.get("asin")) for v in variations}
    for v in variations:
        attrs = sorted((str(k), str(val)) for k, val in (v.get("attributes") or {}).items())
        thumbs = [_thumb(o, page_key, flagged) for o in outputs if o.get("for_asin") == v.get("asin")]
        section.variations.append(VariationView(asin=str(v.get("asin")), attributes=attrs, thumbs=thumbs))
    section.thumbs = [_thumb(o, page_key, flagged) for o in outputs if o.get("for_asin", own) not in known]
    return section


def _copy_view(copy: dict[str, Any]) -> dict[str, Any]:
    """The listing copy's fields as text and lists of text, whatever shape the provider gave them."""

    def texts(value: Any) -> list[str]:
        return [str(v) for v in value] if isinstance(value, list) else ([str(value)] if value else [])

    return {
        "title": str(copy.get("title") or ""),
        "bullets": texts(copy.get("bullets")),
        "description": str(copy.get("description") or ""),
        "keywords": texts(copy.get("keywords")),
    }


def _thumb(output: dict[str, Any], page_key: str, flagged: set[Any]) -> Thumb:
    """An output's thumbnail box: an image scaled into ``THUMB_PX`` (its own proportions when the
    manifest records its size), or a link for any other file (the copy's JSON)."""
    is_image = str(output.get("content_type", "")).startswith("image/")
    label = str(output.get("label") or "") if is_image else ""
    label = label or posixpath.basename(output["key"])
    width, height = THUMB_PX, THUMB_PX
    w, h = output.get("width"), output.get("height")
    if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
        scale = THUMB_PX / max(w, h)
        width, height = max(1, round(w * scale)), max(1, round(h * scale))
    return Thumb(
        href=relative_href(output["key"], page_key),
        label=label,
        is_image=is_image,
        width=width,
        height=height,
        flagged=output["key"] in flagged,
    )


def prepare_template() -> None:
    """Import Jinja and compile the page's template (~45 ms, once per process) ahead of the run's end,
    where it was most of the gallery's time (54 ms of the benchmark's x10 run on 20 products)."""
    _template()


@cache
def _template() -> Any:
    from jinja2 import Environment

    env = Environment(autoescape=True, enable_async=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(resources.files("flows").joinpath("gallery.html.j2").read_text(encoding="utf-8"))


async def render(
    run_doc: dict[str, Any], cost: str, products: AsyncIterator[ProductView], page: BinaryIO
) -> None:
    """The page, written to ``page`` as the products arrive (``products`` is consumed once, in order).
    Never whole in memory: a 5,000-product page is 20 MB, and grown in memory, copied and read back to
    be verified it took 72 MB at the end of the run (VmHWM), the run's largest peak."""
    stream = _template().generate_async(
        run=run_view(run_doc, cost), products=products, filters=FILTERS, thumb=THUMB_PX
    )
    async for chunk in stream:
        page.write(chunk.encode("utf-8"))


async def product_views(
    archive: SpooledArchive, entries: Iterable[dict[str, Any]], costs: dict[str, str], page_key: str
) -> AsyncIterator[ProductView]:
    """Each product's card, in the run manifest's order, reading ``MANIFEST_WINDOW`` manifests at a time."""
    pending = iter(entries)
    while batch := list(itertools.islice(pending, MANIFEST_WINDOW)):
        manifests = await asyncio.gather(*(_product_manifest(archive, e) for e in batch))
        for entry, manifest in zip(batch, manifests, strict=True):
            yield product_view(entry, manifest, costs, page_key)


async def _product_manifest(archive: SpooledArchive, entry: dict[str, Any]) -> dict[str, Any] | None:
    if not entry.get("manifest"):
        return None
    try:
        manifest = await archive.get_json(entry["manifest"])
    except (ArchiveUnavailable, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


async def publish_gallery(
    archive: SpooledArchive,
    run_head: dict[str, Any],
    entries: Iterable[dict[str, Any]],
    costs: dict[str, str],
    total: str,
) -> StoredObject:
    """Render the run's gallery and write it beside the run manifest (``text/html``, so an S3 website
    serves it as a page). ``run_head`` and ``entries`` are the run manifest's head and product entries,
    ``costs`` each product's cost text (``product_costs``), ``total`` the run's (``run_cost``): taken
    from the run in memory, entries one at a time, never by parsing the written documents back (for
    5,000 products that was ~30 MB of objects at the end of the run, measured with tracemalloc).
    Raises ``ArchiveUnavailable`` when it could only be kept in the local spool."""
    page_key = run_key(archive.prefix, run_head["run_id"], GALLERY_NAME)
    views = product_views(archive, entries, costs, page_key)
    with tempfile.TemporaryDirectory(prefix="listingflow-gallery-") as folder:
        path = Path(folder) / GALLERY_NAME
        with path.open("wb") as page:
            await render(run_head, total, views, page)
        return await archive.put_file(page_key, path, content_type="text/html; charset=utf-8")


def gallery_link(stored: StoredObject) -> str:
    """Where a person opens the gallery: a ``file://`` URL for a local archive, else its ``s3://`` URI."""
    if "://" in stored.uri:
        return stored.uri
    return Path(stored.uri).as_uri()
