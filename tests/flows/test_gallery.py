"""The review gallery, runs/<run-id>/index.html: what a person opens after a run.

Unit tests render it from hand-made manifests (escaping of untrusted copy, links relative to the page,
the filters, compliance present or absent, S3's content type). One test runs a sandbox catalog and opens
the page in a real headless Chromium (Debian's ``chromium``, installed by ``.ci/run``): the page's own
``?selftest`` script loads every image, lazy or not, and writes what loaded into the DOM, which
``--dump-dom`` prints.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from flows.archive import LocalArchive, S3Archive, SpooledArchive, write_json_with_list
from flows.costs import CostLedger, JobCost
from flows.gallery import FILTERS, filter_groups, product_costs, publish_gallery, relative_href, run_cost

from .helpers import run_flow, written

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """What the tests look at in the page: images, links, product cards, filter buttons, scripts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.cards: dict[str, dict[str, str | None]] = {}
        self.filters: list[str] = []
        self.scripts = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        elif tag == "article":
            self.cards[a.get("id") or ""] = a
        elif tag == "button" and a.get("data-filter"):
            self.filters.append(a["data-filter"] or "")
        elif tag == "script":
            self.scripts += 1


def product_manifest(
    asin: str = "B0TEST0001", *, compliance: dict[str, Any] | None = None, prefix: str = ""
) -> dict[str, Any]:
    base = f"{prefix}/" if prefix else ""

    def out(
        step: str, name: str, label: str, for_asin: str = asin, ctype: str = "image/png"
    ) -> dict[str, Any]:
        return {
            "key": f"{base}US/{for_asin}/{step}/{name}",
            "label": label,
            "content_type": ctype,
            "for_asin": for_asin,
        }

    manifest = {
        "asin": asin,
        "country_code": "US",
        "title": f"Bottle {HOSTILE}",
        "variations": [{"asin": "B0TESTVAR1", "attributes": {"color": "Ocean <b>Blue</b>"}}],
        "steps": {
            "copy": {
                "provider": "listingrva",
                "status": "done",
                "error": None,
                "outputs": [out("copy", "listingrva-copy.json", "copy", ctype="application/json")],
                "copy_result": {
                    "title": f"Title {HOSTILE}",
                    "bullets": [f"bullet {HOSTILE}"],
                    "description": f"desc {HOSTILE}",
                    "keywords": ["k1", "k2"],
                },
            },
            "images": {
                "provider": "prodvisual",
                "status": "done",
                "error": None,
                "outputs": [
                    out("images", "prodvisual-white_bg-1.png", "white_bg-1") | {"width": 2000, "height": 1000}
                ],
            },
            "aplus": {
                "provider": "pixii",
                "status": "done",
                "error": None,
                "outputs": [out("aplus", "pixii-a-plus-basic-module-1.png", "a-plus-basic-module-1")],
            },
            "scale": {
                "provider": "pixii",
                "status": "done",
                "error": None,
                "outputs": [out("scale", "pixii-scale-1.png", "scale-1", for_asin="B0TESTVAR1")],
            },
        },
    }
    if compliance is not None:
        manifest["compliance"] = compliance
    return manifest


