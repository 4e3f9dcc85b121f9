"""End to end against the sandboxes: chain, archive, manifests, limits, costs, retries, failures."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from providers.sandbox.core import Fault, FaultRule
from tests.conftest import FAST_LIMITS

from .helpers import archived_files, archived_outputs, meta, net_charged, paid_submissions, run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


async def test_full_run_archives_every_output_and_costs_match(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    state, summary = await run_flow()
    assert state.is_completed(), state.message
    assert summary.count("complete") == 6, summary.failure_report()
    root = lf_env["archive"]

    # every output kind is in the archive, with metadata that matches the bytes
    files = archived_files(root)
    keys = [str(p.relative_to(root)) for p in files]
    assert any("/copy/listingrva-copy.json" in k for k in keys)
    assert any("/images/prodvisual-" in k and k.endswith(".png") for k in keys)
    assert any("/aplus/pixii-a-plus-basic-module-" in k for k in keys)
    assert any("/aplus/pixii-a-plus-basic-preview" in k for k in keys)
    scaled = [k for k in keys if "/scale/" in k]
    assert {k.split("/")[1] for k in scaled} == {"B0CHX1W2AA", "B0CHX1W3BB", "B0C7WZ9F3N", "B0C7WZ9F4P"}
    for path in files:
        if path.suffix == ".png":
            m = meta(path)
            data = path.read_bytes()
            assert data.startswith(b"\x89PNG")
            assert m["sha256"] == hashlib.sha256(data).hexdigest()
            assert m["content-type"] == "image/png"
            assert m["source-job-id"]

    # product manifests and the run manifest say what was produced, by which job
    manifest = json.loads((root / "US" / "B0CHX1W1XY" / "manifest.json").read_text())
    assert set(manifest["steps"]) == {"copy", "images", "aplus", "scale"}
    assert all(s["status"] == "done" for s in manifest["steps"].values())
    assert manifest["steps"]["copy"]["copy_result"]["title"]
    run_manifest = json.loads((root / "runs" / summary.run_id / "manifest.json").read_text())
    assert {p["status"] for p in run_manifest["products"]} == {"complete"}

    # the cost summary equals the sandboxes' own ledgers, exactly
    cost = summary.cost
    recorded = net_charged(sandboxes)
    for line in cost.by("provider"):
        assert line.net == recorded[line.provider], line
        if line.provider != "prodvisual":  # ProdVisual batches products: one paid job, one share each
            assert line.jobs == paid_submissions(sandboxes)[line.provider]
    batches = [j for j in sandboxes["prodvisual"].jobs.values() if j.kind == "batch"]
    assert sum(len(j.payload["items"]) for j in batches) == 7
    assert cost.total.net == sum(recorded.values())
    on_disk = json.loads((root / "runs" / summary.run_id / "cost-summary.json").read_text())
    assert on_disk["lines"][-1]["net"] == cost.total.net

    # each balance is read by pre-flight's access check (the run's start balance) and again at the end,
    # unless the provider's answers stated it after the run's last debit (ProdVisual's credits_remaining)
    reads = {n: len([r for r in sandboxes[n].requests if r.route == "credits"]) for n in sandboxes}
    assert reads == {"listingrva": 2, "prodvisual": 1, "pixii": 0}, reads
    assert [b.provider for b in cost.balances] == ["listingrva", "prodvisual"]
    assert all(b.explained for b in cost.balances), [b.text() for b in cost.balances]
    assert {b.provider: b.end for b in cost.balances} == {
        n: sandboxes[n].balance for n in reads if n != "pixii"
    }
    assert [b.end_stated for b in cost.balances] == [False, True]

    # no provider's rate or in-flight limit was exceeded, as the sandboxes saw it
    for name, box in sandboxes.items():
        for group, (limit, window) in FAST_LIMITS[name].items():
            assert box.max_requests_in_window(group, window) <= limit, (name, group)
        assert not [r for r in box.requests if r.status == 429], name


async def test_rerun_of_finished_catalog_pays_nothing(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    _, first = await run_flow()
    assert first.ok
    paid = paid_submissions(sandboxes)
    posts = {n: sum(1 for r in b.requests if r.method == "POST") for n, b in sandboxes.items()}
    state, second = await run_flow()
    assert state.is_completed()
    assert paid_submissions(sandboxes) == paid
    assert {n: sum(1 for r in b.requests if r.method == "POST") for n, b in sandboxes.items()} == posts
    assert second.cost.total.net == 0
    assert second.cost.total.reused_jobs == first.cost.total.jobs


async def test_injected_429_and_503_are_retried(sandboxes: dict[str, Any], lf_env: dict[str, Any]) -> None:
    burst = [Fault(status=429, retry_after=0.2), Fault(status=503), Fault(status=503)]
    sandboxes["pixii"].reconfigure(faults=[FaultRule(route="a_plus", sequence=burst)])
    sandboxes["listingrva"].reconfigure(
        faults=[FaultRule(route="*", sequence=[Fault(status=503), Fault(status=429)])]
    )
    sandboxes["prodvisual"].reconfigure(faults=[FaultRule(route="*", sequence=[Fault(status=503)])])
    state, summary = await run_flow(products=["B0BQRG7K5N", "B0CHX1W1XY"])
    assert state.is_completed(), summary.failure_report()
    assert summary.count("complete") == 2
    assert any(r.fault == "429" for r in sandboxes["pixii"].requests)
    for line in summary.cost.by("provider"):
        assert line.net == net_charged(sandboxes)[line.provider]


async def test_failing_product_is_reported_and_others_archived(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    sandboxes["pixii"].reconfigure(fail_asins=["B0BQRG7K5N"])
    state, summary = await run_flow()
    assert state.is_failed()
    by_asin = {p.asin: p for p in summary.products}
    failed = by_asin["B0BQRG7K5N"]
    assert failed.status == "partial"
    assert failed.steps["aplus"].status == "failed"
    assert "failed" in (failed.steps["aplus"].error or "")
    assert "B0BQRG7K5N" in (state.message or "")
    assert all(p.status == "complete" for a, p in by_asin.items() if a != "B0BQRG7K5N")
    # the refund of the failed job is in the summary, and it still equals the ledger
    pixii = next(line for line in summary.cost.by("provider") if line.provider == "pixii")
    assert pixii.refunded > 0
    assert pixii.net == sandboxes["pixii"].net_credits()


async def test_images_of_many_products_go_out_in_one_batch(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    state, summary = await run_flow(steps=["images"])
    assert state.is_completed(), summary.failure_report()
    jobs = list(sandboxes["prodvisual"].jobs.values())
    assert len(jobs) == 1 and jobs[0].kind == "batch" and len(jobs[0].payload["items"]) == 7
    # each product still gets its own outputs, manifest entry and share of the cost
    for p in summary.products:
        assert p.steps["images"].status == "done" and p.steps["images"].output_count >= 1
        assert (
            len(archived_outputs(lf_env["archive"], p.manifest_key, "images"))
            == p.steps["images"].output_count
        )
    per_product = {line.product: line.net for line in summary.cost.by("product")}
    assert (
        per_product["US/B0D1LMN8QR"] == 2
        and sum(per_product.values()) == 7 == net_charged(sandboxes)["prodvisual"]
    )
    # a rerun finds every product's share through its pointer: nothing is paid again
    _, again = await run_flow(steps=["images"])
    assert len(sandboxes["prodvisual"].jobs) == 1 and again.cost.total.reused_jobs == 6


async def test_a_finished_product_leaves_only_its_record_in_memory(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    """Memory grows with the catalog only by a small record per finished product: Prefect's per-task
    bookkeeping of finished products is dropped (benchmarks, phase E), the outputs live in the archive."""
    from prefect.context import FlowRunContext

    from flows.observer import RunObserver
    from flows.pipeline import ProductRecord

    held: list[int] = []

    class AtEachProduct(RunObserver):
        def on_product_done(self, outcome: Any, done: int, total: int) -> None:
            context = FlowRunContext.get()
            assert context is not None
            held.append(len(context.task_run_assets))

    state, summary = await run_flow(AtEachProduct())
    assert state.is_completed(), summary.failure_report()
    assert len(held) == 6 and held[-1] == 0, held  # the last product: nothing in flight, nothing held
    assert all(isinstance(p, ProductRecord) for p in summary.products)
    assert sum(len(p.steps["images"].jobs) for p in summary.products) >= 6
