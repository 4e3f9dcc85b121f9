"""A job that completed with parts failed (and refunded) is completed by the next run, which pays only
for the failed parts: the A+ types missing from it, the images of a product's batch that failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .helpers import duplicate_payments, run_flow
from .test_faults import write_catalog

pytestmark = pytest.mark.usefixtures("prefect_server")

ASIN = "B0PARTIAL1"


def charges(box: Any) -> list[int]:
    return [c.credits for c in box.charges]


async def test_rerun_pays_only_for_the_failed_aplus_type(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], tmp_path: Path
) -> None:
    pixii = sandboxes["pixii"]
    catalog = write_catalog(tmp_path, [ASIN])
    params = {"catalog": catalog, "steps": ["aplus"], "aplus_options": {"types": ["A+ Basic", "A+ Premium"]}}
    pixii.reconfigure(partial_fail_asins=[ASIN])  # the last type fails and is refunded
    state, first = await run_flow(**params)
    assert first.products[0].status == "partial"
    assert charges(pixii) == [40, -20]  # Basic 20 + Premium 20 charged, Premium refunded

    pixii.reconfigure(partial_fail_asins=[])
    state, second = await run_flow(**params)
    assert state.is_completed(), second.failure_report()
    assert charges(pixii) == [40, -20, 20]  # only A+ Premium again
    [retry] = [j for j in pixii.jobs.values() if j.charged == 20]
    assert retry.payload["types"] == ["A+ Premium"]
    aplus = second.products[0].steps["aplus"]
    assert aplus.status == "done" and not aplus.item_errors and aplus.output_count >= 2
    assert second.cost.total.net == 20

    state, third = await run_flow(**params)  # complete now: nothing paid, both jobs reused
    assert charges(pixii) == [40, -20, 20] and third.products[0].status == "complete"
    assert third.products[0].steps["aplus"].status == "reused"
    assert duplicate_payments({"pixii": pixii}) == []


async def test_rerun_pays_only_for_the_failed_image_of_a_batch(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], tmp_path: Path
) -> None:
    pv = sandboxes["prodvisual"]
    catalog = write_catalog(tmp_path, [ASIN])
    params = {"catalog": catalog, "steps": ["images"], "image_options": {"styles": ["white_bg", "lifestyle"]}}
    pv.reconfigure(partial_fail_asins=[ASIN])  # its first item fails and is refunded
    state, first = await run_flow(**params)
    assert first.products[0].status == "partial"
    assert pv.net_credits() == 1

    pv.reconfigure(partial_fail_asins=[])
    state, second = await run_flow(**params)
    assert state.is_completed(), second.failure_report()
    assert pv.net_credits() == 2 and second.cost.total.net == 1  # one image again, not two
    images = second.products[0].steps["images"]
    assert images.output_count == 2 and not images.item_errors
