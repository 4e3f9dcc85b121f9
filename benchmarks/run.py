"""``python -m benchmarks.run`` (``make bench``): listingflow against the providers' limits, side by side.

Phases (one Prefect server for all, on PostgreSQL when the machine has its server binaries, as a
deployed Prefect server runs; fresh sandboxes per phase; every measured run in its own process):

A. ProdVisual at its REAL documented rate (60 requests/minute, not time-scaled): images only, 10 styles
   per product, so cross-product batches can carry 50 images; batches finished by ProdVisual's webhook.
   Time-boxed. Gives ProdVisual's rate-limit
   saturation (item 1) and images/minute against the 60 x 50 bound (item 3).
B. ListingRVA time-scaled x5 (30 /ai/* requests per 12 s): listing copy only. Saturation (item 1),
   wall vs bound (item 2). Each job needs one poll in the same bucket: paid submissions cap at half.
H. ListingRVA time-scaled x5: one image per product, finished by the signed ``image.generated``
   webhook, so the bucket goes to paid submissions. Saturation (item 1), wall vs bound (item 2).
F. Diagnostic (``--diagnostics``): phase B again with ``LISTINGFLOW_USE_GLOBAL_LIMITS=false``
   (process-local pacing only), to show what the Prefect global limits cost.
C. The default pipeline (copy, images, A+, Scale per variation) on all three providers, time-scaled
   (x10 on 60 and 20 products, x2 on 20), listingflow and the plain asyncio script side by side on
   their own sandboxes: wall vs the script and vs the lower bound of the graph schedule, requests per
   provider, first request, Pixii submissions per window (items 1, 2, 7); on the first configuration
   also Pixii's saturation, batching and a rerun of the finished catalog (items 1, 3, 6).
D. Orchestration overhead: zero-latency, unlimited sandboxes; the plain asyncio + httpx baseline vs
   listingflow as shipped (with ``--diagnostics`` also with global limits off) on the same catalog (item 4).
E. Memory: peak RSS (VmHWM) of one listingflow process running 5,000 products at zero latency, as
   shipped, recorded as it passes 100, 1,000 and 5,000 finished products (item 5). It starts once D is
   done and runs in the background (own Prefect server, nice 19) beside A, B and C.
G. Diagnostic (``--diagnostics``): phase A with batches polled instead of finished by webhook.

The diagnostics are off by default: they explain figures rather than measure a target, and the CPU they
take from the background memory run (E) is what it needs to reach 5,000 products inside 15 minutes.

Writes ``benchmarks/results/<YYYY-MM-DD>.json`` and prints one table: figure, measured, target, pass/fail.
``--quick`` runs small sizes (a smoke test of the harness, not figures to publish).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import threading
import time
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any

from flows.settings import Settings
from providers.prodvisual.models import DOCUMENTED_STYLES

from . import analysis as A
from .catalog_gen import CatalogShape, write_catalog
from .harness import (
    REPO,
    base_env,
    limits_env,
    postgres,
    postgres_available,
    prefect_server,
    remote_boxes,
    run_subprocess,
    sandbox_process,
    sandboxes,
    tempdir,
)

RESULTS = REPO / "benchmarks" / "results"
BUDGET_S = 15 * 60
# Phase C configurations (time scale, products): every window, job, poll interval and batch linger is
# divided by the scale. The first one also gives Pixii's saturation, the batching figure and the rerun.
# x2 on 60 products (100 Pixii submissions: ~335 s per side) does not fit the 15-minute budget beside
# the other phases; run it with --c-configs x2:60 (see the README).
C_CONFIGS_DEFAULT = "x10:60,x10:20,x2:20"
C_CONFIGS_QUICK = [(10.0, 20)]
TIMELINE_CONFIG = "x2-20"  # the configuration whose request timeline the table shows
C_VARIATION_EVERY = 3  # every third product has two variations (Pixii Scale once per variation)
SCALE_B = 5.0  # phases B and F: a chunk of ListingRVA's global limit covers 12 s, not 6 (see the README)

REAL_LIMITS: dict[str, dict[str, tuple[int, float]]] = {
    "listingrva": {"ai": (30, 60.0), "products": (120, 60.0), "global": (200, 60.0)},
    "prodvisual": {"api": (60, 60.0)},
    "pixii": {"submit": (10, 60.0)},
}
# Typical live job durations (contracts: ListingRVA 20-60 s, Pixii ~2 min, ProdVisual seconds).
REAL_JOB_SECONDS = {"listingrva": 20.0, "prodvisual": 3.0, "pixii": 120.0}
# listingflow's own poll cadences (ListingRVA 10 s then 5 s, Pixii 5 s, ProdVisual batch 5 s).
REAL_POLL_SECONDS = {"listingrva": 5.0, "prodvisual": 5.0, "pixii": 5.0}
REAL_FIRST_POLL_SECONDS = {"listingrva": 20.0}  # ListingRVASettings.poll_cadence.first_seconds
PROVIDER_ENV = {"listingrva": "LISTINGRVA", "prodvisual": "PRODVISUAL", "pixii": "PIXII"}
TEN_STYLES = [*DOCUMENTED_STYLES, "studio_shadow", "flat_lay"]  # the 8 documented + 2 of the sandbox's
HUGE = 1_000_000
MEMORY_SIZES = [100, 1000, 5000]
MEMORY_SIZES_QUICK = [20, 100]
# The lowest priority (and SCHED_IDLE, harness._niced): a timed phase's process that wakes preempts
# E's at once, and E takes ~0.3% of a core from it, not ~10% as at nice 10 (CFS weights 3 and 110
# against 1024), so phase C measures listingflow and the script, not E. E still has the cores while
# the rate-bound phases sleep.
MEMORY_NICE = 19


def scaled_limits(scale: float) -> dict[str, dict[str, tuple[int, float]]]:
    return {p: {g: (n, w / scale) for g, (n, w) in groups.items()} for p, groups in REAL_LIMITS.items()}


def sandbox_config(
    limits: dict[str, dict[str, tuple[int, float]]], job_seconds: dict[str, float], **extra: Any
) -> dict[str, dict[str, Any]]:
    return {
        p: {
            "rate_limits": dict(limits[p]),
            "job_seconds": job_seconds[p],
            "job_seconds_by_kind": {},
            "image_px": 32,
            "daily_limit": None,
            **extra,
        }
        for p in REAL_LIMITS
    }


def scaled_linger(scale: float) -> dict[str, str]:
    """How long a ProdVisual batch waits for more products, divided like every other time constant of
    the run (windows, jobs, polls) in the time-scaled phases."""
    default = Settings.model_fields["batch_linger_seconds"].default
    return {"LISTINGFLOW_BATCH_LINGER_SECONDS": f"{default / scale:g}"}


def parse_configs(text: str) -> list[tuple[float, int]]:
    """``"x10:60,x2:20"`` -> ``[(10.0, 60), (2.0, 20)]``."""
    configs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        scale, _, products = part.lstrip("x").partition(":")
        configs.append((float(scale), int(products)))
    return configs


def c_shape(products: int) -> CatalogShape:
    return CatalogShape(products, variation_every=C_VARIATION_EVERY, tag=f"pl{products}")


def first_request(timeline: dict[str, Any] | None) -> float | None:
    """Seconds from the run's start to its first request to any provider."""
    times = [t["first_request_s"] for t in (timeline or {}).values() if t.get("first_request_s") is not None]
    return min(times) if times else None


def pixii_windows(phase: dict[str, Any], side: str) -> list[int]:
    """Pixii paid submissions per window, windows counted from the side's first submission."""
    paid = ((phase.get(side + "_timeline") or {}).get("pixii") or {}).get("paid_s") or []
    return A.per_window(paid, phase["pixii_window_s"])


