"""Each product's steps start as soon as what their provider's request reads exists (issue: faster than
a hand-written script). With the default providers, copy and images start together, A+ waits for both,
Scale only for the image; so every product's image request is ready at the start and they fill batches."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flows import pipeline
from flows.archive import SpooledArchive
from flows.batching import Batcher

from .helpers import run_flow
from .test_faults import write_catalog

pytestmark = pytest.mark.usefixtures("prefect_server")


def first(box: Any, route: str) -> float:
    return min(r.t for r in box.requests if r.route == route)


async def test_images_start_with_the_copy_and_fill_one_batch(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    rva, pv, pixii = sandboxes["listingrva"], sandboxes["prodvisual"], sandboxes["pixii"]
    rva.reconfigure(job_seconds_by_kind={"listing": 2.0})  # copy takes a while: images must not wait for it
    asins = [f"B0GRAPH{n:03d}" for n in range(20)]
    catalog = write_catalog(lf_env["tmp"], asins, variations={asins[0]: "B0GRAPHV01:color=Red"})
    state, summary = await run_flow(catalog=catalog)
    assert state.is_completed(), summary.failure_report()

    submits = [r for r in pv.requests if r.route in ("generate", "generate_batch")]
    assert len(submits) == 1 and submits[0].route == "generate_batch", [r.route for r in submits]
    listing_done = min(j.done for j in rva.jobs.values() if j.kind == "listing")
    assert first(pv, "generate_batch") < listing_done  # images did not wait for any copy
    # Scale reads only the image: it went out before the last A+ (which also reads the copy)
    assert first(pixii, "scale") < max(r.t for r in pixii.requests if r.route == "a_plus")


async def test_listingrva_images_wait_for_the_copy_they_read(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    rva = sandboxes["listingrva"]
    catalog = write_catalog(lf_env["tmp"], ["B0GRAPH100"])
    state, summary = await run_flow(
        catalog=catalog, steps=["copy", "images"], providers={"images": "listingrva"}
    )
    assert state.is_completed(), summary.failure_report()
    [listing] = [j for j in rva.jobs.values() if j.kind == "listing"]
    assert first(rva, "ai_image") >= listing.done  # its customPrompt is built from the copy


async def test_the_copy_starts_once_every_image_has_joined_the_batch_and_it_was_sent(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch waits for its last member; the copy's task runs (ListingRVA's product record first)
    would take the event loop the members need on their way to it, and the Prefect server the batch's
    lease needs, so they start once it has been sent."""
    joined: list[float] = []
    sent: list[float] = []
    prepared: list[float] = []
    submit, answered, prepare = Batcher.submit, Batcher._sent, pipeline._prepare

    async def joining(self: Batcher, *args: Any, **kwargs: Any) -> Any:
        joined.append(time.monotonic())
        return await submit(self, *args, **kwargs)

    def sending(self: Batcher) -> None:
        sent.append(time.monotonic())
        answered(self)

    async def preparing(*args: Any, **kwargs: Any) -> Any:
        prepared.append(time.monotonic())  # before its task run is created
        return await prepare(*args, **kwargs)

    monkeypatch.setattr(Batcher, "submit", joining)
    monkeypatch.setattr(Batcher, "_sent", sending)
    monkeypatch.setattr(pipeline, "_prepare", preparing)
    catalog = write_catalog(lf_env["tmp"], [f"B0JOIN{n:04d}" for n in range(20)])
    state, summary = await run_flow(catalog=catalog, steps=["copy", "images"])
    assert state.is_completed(), summary.failure_report()
    assert len(joined) == 20 and len(sent) == 1 and len(prepared) == 20
    assert max(joined) <= sent[0] <= min(prepared)
    pv = sandboxes["prodvisual"]
    assert [r.route for r in pv.requests if r.route in ("generate", "generate_batch")] == ["generate_batch"]


async def test_scale_starts_once_the_image_is_checked_not_once_it_is_archived(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scale reads the image's URL: it is sent once the image is downloaded and checked, while the
    image is still being written to the archive (with 50 products, writing their images held the
    first Scale submission back 0.26 s)."""
    put = SpooledArchive.put
    written: list[float] = []
    pixii = sandboxes["pixii"]

    async def slow_put(self: SpooledArchive, key: str, data: bytes, **kwargs: Any) -> Any:
        if "/images/" in key:  # held until Scale is sent, 30 s at most
            for _ in range(300):
                if any(r.route == "scale" for r in pixii.requests):
                    break
                await asyncio.sleep(0.1)
            written.append(time.time())
        return await put(self, key, data, **kwargs)

    monkeypatch.setattr(SpooledArchive, "put", slow_put)
    catalog = write_catalog(lf_env["tmp"], ["B0CHECK001"], variations={"B0CHECK001": "B0CHECKV01:color=Red"})
    state, summary = await run_flow(catalog=catalog, steps=["images", "scale"])
    assert state.is_completed(), summary.failure_report()
    assert [s.status for s in summary.products[0].steps.values()] == ["done", "done"]
    [image_written] = written
    assert first(pixii, "scale") < image_written
