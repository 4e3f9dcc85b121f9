"""Cross-product batching: how members are packed into paid batch jobs. Fast: a fake run, task set
and plugin record what would be submitted; no Prefect server, no provider."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from flows.batching import Batcher
from flows.intents import NoIntents
from flows.stopping import RunStop
from providers.contract import JobRef, JobResult, OutputRef, Step
from providers.errors import InsufficientCredits

MAX_ITEMS = 5


class Images(BaseModel):
    items: list[str]


class Batch(BaseModel):
    members: list[tuple[str, list[str]]]


class Plugin:
    limits = SimpleNamespace(max_batch_size=MAX_ITEMS)

    def merge_requests(self, step: Step, members: list[tuple[str, BaseModel]]) -> list[BaseModel]:
        return [Batch(members=[(member, request.items) for member, request in members])]  # type: ignore[attr-defined]

    def split_result(self, result: JobResult, member: str) -> JobResult:
        outputs = [o for o in result.outputs if o.label.startswith(f"{member}/")]
        return result.model_copy(update={"outputs": outputs, "credits_charged": len(outputs)})


class Limiter:
    @contextlib.asynccontextmanager
    async def job_slot(self) -> AsyncIterator[None]:
        yield

    def seconds_until_free(self) -> float:
        return 0.0


class Tasks:
    """Submits record the batch; waits return one output per item; ``fail`` makes the submit fail."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.pointers: dict[str, JobRef] = {}
        self.cache = SimpleNamespace(put=self._put)
        self.fail: Exception | None = None

    async def _put(self, key: str, ref: JobRef) -> None:
        self.pointers[key] = ref

    async def submit(self, provider: str, step: Step, batch: Batch, **kw: Any) -> JobRef:
        if self.fail is not None:
            raise self.fail
        self.batches.append(batch)
        return JobRef(
            provider=provider,
            step=step,
            job_id=f"batch-{len(self.batches)}",
            kind="batch",
            host={"run_id": "run-1"},
            meta={"batch": batch.model_dump(mode="json")},
        )

    async def wait(self, ref: JobRef, version: str) -> JobResult:
        batch = Batch.model_validate(ref.meta["batch"])
        outputs = [
            OutputRef(url=f"https://cdn.example.com/{m}/{i}", label=f"{m}/{i}")
            for m, items in batch.members
            for i in items
        ]
        return JobResult(ref=ref, status="completed", outputs=outputs, credits_charged=len(outputs))


@pytest.fixture
def tasks() -> Tasks:
    return Tasks()


def batcher(tasks: Tasks, linger: float = 0.01) -> Batcher:
    run = SimpleNamespace(
        run_id="run-1",
        settings=SimpleNamespace(cache_version="1"),
        stop=RunStop(),
        intents=NoIntents(),
        provider=lambda name: Plugin(),
        limiters={"prov": Limiter()},
        products_unstarted=0,
    )
    return Batcher(run=run, tasks=tasks, provider="prov", step=Step.IMAGES, linger=linger)  # type: ignore[arg-type]


async def submit_all(b: Batcher, items: dict[str, int]) -> dict[str, JobResult]:
    async def one(member: str, count: int) -> JobResult:
        request = Images(items=[f"i{n}" for n in range(count)])
        share, reused = await b.submit(member, f"key-{member}", request, count, estimate=count)
        assert not reused
        return share

    shares = await asyncio.wait_for(asyncio.gather(*(one(m, n) for m, n in items.items())), timeout=10)
    return dict(zip(items, shares, strict=True))


def packed(tasks: Tasks) -> list[list[str]]:
    return [[member for member, _ in batch.members] for batch in tasks.batches]


async def test_products_arriving_within_the_linger_share_one_batch(tasks: Tasks) -> None:
    shares = await submit_all(batcher(tasks), {"a": 1, "b": 2})
    assert packed(tasks) == [["a", "b"]]
    assert [o.label for o in shares["b"].outputs] == ["b/i0", "b/i1"] and shares["a"].credits_charged == 1
    assert {k: (p.job_id, p.host.member) for k, p in tasks.pointers.items()} == {
        "key-a": ("batch-1", "a"),
        "key-b": ("batch-1", "b"),
    }


async def test_a_full_batch_goes_at_once_without_waiting_out_the_linger(tasks: Tasks) -> None:
    await submit_all(batcher(tasks, linger=3600), {"a": 2, "b": 3})  # 5 items: full
    assert packed(tasks) == [["a", "b"]]


async def test_one_products_items_are_never_split_across_batches(tasks: Tasks) -> None:
    """c's 3 items would overflow a+b's batch: c goes in the next one, whole."""
    counts = {"a": 1, "b": 2, "c": 3, "d": 7}
    shares = await submit_all(batcher(tasks, linger=3600), counts)
    sizes = [sum(len(items) for _, items in batch.members) for batch in tasks.batches]
    assert packed(tasks) == [["a", "b"], ["c"], ["d"]]
    assert sizes == [3, 3, 7]  # a product over the limit goes alone, whole
    assert {m: len(share.outputs) for m, share in shares.items()} == counts


async def test_a_failed_batch_fails_every_member_with_its_reason(tasks: Tasks) -> None:
    tasks.fail = InsufficientCredits("out of credits", provider="prov")
    b = batcher(tasks)
    results = await asyncio.wait_for(
        asyncio.gather(
            b.submit("a", "key-a", Images(items=["x"]), 1, 1),
            b.submit("b", "key-b", Images(items=["y"]), 1, 1),
            return_exceptions=True,
        ),
        timeout=10,
    )
    assert [type(r) for r in results] == [InsufficientCredits, InsufficientCredits]
    assert tasks.pointers == {}  # nothing was submitted, so no member points at a batch


