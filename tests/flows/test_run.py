"""A run started by the CLI prepares while Prefect creates its flow run, and prepares only once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.client.orchestration import PrefectClient

from flows.observer import RunObserver
from flows.run import Prepared, discard_unused
from flows.summary import RunSummary

from .helpers import run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")
REPO = Path(__file__).resolve().parents[2]


async def test_pre_flight_runs_while_prefect_creates_the_flow_run(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a flow run is 0.1-0.6 s of round trips to the server: pre-flight's checks start
    meanwhile (here creation is slowed to 1 s), and are not made again once the run starts. Those
    that need a rate slot wait for the flow run (``lease_calls_wait_for``); Pixii's lookup needs none."""
    real = PrefectClient.create_flow_run
    created: list[float] = []

    async def slow_create(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(1.0)
        flow_run = await real(self, *args, **kwargs)
        created.append(time.time())
        return flow_run

    monkeypatch.setattr(PrefectClient, "create_flow_run", slow_create)
    state, summary = await run_flow(RunObserver(), products=["B0CHX1W1XY"])
    assert state.is_completed(), state.message
    assert summary.count("complete") == 1, summary.failure_report()
    assert summary.run_id == str(state.state_details.flow_run_id)  # the flow run's id, not a stand-in
    assert min(r.t for r in sandboxes["pixii"].requests) < created[0]
    assert min(r.t for r in sandboxes["listingrva"].requests) > created[0]  # its read takes a slot
    reads = [r for r in sandboxes["listingrva"].requests if r.route == "credits"]
    assert len(reads) == 2  # pre-flight's (the start balance) and the end's: pre-flight ran once


async def test_the_lease_calls_tls_context_is_built_in_a_thread_before_the_first_lease_call(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pre-flight's first Prefect call (``ensure_limits``) finds the context built off the event
    loop, which meanwhile creates the flow run; before, that call built it on the loop."""
    import threading

    from flows.limits import client

    real = client._tls
    real.cache_clear()
    built_in: list[str] = []

    def spy(*args: Any) -> Any:
        if real.cache_info().currsize == 0:
            built_in.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(client, "_tls", spy)
    state, _ = await run_flow(RunObserver(), products=["B0CHX1W1XY"])
    assert state.is_completed(), state.message
    assert built_in and built_in[0] != threading.main_thread().name, built_in


async def test_a_preparation_no_run_took_is_stopped_and_its_clients_closed() -> None:
    closed: list[str] = []
    stack = AsyncExitStack()
    stack.callback(closed.append, "clients")
    summary = RunSummary(run_id="x", catalog="c", archive="a", started_at=0.0, finished_at=0.0)
    ready: asyncio.Future[Prepared] = asyncio.get_running_loop().create_future()
    ready.set_result(Prepared(summary, stack))
    await discard_unused(ready)
    assert closed == ["clients"]

    taken = AsyncExitStack()
    taken.callback(closed.append, "taken")
    used = asyncio.get_running_loop().create_future()
    used.set_result(Prepared(summary, taken, taken=True))
    await discard_unused(used)  # the run that took it closes it
    assert closed == ["clients"]

    async def never() -> Prepared:
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    pending = asyncio.ensure_future(never())
    await discard_unused(pending)
    assert pending.cancelled()


async def test_batching_providers_take_their_first_slots_first_then_those_not_started() -> None:
    """Lease calls go one at a time: ProdVisual's one request for every product's images asks before
    ListingRVA's pools, which serve one product each; Pixii, whose first requests wait for the images,
    before ListingRVA, whose requests are out and get their slots on demand."""
    from types import SimpleNamespace

    from flows.run import _Clients, _prime

    asked: list[str] = []

    class Limiter:
        def __init__(self, name: str) -> None:
            self.name, self.engaged = name, name == "listingrva"  # its copy submissions went out

        async def prime(self, slots: int) -> None:
            asked.append(f"{self.name}:{slots}")

    def provider(batch: int) -> Any:
        return SimpleNamespace(limits=SimpleNamespace(max_batch_size=batch))

    names = {"listingrva": 1, "pixii": 1, "prodvisual": 50}
    clients = _Clients(
        providers={n: provider(b) for n, b in names.items()},
        limiters={n: Limiter(n) for n in names},  # type: ignore[misc]
        download_http=None,  # type: ignore[arg-type]
    )
    await _prime(clients, 20)
    assert asked == ["prodvisual:20", "pixii:20", "listingrva:20"]
    await _prime(clients, 0)  # nothing to start: nothing taken
    assert len(asked) == 3


def test_the_objects_alive_at_a_processs_first_run_leave_the_collectors_generations() -> None:
    """Every full collection walked Prefect's ~120,000 module objects, a pause in the middle of a run's
    start: they are frozen once, as the first run starts (a fresh process: this one may have run one)."""
    script = (
        "import gc, flows.run as run\n"
        "before = len(gc.get_objects())\n"
        "run._freeze_startup_objects()\n"
        "frozen = gc.get_freeze_count()\n"
        "run._freeze_startup_objects()\n"
        "print(before, frozen, gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    before, frozen, again, walked = map(int, out.stdout.split())
    assert frozen >= before > 50_000  # Prefect's modules, once imported
    assert again == frozen  # once per process
    assert walked < before // 100


async def test_the_run_is_published_while_its_clients_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Giving the slots back is a lease call per pool: the documents and artifacts do not wait for
    them. A failure of either still ends the run with it, once both are done."""
    from flows import run as run_module

    events: list[str] = []

    async def slow_close() -> None:
        events.append("closing")
        await asyncio.sleep(0.2)
        events.append("closed")

    async def publish(*args: Any) -> None:
        events.append("publishing")
        await asyncio.sleep(0.05)
        events.append("published")

    monkeypatch.setattr(run_module, "publish_run", publish)
    inputs = SimpleNamespace(params=None, archive=None)
    summary = RunSummary(run_id="x", catalog="c", archive="a", started_at=0.0, finished_at=0.0)
    stack = AsyncExitStack()
    stack.push_async_callback(slow_close)
    await run_module._close_and_publish(stack, summary, inputs)  # type: ignore[arg-type]
    assert events == ["closing", "publishing", "published", "closed"]

    async def broken_close() -> None:
        raise RuntimeError("close failed")

    events.clear()
    stack = AsyncExitStack()
    stack.push_async_callback(broken_close)
    with pytest.raises(RuntimeError, match="close failed"):
        await run_module._close_and_publish(stack, summary, inputs)  # type: ignore[arg-type]
    assert events == ["publishing", "published"]


async def test_the_gallery_template_is_compiled_once_the_first_product_finishes(
    sandboxes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing Jinja and compiling the page took ~45 ms at the run's end; it is done while the
    other products still wait on their providers."""
    from flows import run_products

    finished: list[int] = []
    compiled_after: list[int] = []

    class Counting(RunObserver):
        def on_product_done(self, outcome: Any, done: int, total: int) -> None:
            finished.append(done)

    real = run_products.prepare_template

    def prepare() -> None:
        compiled_after.append(len(finished))
        real()

    monkeypatch.setattr(run_products, "prepare_template", prepare)
    state, summary = await run_flow(Counting())  # the example catalog: 6 products
    assert state.is_completed(), summary.failure_report()
    assert compiled_after == [1] and len(finished) == 6
