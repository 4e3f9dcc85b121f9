"""The run's summary, the final state's data: what Prefect does with it as the flow run ends."""

from __future__ import annotations

from prefect.futures import resolve_futures_to_states
from prefect.utilities.collections import visit_collection

from flows.pipeline import ProductRecord, StepRecord
from flows.summary import ProductRecords, RunSummary, final_state


def record(n: int) -> ProductRecord:
    steps = {
        step: StepRecord(
            provider="prodvisual",
            status="done",
            jobs=(f"job_{n}_{step}",),
            error=None,
            item_errors=(),
            output_count=2,
        )
        for step in ("copy", "images", "aplus", "scale")
    }
    return ProductRecord(
        asin=f"B0SUM{n:05d}", country_code="US", status="complete", manifest_key=f"m/{n}", steps=steps
    )


def summary(products: int) -> RunSummary:
    return RunSummary(
        run_id="run-1",
        catalog="c.csv",
        archive="archive",
        started_at=0.0,
        finished_at=1.0,
        products=[record(n) for n in range(products)],
    )


def test_prefect_does_not_walk_every_product_of_the_final_state() -> None:
    """Prefect looks through a flow's return value for futures, keeping every object it passes: for
    5,000 products that was 16 MB of peak RSS and 0.6 s as the run ended. It stops at the products."""
    state = final_state(summary(1000))
    visited: list[object] = []
    visit_collection(state, visit_fn=visited.append, return_data=False)
    assert len(visited) < 100, len(visited)
    assert resolve_futures_to_states(state) is state


def test_the_products_read_like_a_list_and_survive_a_round_trip() -> None:
    done = summary(3)
    assert isinstance(done.products, ProductRecords)
    assert len(done.products) == 3 and done.products[1].asin == "B0SUM00001"
    assert [p.asin for p in done.products[1:]] == ["B0SUM00001", "B0SUM00002"]
    first, *rest = done.products
    assert first.key == "US/B0SUM00000" and len(rest) == 2
    again = RunSummary.model_validate_json(done.model_dump_json())
    assert again.products == done.products
    assert again.model_dump()["products"][0]["steps"]["images"]["jobs"] == ("job_0_images",)