def entry(asin: str, status: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
    base = f"{prefix}/" if prefix else ""
    return {
        "key": f"US/{asin}",
        "asin": asin,
        "country_code": "US",
        "status": status,
        "failures": [],
        "manifest": f"{base}US/{asin}/manifest.json",
        "jobs": {},
        **extra,
    }


async def publish(
    archive: Any,
    spool: Path,
    manifests: list[dict[str, Any]],
    entries: list[dict[str, Any]],
    prefix: str = "",
) -> tuple[Any, str]:
    """Put the manifests, every output they name and run ``r1``'s documents into ``archive``, as a run
    does, then publish the run's gallery; returns it as stored and its text."""
    spooled = SpooledArchive(archive, spool)
    base = f"{prefix}/" if prefix else ""
    for m in manifests:
        await spooled.put_json(f"{base}US/{m['asin']}/manifest.json", m)
        for step in m["steps"].values():
            for o in step["outputs"]:
                await spooled.put(o["key"], PNG, content_type=o["content_type"], metadata={})
    run_doc = document(
        {"run_id": "r1", "headline": f"{len(entries)} products", "status": "failed"}, "products", entries
    )
    cost_doc = document(
        {"currency": "USD"},
        "lines",
        [
            {
                "scope": "product",
                "product": "US/B0TEST0001",
                "provider": "pixii",
                "step": "aplus",
                "jobs": 1,
                "net": 20,
                "money": 1.0,
                "money_status": "ok",
            },
            {
                "scope": "product",
                "product": "US/B0TEST0001",
                "provider": "pixii",
                "step": "scale",
                "jobs": 1,
                "net": 6,
                "money": 0.3,
                "money_status": "ok",
            },
            {"scope": "total", "net": 26, "money": 1.3, "money_status": "ok"},
        ],
    )
    for name, doc in (("manifest.json", run_doc), ("cost-summary.json", cost_doc)):
        await spooled.put_json(f"{base}runs/r1/{name}", doc)
    costs = product_costs(cost_doc["lines"], cost_doc["currency"])
    total = run_cost(next(x for x in cost_doc["lines"] if x["scope"] == "total"), cost_doc["currency"])
    stored = await publish_gallery(spooled, run_doc, run_doc["products"], costs, total)
    return stored, (await spooled.get(stored.key) or b"").decode()


def document(head: dict[str, Any], key: str, items: list[Any]) -> Any:
    """The run document ``write_json_with_list`` writes, as a run writes it."""
    return written(partial(write_json_with_list, head=head, key=key, items=items))


# ---- unit ------------------------------------------------------------------------------------------------


async def test_untrusted_copy_and_titles_are_escaped(tmp_path: Path) -> None:
    _, text = await publish(
        LocalArchive(tmp_path / "archive"),
        tmp_path / "spool",
        [product_manifest()],
        [entry("B0TEST0001", "complete")],
    )
    page = Page(text)
    assert page.scripts == 1, "the only script is the page's own"
    assert HOSTILE not in text and "<b>Blue</b>" not in text
    for shown in ("Bottle ", "Title ", "bullet ", "desc "):
        assert (
            shown + "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
            in text
        )
    assert all(not (img.get("src") or "").startswith("x") for img in page.images)
    assert "Ocean &lt;b&gt;Blue&lt;/b&gt;" in text


@pytest.mark.parametrize("prefix", ["", "listings/2026"])
async def test_every_link_is_relative_to_the_page_and_resolves_in_the_archive(
    tmp_path: Path, prefix: str
) -> None:
    archive = LocalArchive(tmp_path / "archive")
    archive.prefix = prefix  # keys under a prefix, as in an S3 archive (s3://bucket/listings/2026)
    stored, text = await publish(
        archive,
        tmp_path / "spool",
        [product_manifest(prefix=prefix)],
        [entry("B0TEST0001", "complete", prefix)],
        prefix,
    )
    assert stored.key == f"{prefix + '/' if prefix else ''}runs/r1/index.html"
    page = Page(text)
    srcs = [img["src"] or "" for img in page.images]
    assert srcs[0] == "../../US/B0TEST0001/images/prodvisual-white_bg-1.png"
    assert len(srcs) == 3  # image, A+ module, the variation's image (the copy's JSON is a link)
    folder = (tmp_path / "archive" / stored.key).parent
    for href in [*srcs, *page.links]:
        assert "://" not in href and not href.startswith("/"), href
        assert (folder / href).resolve().is_file(), href
    for img in page.images:
        assert img["loading"] == "lazy" and img["width"] and img["height"]
    assert (page.images[0]["width"], page.images[0]["height"]) == (
        "140",
        "70",
    )  # recorded size: its proportions


def test_a_key_can_never_become_a_script_or_absolute_link() -> None:
    assert relative_href("javascript:alert(1)", "runs/r1/index.html") == "../../javascript%3Aalert%281%29"
    assert relative_href("p/US/B0X/a b.png", "p/runs/r1/index.html") == "../../US/B0X/a%20b.png"


async def test_filters_match_the_products_status_and_compliance(tmp_path: Path) -> None:
    manifests = [product_manifest(a) for a in ("B0TEST0001", "B0TEST0002", "B0TEST0003", "B0TEST0004")]
    entries = [
        entry("B0TEST0001", "complete", compliance="pass"),
        entry("B0TEST0002", "failed"),
        entry("B0TEST0003", "partial", compliance="fail"),
        entry("B0TEST0004", "complete", compliance="warn"),
    ]
    _, text = await publish(LocalArchive(tmp_path / "archive"), tmp_path / "spool", manifests, entries)
    page = Page(text)
    assert (
        page.filters == [f.name for f in FILTERS] == ["all", "failed", "partial", "noncompliant", "warnings"]
    )
    groups = {k: v["data-groups"] for k, v in page.cards.items()}
    assert groups == {
        "US-B0TEST0001": "",
        "US-B0TEST0002": "failed",
        "US-B0TEST0003": "partial noncompliant",
        "US-B0TEST0004": "warnings",
    }
    for name in ("failed", "partial", "noncompliant", "warnings"):  # each filter hides every other card
        assert (
            f'body[data-show="{name}"] article.product:not([data-groups~="{name}"]) {{ display: none; }}'
            in text
        )
    assert [filter_groups(s, None) for s in ("deferred", "interrupted", "skipped")] == ["failed"] * 3


async def test_compliance_findings_are_shown_and_absent_compliance_shows_nothing(tmp_path: Path) -> None:
    compliance = {
        "status": "fail",
        "findings": [
            {
                "rule": "main_image_white_background",
                "severity": "fail",
                "message": "border is not white <RGB 200>",
                "output_key": "US/B0TEST0001/images/prodvisual-white_bg-1.png",
                "step": "images",
            },
            {
                "rule": "title_length",
                "severity": "warn",
                "message": "title is 210 characters",
                "output_key": None,
                "step": "copy",
            },
        ],
    }
    with_findings = [product_manifest(compliance=compliance), product_manifest("B0TEST0002")]
    _, text = await publish(
        LocalArchive(tmp_path / "archive"),
        tmp_path / "spool",
        with_findings,
        [entry("B0TEST0001", "complete"), entry("B0TEST0002", "complete")],
    )
    first, second = text.split('id="US-B0TEST0002"')
    assert "compliance fail" in first and "border is not white &lt;RGB 200&gt;" in first
    assert "title is 210 characters" in first and 'class="flagged"' in first
    assert "compliance" not in second.split("</article>")[0] and 'class="flagged"' not in second
    assert Page(text).cards["US-B0TEST0001"]["data-groups"] == "noncompliant"


def test_cost_per_product_adds_its_lines_and_money() -> None:
    doc = {
        "currency": "EUR",
        "lines": [
            {"scope": "product", "product": "US/A", "jobs": 1, "net": 20, "money": 1.0, "money_status": "ok"},
            {"scope": "product", "product": "US/A", "jobs": 1, "net": 6, "money": 0.3, "money_status": "ok"},
            {
                "scope": "product",
                "product": "US/B",
                "jobs": 1,
                "net": 10,
                "money": None,
                "money_status": "no_price",
            },
            {"scope": "step", "product": "*", "jobs": 2, "net": 36},
        ],
    }
    assert product_costs(doc["lines"], doc["currency"]) == {
        "US/A": "26 credits (1.30 EUR)",
        "US/B": "10 credits",
    }


async def test_a_product_whose_manifest_is_missing_still_gets_a_card(tmp_path: Path) -> None:
    missing = entry("B0GONE0001", "failed", failures=["copy: provider said no"])
    _, text = await publish(LocalArchive(tmp_path / "archive"), tmp_path / "spool", [], [missing])
    assert "copy: provider said no" in text and "product manifest not readable" in text


async def test_s3_gallery_is_served_as_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="gallery")
        archive = S3Archive("s3://gallery/listings")
        stored, text = await publish(
            archive,
            tmp_path,
            [product_manifest(prefix="listings")],
            [entry("B0TEST0001", "complete", "listings")],
            "listings",
        )
        head = boto3.client("s3").head_object(Bucket="gallery", Key="listings/runs/r1/index.html")
    assert stored.uri == "s3://gallery/listings/runs/r1/index.html"
    assert head["ContentType"] == "text/html; charset=utf-8"
    assert Page(text).images[0]["src"] == "../../US/B0TEST0001/images/prodvisual-white_bg-1.png"