def unlimited() -> dict[str, dict[str, tuple[int, float]]]:
    return {p: {g: (HUGE, 1.0) for g in groups} for p, groups in REAL_LIMITS.items()}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.t0 = time.monotonic()
        self.tmp = tempdir("listingflow-bench-")
        self.api = ""
        self.out: dict[str, Any] = {"phases": {}, "figures": [], "notes": []}
        self.load: list[tuple[str, tuple[float, float, float]]] = []
        self.memory_run: dict[str, Any] = {}
        self.memory_deadline = float(BUDGET_S)

    # ---- plumbing ----

    def left(self) -> float:
        return BUDGET_S - (time.monotonic() - self.t0)

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.0f}s] {msg}", flush=True)

    def env(
        self,
        name: str,
        limits: dict[str, dict[str, tuple[int, float]]],
        polls: dict[str, float] | None,
        *,
        api: str | None = None,
        **extra: str,
    ) -> dict[str, str]:
        env = base_env(api or self.api)
        env.update(limits_env(limits))
        env.update(
            {
                "LISTINGFLOW_HOME": str(self.tmp / name / "state"),
                "LISTINGFLOW_ARCHIVE": str(self.tmp / name / "archive"),
                "LISTINGFLOW_LIMIT_PREFIX": f"bench-{name}",
            }
        )
        for p, seconds in (polls or {}).items():
            env[f"{PROVIDER_ENV[p]}_POLL_INTERVAL_SECONDS"] = f"{seconds:g}"
            if p in REAL_FIRST_POLL_SECONDS:  # the advised first poll, scaled like the interval
                first = REAL_FIRST_POLL_SECONDS[p] * seconds / REAL_POLL_SECONDS[p]
                env[f"{PROVIDER_ENV[p]}_FIRST_POLL_SECONDS"] = f"{first:g}"
        if self.args.no_global_limits:
            env["LISTINGFLOW_USE_GLOBAL_LIMITS"] = "false"
        env.update(extra)
        return env

    def measured(
        self, module: str, spec: dict[str, Any], env: dict[str, str], *, timeout: float
    ) -> dict[str, Any]:
        """One subprocess run, with the CPU seconds spent meanwhile by the Prefect server and by this
        process (the sandboxes' threads) next to the run's own."""
        import resource

        self.load.append((spec["name"], os.getloadavg()))
        server0, me0 = self.server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
        result = run_subprocess(module, spec, env, timeout=timeout, workdir=self.tmp / "work")
        server1, me1 = self.server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
        result["server_cpu_seconds"] = None if server0 is None or server1 is None else server1 - server0
        result["sandbox_cpu_seconds"] = (me1.ru_utime + me1.ru_stime) - (me0.ru_utime + me0.ru_stime)
        result["loadavg_after"] = os.getloadavg()[0]
        return result

    def flow(
        self, name: str, catalog: Path, params: dict[str, Any], env: dict[str, str], *, timeout: float
    ) -> dict[str, Any]:
        spec = {"name": name, "catalog": str(catalog), "params": params}
        if self.args.profile and name in self.args.profile:
            spec["profile"] = str(self.tmp / f"{name}-profile.txt")
        result = self.measured("benchmarks.worker", spec, env, timeout=timeout)
        if spec.get("profile"):
            result["profile"] = spec["profile"]
        self.log(
            f"{name}: {result.get('headline')} in {result.get('wall', float('nan')):.1f}s "
            f"(process {result['elapsed']:.1f}s, rc={result['returncode']}, "
            f"timed_out={result['timed_out']}; CPU s: "
            f"flow {_fmt(result.get('cpu_seconds'), '{:.1f}')}, "
            f"server {_fmt(result.get('server_cpu_seconds'), '{:.1f}')}, "
            f"sandboxes {_fmt(result.get('sandbox_cpu_seconds'), '{:.1f}')}; "
            f"VmHWM {_fmt(result.get('peak_rss_mb'), '{:.0f}')} MB)"
        )
        if result.get("error_tail"):
            self.log(f"{name} failed:\n{result['error_tail']}")
        return result

    def figure(
        self, item: str, figure: str, measured: Any, target: str, ok: bool | None, note: str = ""
    ) -> None:
        self.out["figures"].append(
            {"item": item, "figure": figure, "measured": measured, "target": target, "pass": ok, "note": note}
        )

    # ---- S. `listingflow run` as a person types it: start-up and a rerun ----

    def phase_s(self) -> None:
        """The CLI with its own background Prefect server (no ``PREFECT_API_URL``), on a machine that has
        run it before: a first run starts the server; then a new catalog's first provider request,
        counted from the command's start (interpreter, imports and all), and a rerun of that finished
        catalog, from start to exit."""
        name = "s-startup"
        limits = dict(REAL_LIMITS)
        cfg = sandbox_config(limits, {"listingrva": 1.0, "prodvisual": 1.0, "pixii": 1.0})
        warm = write_catalog(self.tmp / name / "warm.csv", CatalogShape(2, tag="sw"))
        fresh = write_catalog(self.tmp / name / "fresh.csv", CatalogShape(6, variation_every=3, tag="sf"))
        self.log(
            "S: `listingflow run` start-up with its background server, and a rerun of a finished catalog"
        )
        with sandboxes(cfg) as boxes:
            env = {k: v for k, v in self.env(name, limits, None).items() if k != "PREFECT_API_URL"}
            env["PREFECT_HOME"] = str(self.tmp / name / "prefect-home")  # never the operator's ~/.prefect
            try:
                started = self._cli(["run", str(warm)], env)  # starts the background server
                t0 = time.time()
                fresh_run = self._cli(["run", str(fresh)], env)
                asked = [r.t for b in boxes.values() for r in list(b.requests) if r.t >= t0]
                paid = [c.t for b in boxes.values() for c in A.paid_submissions(b, since=t0)]
                timeline = {
                    n: {
                        "first_request_s": min(
                            (r.t - t0 for r in list(b.requests) if r.t >= t0), default=None
                        ),
                        "paid_s": [round(c.t - t0, 3) for c in A.paid_submissions(b, since=t0)],
                        "routes_s": _routes_since(b, t0),
                    }
                    for n, b in boxes.items()
                }
                t1 = time.time()
                rerun = self._cli(["run", str(fresh)], env)
                rerun_wall = time.time() - t1
                paid_again = sum(len(A.paid_submissions(b, since=t1)) for b in boxes.values())
            finally:
                self._cli(["server", "stop"], env)
        first = min(asked) - t0 if asked else None
        first_paid = min(paid) - t0 if paid else None
        ok_runs = all(r["returncode"] == 0 for r in (started, fresh_run, rerun))
        self.out["phases"]["S"] = {
            "server_start_run_s": started["elapsed"],
            "fresh_run_s": fresh_run["elapsed"],
            "first_request_s": first,
            "first_paid_s": first_paid,
            "rerun_s": rerun_wall,
            "rerun_paid": paid_again,
            "timeline": timeline,
            "returncodes": [started["returncode"], fresh_run["returncode"], rerun["returncode"]],
        }
        self.log(
            f"S: first run (server start) {started['elapsed']:.1f}s; next catalog: first request "
            f"{_fmt(first, '{:.2f}s')}, first paid {_fmt(first_paid, '{:.2f}s')} after the command; "
            f"rerun {rerun_wall:.1f}s, paid {paid_again}"
        )
        self.figure(
            "4",
            "`listingflow run`, server already running: first provider request after the command starts",
            f"{_fmt(first, '{:.2f} s')} (first paid submission {_fmt(first_paid, '{:.2f} s')})",
            "<= 3 s",
            ok_runs and first is not None and first <= 3.0,
        )
        self.figure(
            "4",
            "`listingflow run` of a finished catalog (rerun): wall, command start to exit; paid submissions",
            f"{rerun_wall:.1f} s; {paid_again}",
            "< 5 s; 0",
            ok_runs and rerun_wall < 5.0 and paid_again == 0,
        )

    def _cli(self, args: list[str], env: dict[str, str]) -> dict[str, Any]:
        import subprocess

        t = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "listingflow.cli", *args],
            env=env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            self.log(
                f"listingflow {' '.join(args)}: exit {proc.returncode}\n"
                f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}"
            )
        return {"returncode": proc.returncode, "elapsed": time.monotonic() - t}

    # ---- A. ProdVisual at the real rate, batching ----

    def phase_a(self, *, webhooks: bool = True) -> None:
        """ProdVisual at its real rate, as advised for catalogs: batches finished by ProdVisual's signed
        webhook (``PRODVISUAL_WEBHOOK_URL``), so the 60 requests/minute all go to submissions; or, as
        phase G, polled (the default when no receiver is set up): a poll per batch shares the bucket."""
        name = "a-prodvisual-real" if webhooks else "g-prodvisual-real-polling"
        # G only shows what polling costs: half the catalog and a shorter box give the same rate
        products = (60 if self.quick else 300) // (1 if webhooks else 2)
        box_s = (45.0 if self.quick else 100.0) * (1.0 if webhooks else 0.75)
        limits = dict(REAL_LIMITS)
        cfg = sandbox_config(limits, {"listingrva": 1.0, "prodvisual": 2.0, "pixii": 1.0})
        catalog = write_catalog(self.tmp / name / "catalog.csv", CatalogShape(products, tag="pv"))
        self.log(
            f"{'A' if webhooks else 'G'}: ProdVisual at its real rate (60/min), {products} products x "
            f"{len(TEN_STYLES)} styles, time box {box_s:.0f}s, "
            f"batches {'finished by webhook' if webhooks else 'polled'}"
        )
        with sandboxes(cfg) as boxes:
            env = self.env(name, limits, None)
            if webhooks:
                env["PRODVISUAL_WEBHOOK_URL"] = "auto"
            t_start = time.time()
            res = self.flow(
                name,
                catalog,
                {
                    "steps": ["images"],
                    "providers": {"images": "prodvisual"},
                    "image_options": {"styles": TEN_STYLES},
                },
                env,
                timeout=box_s + 25,
            )
            box = boxes["prodvisual"]
            first = min((r.t for r in box.requests), default=t_start)
            sat = A.saturation(box, "api", 60, 60.0)
            charges = A.paid_submissions(box)
            images = [c.credits for c in charges]
            times = [c.t for c in charges]
            img_rate = None
            if len(times) > 1 and times[-1] > times[0]:
                img_rate = sum(images[:-1]) / (times[-1] - times[0]) * 60.0
            elif len(times) == 1:
                img_rate = images[0] / max(1e-9, (times[0] - first)) * 60.0 if times[0] > first else None
            per_batch = (sum(images) / len(images)) if images else None
            phase = {
                "products": products,
                "styles": len(TEN_STYLES),
                "time_box_s": box_s,
                "run": res,
                "saturation": sat,
                "images_charged": sum(images),
                "batches": len(images),
                "images_per_batch": per_batch,
                "images_per_minute": img_rate,
                "bound_images_per_minute": 60 * 50,
                "routes": A.route_counts(box),
                "finished_inside_box": not res["timed_out"],
            }
        ratio = None if img_rate is None else img_rate / 3000.0
        if not webhooks:
            self.out["phases"]["G"] = phase
            ps = sat["paid_saturation"]
            self.figure(
                "1",
                "diagnostic: prodvisual api (real rate) with batches polled instead of finished by "
                "webhook: paid submissions / limit; images/min",
                f"{_fmt(ps, '{:.2f}')}; "
                f"{_fmt(img_rate, '{:.0f}/min')} ({_fmt(ratio, '{:.2f}')} of 3000); 429s {sat['http_429']}",
                "(diagnostic)",
                None,
                "each batch's status poll counts against the same 60/min",
            )
            return
        self.out["phases"]["A"] = phase
        self._sat_figures("prodvisual", sat, where="batches finished by webhook")
        self.figure(
            "3",
            "ProdVisual images/min vs 60 req x 50 images/min (real rate)",
            _fmt(img_rate, "{:.0f}/min") + f" ({_fmt(ratio, '{:.2f}')} of 3000; "
            f"{_fmt(per_batch, '{:.1f}')} images/request)",
            ">= 0.95 of 3000/min",
            None if ratio is None else ratio >= 0.95,
            "batches finished by ProdVisual's webhook: no status polls",
        )

    # ---- B. ListingRVA, time-scaled ----

    def phase_b(self, *, local_only: bool = False) -> None:
        scale = SCALE_B
        name = f"b2-listingrva-x{scale:g}-local-pacing" if local_only else f"b-listingrva-x{scale:g}"
        # 96 products: 76 s of paced requests at x5, so the ~2 s from flow start to the first request
        # (flow run, limits, product index: fixed, not scaled) weighs what it would in a real catalog
        products = 16 if self.quick else 96
        limits = scaled_limits(scale)
        jobs = {p: s / scale for p, s in REAL_JOB_SECONDS.items()}
        polls = {p: s / scale for p, s in REAL_POLL_SECONDS.items()}
        catalog = write_catalog(self.tmp / name / "catalog.csv", CatalogShape(products, tag="lr"))
        self.log(
            f"B: ListingRVA x{scale:g} time-scaled (30 /ai/* per {60 / scale:g}s), {products} products, "
            "copy only"
        )
        with sandboxes(sandbox_config(limits, jobs)) as boxes:
            env = self.env(name, limits, polls, **scaled_linger(scale))
            if local_only:
                env["LISTINGFLOW_USE_GLOBAL_LIMITS"] = "false"
            res = self.flow(
                name, catalog, {"steps": ["copy"]}, env, timeout=min(240.0, max(60.0, self.left() - 420))
            )
            box = boxes["listingrva"]
            n, w = limits["listingrva"]["ai"]
            sat = A.saturation(box, "ai", n, w)
            bound = A.single_group_bound(requests=2 * products, limit=A.Limit(n, w), tail=0.0)
            bound = max(bound, jobs["listingrva"])
            phase = {
                "products": products,
                "run": res,
                "saturation": sat,
                "routes": A.route_counts(box),
                "bound_s": bound,
                "polls_per_job": _polls_per_job(box, "ai_job", "ai_listing"),
                "timeline": A.timeline(box, res["started_epoch"]) if res.get("started_epoch") else None,
            }
        self.out["phases"]["B2" if local_only else "B"] = phase
        wall = res.get("wall")
        ratio = None if wall is None else wall / bound
        if local_only:
            rs, ps = sat["request_saturation"], sat["paid_saturation"]
            self.figure(
                "1",
                f"diagnostic: listingrva ai (x{scale:g}) with LISTINGFLOW_USE_GLOBAL_LIMITS=false: "
                "requests / paid "
                "per limit",
                f"{_fmt(rs, '{:.2f}')} / {_fmt(ps, '{:.2f}')}; wall/bound {_fmt(ratio, '{:.2f}')}; "
                f"429s {sat['http_429']}",
                "(diagnostic)",
                None,
                "process-local pacer only: what the Prefect global limit costs",
            )
            return
        self._sat_figures("listingrva", sat, scale=scale)
        self.figure(
            "2",
            f"wall / bound: ListingRVA copy only (x{scale:g})",
            _fmt(ratio, "{:.2f}") + f" ({_fmt(wall, '{:.1f}')}s vs {bound:.1f}s)",
            "<= 1.10",
            None if ratio is None else ratio <= 1.10,
            f"{phase['polls_per_job']:.1f} polls per job share the /ai/* bucket"
            if phase["polls_per_job"]
            else "",
        )

    # ---- H. ListingRVA images finished by webhook, time-scaled ----

    def phase_h(self) -> None:
        """ListingRVA's image jobs with ``LISTINGRVA_WEBHOOK_URL``: the signed ``image.generated`` event
        ends each wait, so the 30 /ai/* requests a minute all go to paid submissions (listing copy has no
        event: every job needs a ``GET /ai/jobs`` in the same bucket, which caps phase B at half)."""
        scale = SCALE_B
        name = f"h-listingrva-images-webhook-x{scale:g}"
        products = 16 if self.quick else 96
        limits = scaled_limits(scale)
        jobs = {p: s / scale for p, s in REAL_JOB_SECONDS.items()}
        polls = {p: s / scale for p, s in REAL_POLL_SECONDS.items()}
        catalog = write_catalog(self.tmp / name / "catalog.csv", CatalogShape(products, tag="li"))
        self.log(
            f"H: ListingRVA x{scale:g} time-scaled (30 /ai/* per {60 / scale:g}s), {products} products, "
            "one image each, finished by webhook"
        )
        with sandboxes(sandbox_config(limits, jobs)) as boxes:
            env = self.env(name, limits, polls, **scaled_linger(scale))
            env["LISTINGRVA_WEBHOOK_URL"] = "auto"
            # a lost delivery is reconciled by one poll after this long (60 s real)
            env["LISTINGRVA_WEBHOOK_RECONCILE_SECONDS"] = f"{60.0 / scale:g}"
            res = self.flow(
                name,
                catalog,
                {"steps": ["images"], "providers": {"images": "listingrva"}},
                env,
                timeout=min(240.0, max(60.0, self.left() - 300)),
            )
            box = boxes["listingrva"]
            n, w = limits["listingrva"]["ai"]
            sat = A.saturation(box, "ai", n, w)
            # every submission at the pace, then the last job's duration
            bound = A.single_group_bound(requests=products, limit=A.Limit(n, w), tail=jobs["listingrva"])
            deliveries = [d for d in box.deliveries if d["event"] == "image.generated"]
            phase = {
                "products": products,
                "run": res,
                "saturation": sat,
                "routes": A.route_counts(box),
                "bound_s": bound,
                "polls_per_job": _polls_per_job(box, "ai_job", "ai_image"),
                "webhook_deliveries": len(deliveries),
                "webhook_delivered_ok": sum(1 for d in deliveries if d["status"] == 200),
                "timeline": A.timeline(box, res["started_epoch"]) if res.get("started_epoch") else None,
            }
        self.out["phases"]["H"] = phase
        wall = res.get("wall")
        ratio = None if wall is None else wall / bound
        self._sat_figures("listingrva", sat, scale=scale, where="image jobs finished by webhook")
        self.figure(
            "2",
            f"wall / bound: ListingRVA images by webhook (x{scale:g})",
            _fmt(ratio, "{:.2f}") + f" ({_fmt(wall, '{:.1f}')}s vs {bound:.1f}s)",
            "<= 1.10",
            None if ratio is None else ratio <= 1.10,
            f"{_fmt(phase['polls_per_job'], '{:.2f}')} polls per job; "
            f"{phase['webhook_delivered_ok']}/{phase['webhook_deliveries']} events delivered",
        )

    # ---- C. the default pipeline beside the plain asyncio script, several scales and sizes; a rerun ----

    def phase_c(self) -> None:
        """Each configuration (time scale, catalog size) runs listingflow and the plain asyncio script
        (``benchmarks/baseline_asyncio.py``) side by side, each on its own fresh sandboxes with the same
        limits and job durations, so load on the machine weighs on both alike. The first configuration
        also gives Pixii's saturation, the batching figure and the rerun."""
        configs = C_CONFIGS_QUICK if self.quick else parse_configs(self.args.c_configs)
        runs: dict[str, Any] = {}
        load_start = os.getloadavg()[0]
        for n, (scale, products) in enumerate(configs):
            if n and self.left() < self._c_estimate(scale, products) + 60:
                note = (
                    f"phase C x{scale:g} on {products} products skipped: "
                    f"{self.left():.0f}s of the budget left"
                )
                self.log(note)
                self.out["notes"].append(note)
                continue
            runs[f"x{scale:g}-{products}"] = self._versus(scale, products, primary=n == 0)
        self.out["phases"]["C"] = {"configs": runs}
        self.out["notes"].append(
            f"phase C: listingflow and the script ran side by side (load average {load_start:.1f} at the "
            f"start of C, {os.getloadavg()[0]:.1f} at its end, on {os.cpu_count()} CPUs): contention on a "
            "shared machine slows both, but weighs more on listingflow, whose flow process and Prefect "
            "server spend ~0.2 s of CPU per product (phase D) where the script spends ~0.03 s, and more at "
            "x10 than at x2"
        )
        for key, phase in runs.items():
            self._versus_figures(key, phase)
        if runs:
            self._primary_figures(next(iter(runs.values())))
        if (
            timeline_key := TIMELINE_CONFIG if TIMELINE_CONFIG in runs else next(iter(runs), None)
        ) is not None:
            self._timeline_figures(timeline_key, runs[timeline_key])

    def _c_estimate(self, scale: float, products: int) -> float:
        shape = c_shape(products)
        limits = scaled_limits(scale)
        return (
            A.pipeline_lower_bound(
                products=shape.products,
                variations=shape.variations,
                styles=1,
                limits={
                    f"{p}.{g}": A.Limit(n, w) for p, groups in limits.items() for g, (n, w) in groups.items()
                },
                job={p: s / scale for p, s in REAL_JOB_SECONDS.items()},
                any_without_variations=True,
            )["bound_s"]
            * 1.1
            + 10
        )

    def _versus(self, scale: float, products: int, *, primary: bool) -> dict[str, Any]:
        """listingflow and the script side by side on one configuration; with ``primary``, then a
        rerun of listingflow's finished catalog on the same state and sandboxes."""
        from concurrent.futures import ThreadPoolExecutor

        name = f"c-pipeline-x{scale:g}-{products}"
        shape = c_shape(products)
        limits = scaled_limits(scale)
        jobs = {p: s / scale for p, s in REAL_JOB_SECONDS.items()}
        polls = {p: s / scale for p, s in REAL_POLL_SECONDS.items()}
        catalog = write_catalog(self.tmp / name / "catalog.csv", shape)
        bound = A.pipeline_lower_bound(
            products=shape.products,
            variations=shape.variations,
            styles=1,
            limits={
                f"{p}.{g}": A.Limit(n, w) for p, groups in limits.items() for g, (n, w) in groups.items()
            },
            job=jobs,
            any_without_variations=shape.products_with_variations() < shape.products,
        )
        timeout = bound["bound_s"] * 2 + 60
        self.log(
            f"C: default pipeline x{scale:g} time-scaled, {shape.products} products, {shape.variations} "
            f"variations: listingflow and the asyncio script side by side (bound {bound['bound_s']:.1f}s)"
        )
        with ExitStack() as stack:
            # Each side's sandboxes in a process of its own: as threads of one process, a side's
            # provider answered late whenever the other side's sandboxes held the GIL (listingflow's
            # bursts of ten Pixii submissions were counted over 0.15 s where the script's took 0.02 s)
            config = sandbox_config(limits, jobs)
            ours_info = stack.enter_context(sandbox_process(config, self.tmp / name / "sandboxes"))
            env = {**self.env(name, limits, polls, **scaled_linger(scale)), **ours_info["env"]}
            # The server set up as for deployments (`listingflow bootstrap`: the limits, the result
            # storage), as a nightly run finds it. Each configuration has its own limits: without it
            # the timed run created 8 (0.07 s on an idle server, 0.2-0.6 s beside phase E).
            self._cli(["bootstrap"], env)
            theirs_info = stack.enter_context(sandbox_process(config, self.tmp / name / "sandboxes-script"))
            script_env = {
                **self.env(name + "-script", limits, polls, **scaled_linger(scale)),
                **theirs_info["env"],
            }
            ours, theirs = remote_boxes(ours_info), remote_boxes(theirs_info)
            spec = {
                "name": name + "-script",
                "catalog": str(catalog),
                "out_dir": str(self.tmp / name / "script"),
                "limits": {p: {g: [n, w] for g, (n, w) in groups.items()} for p, groups in limits.items()},
                "linger": 1.0 / scale,
            }
            with ThreadPoolExecutor(2) as pool:
                ours_run = pool.submit(self.flow, name, catalog, {}, env, timeout=timeout)
                script_run = pool.submit(
                    self.measured, "benchmarks.baseline_asyncio", spec, script_env, timeout=timeout
                )
                first, script = ours_run.result(), script_run.result()
            end_first = time.time()
            for box in (*ours.values(), *theirs.values()):
                box.refresh()
            self.log(
                f"{name}-script: {script.get('products')} products in {_fmt(script.get('wall'), '{:.1f}')}s "
                f"(failures {script.get('failures')})"
            )
            phase: dict[str, Any] = {
                "scale": scale,
                "products": shape.products,
                "variations": shape.variations,
                "bound": bound,
                "first": first,
                "script": script,
            }
            for side, boxes, run in (("listingflow", ours, first), ("script", theirs, script)):
                phase[side + "_routes"] = {p: A.route_counts(b, until=end_first) for p, b in boxes.items()}
                phase[side + "_http_429"] = {
                    p: A.status_count(b, 429, until=end_first) for p, b in boxes.items()
                }
                phase[side + "_timeline"] = (
                    {p: A.timeline(b, run["started_epoch"], end_first) for p, b in boxes.items()}
                    if run.get("started_epoch")
                    else None
                )
            phase["pixii_window_s"] = limits["pixii"]["submit"][1]
            pv = [c.credits for c in A.paid_submissions(ours["prodvisual"], until=end_first)]
            phase["prodvisual_batches"] = pv
            if primary:
                phase["saturation"] = {
                    p: A.saturation(ours[p], g, n, w, until=end_first)
                    for p, groups in limits.items()
                    for g, (n, w) in groups.items()
                    if (p, g) in {("pixii", "submit"), ("listingrva", "ai"), ("prodvisual", "api")}
                }
                phase["rerun"] = self.flow(name + "-rerun", catalog, {}, env, timeout=120.0)
                for box in ours.values():
                    box.refresh()
                phase["paid_rerun"] = {
                    p: len(A.paid_submissions(b, since=end_first)) for p, b in ours.items()
                }
                phase["routes_rerun"] = {p: A.route_counts(b, since=end_first) for p, b in ours.items()}
        self.log(f"{name}: " + "; ".join(self._versus_summary(phase)))
        return phase

    @staticmethod
    def _versus_summary(phase: dict[str, Any]) -> list[str]:
        wall, base, bound = phase["first"].get("wall"), phase["script"].get("wall"), phase["bound"]["bound_s"]
        ours = {p: sum(r.values()) for p, r in phase["listingflow_routes"].items()}
        theirs = {p: sum(r.values()) for p, r in phase["script_routes"].items()}
        return [
            f"wall {_fmt(wall, '{:.1f}')}s vs script {_fmt(base, '{:.1f}')}s vs bound {bound:.1f}s",
            "requests " + ", ".join(f"{p} {ours[p]} vs {theirs.get(p, 0)}" for p in sorted(ours)),
            (
                f"first request {_fmt(first_request(phase['listingflow_timeline']), '{:.2f}')}s vs "
                f"{_fmt(first_request(phase['script_timeline']), '{:.2f}')}s"
            ),
            f"Pixii per window {pixii_windows(phase, 'listingflow')} vs {pixii_windows(phase, 'script')}",
        ]

    def _versus_figures(self, key: str, phase: dict[str, Any]) -> None:
        where = f"x{phase['scale']:g}, {phase['products']} products, {phase['variations']} variations"
        wall, base = phase["first"].get("wall"), phase["script"].get("wall")
        failed = phase["first"].get("failures") or phase["script"].get("failures")
        ratio = None if wall is None or not base else wall / base
        self.figure(
            "7",
            f"wall / plain asyncio script, same chain ({where})",
            _fmt(ratio, "{:.2f}") + f" ({_fmt(wall, '{:.1f}')}s vs {_fmt(base, '{:.1f}')}s)",
            "<= 1.0",
            None if ratio is None else ratio <= 1.0,
            f"failures: {failed}" if failed else "",
        )
        bound = phase["bound"]
        ratio = None if wall is None else wall / bound["bound_s"]
        self.figure(
            "2",
            f"wall / lower bound, graph schedule ({where})",
            _fmt(ratio, "{:.2f}")
            + f" ({_fmt(wall, '{:.1f}')}s vs {bound['bound_s']:.1f}s, {bound['binding']})",
            "<= 1.05",
            None if ratio is None else ratio <= 1.05,
            f"script {_fmt(None if base is None else base / bound['bound_s'], '{:.2f}')}",
        )
        ours = {p: sum(r.values()) for p, r in phase["listingflow_routes"].items()}
        theirs = {p: sum(r.values()) for p, r in phase["script_routes"].items()}
        fewer = bool(ours) and all(ours[p] <= theirs.get(p, 0) for p in ours)
        balance = sum(r.get("credits", 0) for r in phase["listingflow_routes"].values())
        self.figure(
            "7",
            f"provider requests, listingflow vs script ({where})",
            ", ".join(f"{p} {ours[p]} vs {theirs.get(p, 0)}" for p in sorted(ours)),
            "fewer or equal",
            fewer,
            f"listingflow's include {balance} balance reads (pre-flight's access check, which is the "
            f"run's start balance; the end balance is read again where the answers did not state it: "
            f"ListingRVA's); ProdVisual batches {len(phase['prodvisual_batches'])}",
        )
        self.figure(
            "7",
            f"first provider request after the flow call, listingflow vs script (s, {where})",
            f"{_fmt(first_request(phase['listingflow_timeline']), '{:.2f}')} vs "
            f"{_fmt(first_request(phase['script_timeline']), '{:.2f}')}",
            "(report)",
            None,
            "not scaled: wall seconds",
        )
        windows = pixii_windows(phase, "listingflow")
        first_window_ok = len(windows) > 0 and windows[0] == min(10, sum(windows))
        self.figure(
            "1",
            f"Pixii submissions per window ({where}): listingflow vs script",
            f"{windows} vs {pixii_windows(phase, 'script')}; 429s "
            f"{sum(phase['listingflow_http_429'].values())} vs {sum(phase['script_http_429'].values())}",
            "first window = 10, 0 429s",
            first_window_ok and sum(phase["listingflow_http_429"].values()) == 0,
        )

    def _timeline_figures(self, key: str, phase: dict[str, Any]) -> None:
        """Where the time of one run goes: the first request, the first Pixii submission and the last,
        on both sides (seconds after the flow call; nominal seconds are these times the scale)."""
        scale = phase["scale"]
        rows = []
        for side in ("listingflow", "script"):
            tl = phase[side + "_timeline"] or {}
            paid = (tl.get("pixii") or {}).get("paid_s") or []
            wall = (phase["first"] if side == "listingflow" else phase["script"]).get("wall")
            rows.append(
                f"{side}: first request {_fmt(first_request(tl), '{:.2f}')}s, first Pixii submission "
                f"{_fmt(paid[0] if paid else None, '{:.2f}')}s, "
                f"last {_fmt(paid[-1] if paid else None, '{:.1f}')}s, "
                f"end {_fmt(wall, '{:.1f}')}s"
            )
        self.figure(
            "7",
            f"request timeline (x{scale:g}, {phase['products']} products; x{scale:g} for nominal seconds)",
            "; ".join(rows),
            "(report)",
            None,
        )

    def _primary_figures(self, phase: dict[str, Any]) -> None:
        """The figures phase C always had, from its first configuration: Pixii's saturation, the
        batching inside the pipeline and the rerun."""
        scale = phase["scale"]
        self._sat_figures("pixii", phase["saturation"]["pixii"], scale=scale, where="default pipeline")
        pv = phase["prodvisual_batches"]
        self.figure(
            "3",
            f"ProdVisual images per batch request inside the default pipeline (x{scale:g})",
            f"{_fmt(sum(pv) / len(pv) if pv else None, '{:.1f}')} "
            f"({sum(pv)} images in {len(pv)} batches: {pv})",
            "(report; bound 50)",
            None,
            f"at most {Settings.model_fields['product_concurrency'].default} products in progress: the rest "
            "reach the images step as earlier ones finish",
        )
        paid = sum(phase["paid_rerun"].values())
        self.figure("6", "rerun: paid submissions", paid, "0", paid == 0)
        wall, rerun = phase["first"].get("wall"), phase["rerun"]
        frac = None if rerun.get("wall") is None or not wall else rerun["wall"] / wall
        self.figure(
            "6",
            "rerun: wall / first run",
            _fmt(frac, "{:.3f}") + f" ({_fmt(rerun.get('wall'), '{:.1f}')}s vs {_fmt(wall, '{:.1f}')}s)",
            "<= 0.10",
            None if frac is None else frac <= 0.10,
            rerun.get("headline") or "",
        )

    def _sat_figures(
        self, provider: str, sat: dict[str, Any], *, scale: float = 1.0, where: str = ""
    ) -> None:
        scale_text = "real rate" if scale == 1.0 else f"x{scale:g} time-scaled"
        label = f"{provider} {sat['group']} ({sat['limit']}/{sat['window_s'] * scale:g}s, {scale_text}"
        label += f", {where})" if where else ")"
        ps, rs = sat["paid_saturation"], sat["request_saturation"]
        self.figure(
            "1",
            f"saturation {label}: paid submissions / limit",
            _fmt(ps, "{:.2f}") + f" ({sat['paid_submissions']} paid)",
            ">= 0.95",
            None if ps is None else ps >= 0.95,
        )
        self.figure(
            "1",
            f"saturation {label}: all counted requests / limit",
            _fmt(rs, "{:.2f}") + f" (max {sat['max_counted_in_any_window']} in any window)",
            "(info)",
            None,
        )
        self.figure(
            "1",
            f"429s provoked by listingflow: {provider} ({scale_text})",
            sat["http_429"],
            "0",
            sat["http_429"] == 0,
        )

    # ---- D. orchestration overhead ----

    def phase_d(self) -> None:
        products = 20 if self.quick else 100
        shape = CatalogShape(products, variation_every=2, tag="oh")
        catalog = write_catalog(self.tmp / "d" / "catalog.csv", shape)
        polls = {p: 0.05 for p in REAL_LIMITS}
        zero = {p: 0.0 for p in REAL_LIMITS}
        inflight = json.dumps({p: 10_000 for p in REAL_LIMITS})
        limits = {p: {g: (100_000, 1.0) for g in groups} for p, groups in REAL_LIMITS.items()}
        self.log(
            f"D: overhead at zero latency: baseline vs listingflow, {products} products"
            + (" (global limits off and on)" if self.args.diagnostics else "")
        )
        runs: dict[str, Any] = {}
        plan = [
            ("baseline", catalog, products, None),
            *(
                [("listingflow-no-global-limits", catalog, products, "false")]
                if self.args.diagnostics
                else []
            ),
            ("listingflow-as-shipped", catalog, products, "true"),
        ]
        for label, cat, n, use_global in plan:
            with sandboxes(sandbox_config(unlimited(), zero)) as boxes:
                env = self.env(f"d-{label}", limits, polls, LISTINGFLOW_INFLIGHT_LIMITS=inflight)
                if use_global is None:
                    spec = {
                        "name": f"d-{label}",
                        "catalog": str(cat),
                        "out_dir": str(self.tmp / f"d-{label}" / "out"),
                    }
                    res = self.measured("benchmarks.baseline_asyncio", spec, env, timeout=300)
                    self.log(
                        f"d-{label}: {res.get('products')} products in {res.get('wall', float('nan')):.2f}s "
                        f"(failures {res.get('failures')})"
                    )
                else:
                    env["LISTINGFLOW_USE_GLOBAL_LIMITS"] = use_global
                    res = self.flow(
                        f"d-{label}", cat, {}, env, timeout=min(400.0, max(60.0, self.left() - 200))
                    )
                res["products"] = n
                res["routes"] = {p: A.route_counts(b) for p, b in boxes.items()}
                res["paid"] = {p: len(A.paid_submissions(b)) for p, b in boxes.items()}
                runs[label] = res
        self.out["phases"]["D"] = {"runs": runs, "variations": shape.variations}

        def per(label: str) -> float | None:
            r = runs.get(label, {})
            return None if r.get("wall") is None or r.get("timed_out") else r["wall"] / r["products"]

        base, lf_off = per("baseline"), per("listingflow-no-global-limits")
        lf_on = per("listingflow-as-shipped")  # against the same baseline run: same catalog, same calls
        same = _same_calls(
            runs.get("baseline", {}).get("routes"), runs.get("listingflow-as-shipped", {}).get("routes")
        )
        if "listingflow-no-global-limits" in runs:
            self.figure(
                "4",
                f"time/product: baseline vs listingflow, global limits off ({products} products)",
                f"{_fmt(base, '{:.3f}')}s vs {_fmt(lf_off, '{:.3f}')}s = "
                f"{_fmt(None if not base or lf_off is None else lf_off / base, '{:.1f}')}x",
                "(diagnostic)",
                None,
            )
        self.figure(
            "4",
            f"time/product: baseline vs listingflow as shipped, global limits on ({products} products)",
            f"{_fmt(base, '{:.3f}')}s vs {_fmt(lf_on, '{:.3f}')}s = "
            f"{_fmt(None if not base or lf_on is None else lf_on / base, '{:.1f}')}x",
            "(report)",
            None,
            same,
        )
        rss = runs.get("listingflow-as-shipped", {}).get("peak_rss_mb")
        if rss is not None:
            self.out.setdefault("memory", {})[str(products)] = {
                "peak_rss_mb": rss,
                "wall": runs["listingflow-as-shipped"].get("wall"),
                "source": "phase D (same run)",
            }

    # ---- E. memory ----

    def start_phase_e(self, pg_url: str | None) -> threading.Thread:
        """The memory run starts first and runs in the background, at lower CPU priority, beside the
        rate-bound phases (A, B, F, C: their processes mostly sleep between paced requests). One process
        runs the whole catalog; its peak RSS is recorded as it passes each size (``checkpoints``), so the
        5,000-product figure fits in the budget. It has its own Prefect server (and database), so its
        stream of task-run events does not queue the other phases' requests."""
        sizes = MEMORY_SIZES_QUICK if self.quick else MEMORY_SIZES
        thread = threading.Thread(
            target=self._memory_run, args=(sizes, pg_url), name="memory-run", daemon=True
        )
        thread.start()
        return thread

    def _memory_run(self, sizes: list[int], pg_url: str | None) -> None:
        n = sizes[-1]
        name = f"e-memory-{n}"
        progress = self.tmp / name / "progress.json"
        polls = {p: 0.05 for p in REAL_LIMITS}
        zero = {p: 0.0 for p in REAL_LIMITS}
        limits = {p: {g: (100_000, 1.0) for g in groups} for p, groups in REAL_LIMITS.items()}
        inflight = json.dumps({p: 10_000 for p in REAL_LIMITS})
        res: dict[str, Any] = {}
        try:
            catalog = write_catalog(
                self.tmp / name / "catalog.csv", CatalogShape(n, variation_every=2, tag="mem")
            )
            # its own PostgreSQL cluster, niced like the rest of it: in the timed phases' cluster, its
            # stream of writes was served at their priority and slowed them (load 4.5 during phase C)
            own_db: AbstractContextManager[str | None] = (
                postgres(self.tmp / "postgres-e", nice=MEMORY_NICE) if pg_url else nullcontext(None)
            )
            with (
                own_db as db,
                prefect_server(self.tmp / "server-e", db, nice=MEMORY_NICE) as server,
                sandbox_process(
                    sandbox_config(unlimited(), zero), self.tmp / name / "sandboxes", nice=MEMORY_NICE
                ) as boxes,
            ):
                self.log(
                    f"E: memory, one run of {n} products (peak RSS recorded at {sizes}), default pipeline, "
                    f"zero latency, in the background at nice {MEMORY_NICE}"
                )
                env = self.env(name, limits, polls, api=server.api_url, LISTINGFLOW_INFLIGHT_LIMITS=inflight)
                env.update(boxes["env"])  # its own sandboxes, whatever the phase running beside it set
                every = sorted({*sizes, *range(250, n, 250)})
                spec = {
                    "name": name,
                    "catalog": str(catalog),
                    "params": {},
                    "checkpoints": every,
                    "progress": str(progress),
                }
                cpu0 = server.cpu_seconds()
                timeout = max(30.0, self.memory_deadline - (time.monotonic() - self.t0))
                res = run_subprocess(
                    "benchmarks.worker",
                    spec,
                    env,
                    timeout=timeout,
                    workdir=self.tmp / "work",
                    nice=MEMORY_NICE,
                )
                cpu1 = server.cpu_seconds()
                res["server_cpu_seconds"] = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
            res["paid"] = boxes.get("paid")
        except Exception as exc:  # noqa: BLE001 - reported with the figures
            res["error"] = f"{type(exc).__name__}: {exc}"
        try:
            res["checkpoints"] = json.loads(progress.read_text())
        except (OSError, ValueError):
            res["checkpoints"] = {}
        self.memory_run = res
        self.log(
            f"{name}: {res.get('headline')} in {_fmt(res.get('wall'), '{:.0f}')}s "
            f"(rc={res.get('returncode')}, "
            f"timed_out={res.get('timed_out')}; CPU s: flow {_fmt(res.get('cpu_seconds'), '{:.0f}')}, server "
            f"{_fmt(res.get('server_cpu_seconds'), '{:.0f}')}; "
            f"VmHWM {_fmt(res.get('peak_rss_mb'), '{:.0f}')} MB; "
            f"checkpoints reached: {sorted(int(k) for k in res['checkpoints'])[-1:] or 'none'})"
        )
        if res.get("error") or res.get("error_tail"):
            self.log(f"{name} failed: {res.get('error') or res.get('error_tail')}")

    def finish_phase_e(self, thread: threading.Thread) -> None:
        thread.join()
        sizes = MEMORY_SIZES_QUICK if self.quick else MEMORY_SIZES
        res = self.memory_run
        finished = res.get("returncode") == 0 and not res.get("timed_out") and res.get("wall") is not None
        points = res.get("checkpoints") or {}
        memory = self.out.setdefault("memory", {})
        standalone = memory.get(str(sizes[0]))  # phase D's as-shipped run: a process of exactly that size
        run_info = {
            k: res.get(k)
            for k in (
                "wall",
                "headline",
                "failures",
                "timed_out",
                "returncode",
                "cpu_seconds",
                "server_cpu_seconds",
                "rss_before_flow_mb",
                "error",
            )
        }
        self.out["phases"]["E"] = {"run": run_info, "checkpoints": points, "nice": MEMORY_NICE}
        for n in sizes:
            point = points.get(str(n)) or {}
            rss = res.get("peak_rss_mb") if n == sizes[-1] and finished else point.get("peak_rss_mb")
            memory.setdefault(str(n), {}).update(
                {"in_run_of": sizes[-1], "peak_rss_mb_in_run": rss, "seconds_in_run": point.get("seconds")}
            )
        base = (standalone or {}).get("peak_rss_mb") or memory[str(sizes[0])].get("peak_rss_mb_in_run")
        base_label = (
            f"the {sizes[0]}-product run of phase D" if standalone else f"{sizes[0]} products in the same run"
        )
        if standalone:
            self.figure(
                "5",
                f"peak RSS of a {sizes[0]}-product run (phase D, as shipped)",
                f"{standalone['peak_rss_mb']:.0f} MB (1.00x)",
                "(report)",
                None,
            )
        for n in sizes:
            rss = memory[str(n)]["peak_rss_mb_in_run"]
            last = n == sizes[-1]
            target = "< 500 MB and < 1.5x" if last else "(report)"
            what = f"peak RSS of one {sizes[-1]}-product run " + (
                "at its end" if last else f"once {n} products had finished"
            )
            if rss is None:
                reached = max((int(k) for k in points), default=0)
                why = "timed out" if res.get("timed_out") else (res.get("error") or "run failed")
                self.figure(
                    "5",
                    what,
                    f"not measured ({why}; {reached} products finished in "
                    f"{_fmt(self.memory_deadline, '{:.0f}')}s)",
                    target,
                    False if last else None,
                )
                continue
            growth = rss / base if base else None
            ok = (rss < 500 and growth is not None and growth < 1.5) if last else None
            self.figure(
                "5",
                what,
                f"{rss:.0f} MB ({_fmt(growth, '{:.2f}')}x {base_label})",
                target,
                ok,
                f"{_fmt(res.get('wall') if last else memory[str(n)]['seconds_in_run'], '{:.0f}')}s "
                "into the run",
            )
        measured = [
            (n, memory[str(n)]["peak_rss_mb_in_run"]) for n in sizes if memory[str(n)]["peak_rss_mb_in_run"]
        ]
        if len(measured) >= 2:
            (n0, r0), (n1, r1) = measured[0], measured[-1]
            self.out["memory_trend_mb_per_1000_products"] = (r1 - r0) / (n1 - n0) * 1000

    # ---- report ----

    def machine(self) -> dict[str, Any]:
        import prefect

        info = {
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "prefect": prefect.__version__,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_start": os.getloadavg(),
        }
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
            info["mem_total_mb"] = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
        except OSError:
            pass
        return info

    def run(self) -> dict[str, Any]:
        self.out["machine"] = self.machine()
        self.out["started"] = dt.datetime.now().isoformat(timespec="seconds")
        self.out["mode"] = "quick" if self.quick else "full"
        phases = {
            "A": self.phase_a,
            "G": lambda: self.phase_a(webhooks=False),
            "B": self.phase_b,
            "H": self.phase_h,
            "F": lambda: self.phase_b(local_only=True),
            "C": self.phase_c,
            "D": self.phase_d,
            "S": self.phase_s,
        }
        default = {"A", "B", "H", "C", "D", "E", "S", *(("F", "G") if self.args.diagnostics else ())}
        only = set(self.args.only.upper()) if self.args.only else default
        use_pg = self.args.database == "postgres" or (self.args.database == "auto" and postgres_available())
        self.out["machine"]["prefect_database"] = "postgresql" if use_pg else "sqlite"
        self.log(
            f"starting one Prefect server on {'PostgreSQL' if use_pg else 'SQLite'} (state in {self.tmp})"
        )
        with ExitStack() as stack:
            url = stack.enter_context(postgres(self.tmp / "postgres")) if use_pg else None
            server = stack.enter_context(prefect_server(self.tmp / "server", url))
            self.server = server
            self.api = server.api_url
            self.log(f"Prefect server up at {self.api}")
            memory = None
            # D measures CPU time per product, so it runs first, alone; then E (CPU-bound, 5,000 products)
            # runs in the background for the rest of the budget, beside the phases bound by rate limits.
            for key in ["D", "E", *(k for k in phases if k != "D")]:
                if key not in only:
                    continue
                if key == "E":
                    self.memory_deadline = BUDGET_S - 20
                    memory = self.start_phase_e(url)
                    continue
                try:
                    phases[key]()
                except Exception as exc:  # noqa: BLE001 - a broken phase is reported, the others still run
                    self.log(f"phase {key} crashed: {type(exc).__name__}: {exc}")
                    self.out["notes"].append(f"phase {key} crashed: {type(exc).__name__}: {exc}")
            if memory is not None:
                try:
                    self.finish_phase_e(memory)
                except Exception as exc:  # noqa: BLE001
                    self.log(f"phase E crashed: {type(exc).__name__}: {exc}")
                    self.out["notes"].append(f"phase E crashed: {type(exc).__name__}: {exc}")
        self.out["machine"]["loadavg_end"] = os.getloadavg()
        self.out["load_during_runs"] = self.load
        self.out["total_seconds"] = time.monotonic() - self.t0
        return self.out


