"""One listingflow catalog run in a fresh process: ``python -m benchmarks.worker spec.json out.json``.

The spec names the catalog and run parameters; the environment (set by ``benchmarks.run``) carries
``PREFECT_API_URL``, the sandbox URLs and the ``LISTINGFLOW_*`` settings of the phase. Writes the flow's
wall time (around the flow call only, not interpreter start-up), the product statuses and the peak
RSS of this process (``ru_maxrss``: imports, Prefect client, the flow and everything it kept).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float | None:
    """This process's own peak RSS: ``VmHWM``, the high-water mark of its address space.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not usable for a subprocess on Linux: the kernel carries the
    parent's RSS at fork/exec time into the child's ``maxrss`` (``signal->maxrss`` survives ``execve``),
    so every child of a 180 MB orchestrator reports >= 180 MB. ``VmHWM`` belongs to the new address space
    created by ``execve`` and starts from zero."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _write_snapshot(path: str, since: Any = None) -> Any:
    """Writes the biggest holders of traced memory (with ``since``: the biggest growth since that
    snapshot, to ``<path>.growth.txt`` as well) and returns the snapshot."""
    import gc
    import tracemalloc

    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    total = sum(s.size for s in snapshot.statistics("filename"))
    stats = snapshot.statistics("traceback")[:30]
    lines = [f"{total / 1024 / 1024:.1f} MiB traced in all"]
    lines += [
        f"{s.size / 1024:.0f} KiB in {s.count} blocks\n  " + "\n  ".join(s.traceback.format()[-8:])
        for s in stats
    ]
    Path(path).write_text("\n\n".join(lines))
    if since is not None:
        diff = snapshot.compare_to(since, "traceback")[:40]
        grown = [
            f"{d.size_diff / 1024:+.0f} KiB in {d.count_diff:+d} blocks\n  "
            + "\n  ".join(d.traceback.format()[-10:])
            for d in diff
        ]
        Path(f"{path}.growth.txt").write_text("\n\n".join(grown))
    return snapshot


def _census() -> dict[str, int]:
    """Live objects by type (module-qualified), after a full collection."""
    import gc

    gc.collect()
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        t = type(obj)
        key = f"{t.__module__}.{t.__qualname__}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _write_census_growth(path: str, before: dict[str, int], after: dict[str, int], products: int) -> None:
    grown = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in after), reverse=True)[:40]
    lines = [f"live objects grown over {products} finished products (per product):"]
    lines += [f"{n:+8d}  {n / max(1, products):7.2f}  {k}" for n, k in grown if n > 0]
    Path(path).write_text("\n".join(lines))


def _product_hooks(hooks: list[Any]) -> Any:
    """An observer calling each diagnosis hook as a product finishes, in the order they were added."""
    from flows.observer import RunObserver

    class ProductHooks(RunObserver):
        def on_product_done(self, outcome: Any, done: int, total: int) -> None:
            for hook in hooks:
                hook(outcome, done, total)

    return ProductHooks()


async def _run(spec: dict[str, Any]) -> dict[str, Any]:
    from flows.catalog_flow import observed_catalog_flow
    from flows.params import RunParameters
    from flows.settings import reset_settings

    reset_settings()
    params = RunParameters.model_validate({"catalog": spec["catalog"], **spec.get("params", {})})
    rss_before = peak_rss_mb()
    profiler = None
    if spec.get("profile"):
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        profiler.start()
    hooks: list[Any] = []
    trace = os.environ.get("LISTINGFLOW_BENCH_TRACEMALLOC")  # diagnosis: where retained memory lives
    if trace:
        import tracemalloc

        early: list[Any] = []

        def snapshot_near_the_end(outcome: Any, done: int, total: int) -> None:
            # Two snapshots inside the flow run, at a quarter and at nine tenths of the catalog: what it
            # holds while running, and what grew in between (what each further product costs).
            if done == max(1, total // 4):
                early.append(_write_snapshot(f"{trace}-{spec['name']}-quarter.txt"))
            if done == max(1, total * 9 // 10):
                _write_snapshot(f"{trace}-{spec['name']}-during.txt", since=early[0] if early else None)

        hooks.append(snapshot_near_the_end)
        tracemalloc.start(8)
    census = os.environ.get("LISTINGFLOW_BENCH_CENSUS")  # diagnosis without tracemalloc's 10x slowdown
    if census:
        counts: list[dict[str, int]] = []

        def census_hook(outcome: Any, done: int, total: int) -> None:
            if done in (max(1, total // 4), max(1, total * 9 // 10)):
                counts.append(_census())
                if len(counts) == 2:
                    _write_census_growth(
                        f"{census}-{spec['name']}.txt", counts[0], counts[1], total * 9 // 10 - total // 4
                    )

        hooks.append(census_hook)
    cprofile = os.environ.get("LISTINGFLOW_BENCH_CPROFILE")  # diagnosis: CPU by function (main thread)
    if cprofile:
        import cProfile

        cprofiler = cProfile.Profile()
        cprofiler.enable()
    checkpoints = set(spec.get("checkpoints") or [])
    if checkpoints:  # peak RSS as the run passes given numbers of finished products, written as it goes
        reached: dict[str, Any] = {}

        def checkpoint(outcome: Any, done: int, total: int) -> None:
            if done in checkpoints:
                reached[str(done)] = {"peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - t0}
                Path(spec["progress"]).write_text(json.dumps(reached))

        hooks.append(checkpoint)
    started_epoch = time.time()
    t0 = time.perf_counter()
    state = await observed_catalog_flow(params, _product_hooks(hooks))
    wall = time.perf_counter() - t0
    if cprofile:
        cprofiler.disable()
        cprofiler.dump_stats(f"{cprofile}-{spec['name']}.prof")
    if trace:
        _write_snapshot(f"{trace}-{spec['name']}-after.txt")
    if profiler is not None:
        profiler.stop()
        Path(spec["profile"]).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    summary = await state.aresult(raise_on_failure=False)
    summary = summary if hasattr(summary, "products") else None  # a crashed run's result is its exception
    statuses: dict[str, int] = {}
    failures: list[str] = []
    if summary is not None:
        for p in summary.products:
            statuses[p.status] = statuses.get(p.status, 0) + 1
        failures = summary.failure_report()[:10]
    return {
        "wall": wall,
        "started_epoch": started_epoch,
        "finished_epoch": time.time(),
        "state": state.name,
        "statuses": statuses,
        "failures": failures,
        "headline": summary.headline() if summary is not None else None,
        "rss_before_flow_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    result = asyncio.run(_run(spec))
    result["peak_rss_mb"] = peak_rss_mb()
    result["ru_maxrss_mb"] = ru_maxrss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