async def test_the_batch_leaves_once_every_expected_product_arrived_without_the_linger(tasks: Tasks) -> None:
    """Products in progress say they will bring members; once each has (or its step ended without
    one), the batch goes at once, full, instead of waiting out the linger."""
    b = batcher(tasks, linger=3600)
    for product in ("a", "b", "c"):
        b.expect(product)
    shares = asyncio.gather(
        b.submit("a#images-1", "key-a", Images(items=["x"]), 1, 1),
        b.submit("b#images-1", "key-b", Images(items=["y"]), 1, 1),
    )
    await asyncio.sleep(0.05)
    assert tasks.batches == []  # c may still come
    b.arrived("c")  # c's step ended without a member (e.g. its image came from an earlier run)
    await asyncio.wait_for(shares, timeout=5)
    assert packed(tasks) == [["a#images-1", "b#images-1"]]


async def test_a_batch_waits_for_products_not_started_yet(tasks: Tasks) -> None:
    """A product the run has still to start would want the same batch (at ProdVisual's real rate,
    leaving without it cut the images per request from 50 to 10): the linger still applies."""
    b = batcher(tasks, linger=0.3)
    b.run.products_unstarted = 1
    b.expect("a")
    share = asyncio.ensure_future(b.submit("a#images-1", "key-a", Images(items=["x"]), 1, 1))
    await asyncio.sleep(0.1)
    assert tasks.batches == []  # all started products arrived, but one is still to start
    await asyncio.wait_for(share, timeout=5)  # the linger ends the wait
    assert packed(tasks) == [["a#images-1"]]


async def test_products_starting_as_others_finish_share_one_batch(tasks: Tasks) -> None:
    """Late in a run products start as earlier ones finish, a few at a time: while the run still has
    products to start, a batch collects for four lingers, so their images go together."""
    b = batcher(tasks, linger=0.2)
    b.run.products_unstarted = 5
    shares = []
    for product in "abc":  # started 0.3 s apart: more than a linger, within four
        b.run.products_unstarted -= 1
        request = Images(items=[product])
        shares.append(asyncio.ensure_future(b.submit(f"{product}#images-1", f"key-{product}", request, 1, 1)))
        await asyncio.sleep(0.3)
    await asyncio.wait_for(asyncio.gather(*shares), timeout=5)
    assert packed(tasks) == [["a#images-1", "b#images-1", "c#images-1"]]


async def test_expected_products_arriving_one_after_another_share_one_batch(tasks: Tasks) -> None:
    """Each arrival starts the linger again while expected products are still coming: products
    started one after another over more than a linger are one batch, not two."""
    b = batcher(tasks, linger=0.5)
    for product in "abcd":
        b.expect(product)
    shares = []
    for product in "abc":
        shares.append(
            asyncio.ensure_future(
                b.submit(f"{product}#images-1", f"key-{product}", Images(items=[product]), 1, 1)
            )
        )
        await asyncio.sleep(0.3)  # 0.9 s in all: past the linger since the first, never since the last
    assert tasks.batches == []
    b.arrived("d")
    await asyncio.wait_for(asyncio.gather(*shares), timeout=5)
    assert packed(tasks) == [["a#images-1", "b#images-1", "c#images-1"]]


async def test_a_trickle_of_expected_products_holds_a_batch_back_at_most_four_lingers(
    tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Plugin, "limits", SimpleNamespace(max_batch_size=50))
    b = batcher(tasks, linger=0.3)
    for n in range(10):
        b.expect(f"p{n}")
    shares = []
    for n in range(10):  # one every 0.15 s, 1.5 s in all: the first batch leaves after 4 lingers, 1.2 s
        request = Images(items=["x"])
        shares.append(asyncio.ensure_future(b.submit(f"p{n}#images-1", f"key-{n}", request, 1, 1)))
        await asyncio.sleep(0.15)
    await asyncio.wait_for(asyncio.gather(*shares), timeout=5)
    assert len(tasks.batches) >= 2 and len(packed(tasks)[0]) < 10


async def test_other_steps_wait_until_the_expected_members_joined_and_their_batch_was_sent(
    tasks: Tasks,
) -> None:
    """``settled``: at a run's start, the steps that feed no batch start once each product expected
    has joined (a member submitted, or its step ended without one) and the first batch has been
    sent, and never later than four lingers; later products do not hold them."""
    b = batcher(tasks, linger=3600)
    await asyncio.wait_for(b.settled(), timeout=1)  # nobody expected: at once
    for product in "ab":
        b.expect(product)
    settled = asyncio.ensure_future(b.settled())
    share = asyncio.ensure_future(b.submit("a#images-1", "key-a", Images(items=["x"]), 1, 1))
    await asyncio.sleep(0.05)
    assert not settled.done()  # b has not joined yet
    b.arrived("b")  # the batch leaves
    assert not settled.done()
    await asyncio.wait_for(settled, timeout=1)
    assert packed(tasks) == [["a#images-1"]]  # sent before the other steps start
    await asyncio.wait_for(share, timeout=5)
    b.expect("c")  # a product starting later: its member is on its way, the start is over
    await asyncio.wait_for(b.settled(), timeout=0.1)

    slow = batcher(tasks, linger=0.1)
    slow.expect("c")  # never arrives
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(slow.settled(), timeout=5)
    assert 0.35 < asyncio.get_running_loop().time() - started < 2