def _routes_since(box: Any, t0: float) -> dict[str, list[float]]:
    """Seconds after ``t0`` at which each route of the sandbox was asked."""
    routes: dict[str, list[float]] = {}
    for r in list(box.requests):
        if r.t >= t0:
            routes.setdefault(r.route, []).append(round(r.t - t0, 3))
    return routes


def _polls_per_job(box: Any, poll_route: str, submit_route: str) -> float | None:
    routes = A.route_counts(box)
    submits = routes.get(submit_route, 0)
    return routes.get(poll_route, 0) / submits if submits else None


def _same_calls(a: dict[str, dict[str, int]] | None, b: dict[str, dict[str, int]] | None) -> str:
    if not a or not b:
        return ""
    diffs = []
    for p in sorted(set(a) | set(b)):
        for route in sorted(set(a.get(p, {})) | set(b.get(p, {}))):
            x, y = a.get(p, {}).get(route, 0), b.get(p, {}).get(route, 0)
            if x != y:
                diffs.append(f"{p}.{route} {x} vs {y}")
    return "same provider calls" if not diffs else "calls differ: " + ", ".join(diffs[:6])


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value)


def print_table(out: dict[str, Any]) -> None:
    rows = [("#", "figure", "measured", "target", "result")]
    for f in out["figures"]:
        result = {True: "PASS", False: "MISSED", None: "-"}[f["pass"]]
        rows.append((f["item"], f["figure"], str(f["measured"]), f["target"], result))
    widths = [min(80, max(len(r[i]) for r in rows)) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    print()
    print(line)
    for n, r in enumerate(rows):
        print("  ".join(str(c)[: widths[i]].ljust(widths[i]) for i, c in enumerate(r)))
        if n == 0:
            print(line)
    print(line)
    m = out["machine"]
    print(
        f"machine: {m.get('cpu_count')} CPUs ({m.get('cpu_model', m.get('processor'))}), "
        f"Python {m['python']}, Prefect {m['prefect']}; "
        f"load average start {m['loadavg_start'][0]:.2f}, end {m['loadavg_end'][0]:.2f}; "
        f"total {out['total_seconds']:.0f}s"
    )
    for note in out["notes"]:
        print("note:", note)


def figures_markdown(out: dict[str, Any], results_path: Path) -> str:
    m = out["machine"]
    shown_path = results_path.relative_to(REPO) if results_path.is_relative_to(REPO) else results_path
    lines = [
        f"Run of {out['started']} ({out['total_seconds']:.0f} s), `{shown_path}`: "
        f"{m.get('cpu_count')} CPUs ({m.get('cpu_model', m.get('processor'))}), "
        f"{m.get('mem_total_mb', '?')} MB RAM, "
        f"Python {m['python']}, Prefect {m['prefect']}, {m['platform']}. Load average "
        f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end (the machine is shared).",
        "",
        "| # | Figure | Measured | Target | Result |",
        "|---|---|---|---|---|",
    ]
    for f in out["figures"]:
        result = {True: "PASS", False: "**MISSED**", None: "-"}[f["pass"]]
        note = f" ({f['note']})" if f.get("note") else ""
        lines.append(f"| {f['item']} | {f['figure']}{note} | {f['measured']} | {f['target']} | {result} |")
    return "\n".join(lines)


def update_readme(out: dict[str, Any], results_path: Path) -> None:
    readme = REPO / "benchmarks" / "README.md"
    if not readme.exists():
        return
    text = readme.read_text()
    start, end = "<!-- figures:start -->", "<!-- figures:end -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + start + "\n" + figures_markdown(out, results_path) + "\n" + end + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of the harness")
    parser.add_argument(
        "--only",
        default="",
        help="phases to run, e.g. 'CD' (default: DEABHCS; diagnostics: F is "
        "ListingRVA without Prefect global limits, G ProdVisual polled)",
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="also the diagnostic runs: F, G and D "
        "with global limits off (they take CPU from E, which then may not reach 5,000 products)",
    )
    parser.add_argument(
        "--profile", nargs="*", default=[], help="phase run names to profile with pyinstrument"
    )
    parser.add_argument(
        "--no-global-limits",
        action="store_true",
        help="diagnosis: LISTINGFLOW_USE_GLOBAL_LIMITS=false in phases A-C (process-local pacing only)",
    )
    parser.add_argument(
        "--database",
        choices=["auto", "postgres", "sqlite"],
        default="auto",
        help="the Prefect server's database: PostgreSQL (as deployed; auto when the machine has "
        "its server binaries) or SQLite (a local dev server)",
    )
    parser.add_argument(
        "--c-configs",
        default=C_CONFIGS_DEFAULT,
        help="phase C configurations, time scale and "
        f"products, e.g. 'x10:60,x2:20,x2:60' (default {C_CONFIGS_DEFAULT})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary state, archives and logs")
    parser.add_argument(
        "--output", default=None, help="results file (default benchmarks/results/<date>.json)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    bench = Bench(args)
    try:
        out = bench.run()
    finally:
        if not args.keep and not args.profile:
            import shutil

            shutil.rmtree(bench.tmp, ignore_errors=True)
    print_table(out)
    full = (
        not args.quick and not args.only and not args.no_global_limits and args.c_configs == C_CONFIGS_DEFAULT
    )
    # a partial run never overwrites the day's full results
    suffix = "" if full else "-quick" if args.quick else "-partial"
    path = Path(args.output) if args.output else RESULTS / f"{dt.date.today().isoformat()}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"results: {path}")
    if full and not args.output:
        update_readme(out, path)
        print("benchmarks/README.md: latest figures updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