async def artifacts(flow_run_id: str, key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    async with get_client() as client:
        only = ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
        )
        return await client.read_artifacts(artifact_filter=only)


# ---- in a real browser -----------------------------------------------------------------------------------


def chromium() -> str:
    """Debian's Chromium: missing, the test is skipped on a developer machine and fails in CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "chromium is not installed (.ci/run installs it: apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def images_seen_by_browser(page: Path, profile: Path) -> dict[str, Any]:
    """Open ``page?selftest`` headless and read what its self-test wrote: images, loaded, broken."""
    args = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri() + "?selftest",
    ]
    # Debian's chromium wrapper and GTK write under HOME (~/.config/chromium, ~/.cache/dconf): keep them
    # in the test's own folder, never the user's
    home = {
        "HOME": str(profile),
        "XDG_CONFIG_HOME": str(profile / "config"),
        "XDG_CACHE_HOME": str(profile / "cache"),
    }
    env = {**os.environ, **home}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, env=env)
    found = re.search(r'<pre id="selftest">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert found, f"the page's self-test did not report (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.usefixtures("prefect_server")
async def test_every_image_of_a_sandbox_run_loads_in_a_real_browser(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    chromium()  # before spending a run on it
    sandboxes["pixii"].reconfigure(fail_asins=["B0BQRG7K5N"])  # one partial product, for the filters
    _, summary = await run_flow()
    page = lf_env["archive"] / "runs" / summary.run_id / "index.html"
    assert summary.gallery == page.resolve().as_uri()
    seen = images_seen_by_browser(page, lf_env["tmp"] / "chromium")
    pngs = [p for p in lf_env["archive"].rglob("*.png")]
    assert seen == {"images": len(pngs), "loaded": len(pngs), "broken": []}
    cards = Page(page.read_text()).cards
    assert len(cards) == 6 and "partial" in cards["US-B0BQRG7K5N"]["data-groups"].split()
    [report] = await artifacts(summary.run_id, "cost-summary-report")
    assert f"**Review gallery:** [{summary.gallery}]({summary.gallery})" in report.data

    # the check can fail: an image missing from the archive is reported broken
    gone = lf_env["archive"] / "US" / "B0CHX1W1XY" / "images" / "prodvisual-white_bg-1.png"
    gone.unlink()
    seen = images_seen_by_browser(page, lf_env["tmp"] / "chromium")
    assert seen["broken"] == ["../../US/B0CHX1W1XY/images/prodvisual-white_bg-1.png"]


@pytest.mark.parametrize("prices", [{"pixii": 0.1, "listingrva": 0.5}, {"pixii": 0.1}])
def test_cost_per_product_from_the_run_is_what_its_cost_summary_json_adds_up_to(
    prices: dict[str, float],
) -> None:
    """The gallery takes each product's cost from the run's totals in memory: the same text as summing
    the per-step lines of the ``cost-summary.json`` the run writes."""
    ledger = CostLedger()
    jobs = [
        ("pixii", "aplus", "US/B0", 50, 0, False),
        ("pixii", "scale", "US/B0", 6, 0, False),
        ("pixii", "aplus", "US/B1", 50, 10, False),
        ("listingrva", "copy", "US/B0", None, 0, False),
        ("listingrva", "copy", "US/B1", 5, 0, True),
        ("listingrva", "copy", "US/B2", 5, 0, False),
    ]
    for n, (provider, step, product, charged, refunded, reused) in enumerate(jobs):
        ledger.add(
            JobCost(
                provider=provider,
                step=step,
                product=product,
                job_id=f"j{n}",
                charged=charged,
                refunded=refunded,
                reused=reused,
            )
        )
    summary = ledger.summary("r1", price_per_credit=prices, currency="EUR")
    doc = written(summary.write_document)
    from_doc = product_costs(doc["lines"], doc["currency"])
    from_run = product_costs((x.model_dump(mode="json") for x in summary.product_totals()), "EUR")
    assert from_run == from_doc and len(from_run) == 3
    assert "job(s) of unknown cost" in from_run["US/B0"] and "reused" in from_run["US/B1"]
