"""Stopping ``listingflow run`` (Ctrl-C, SIGTERM) and sandbox runs that never share state with others.

The runs here are real CLI processes. The sandboxes of the stop tests live in this test process, so
they outlive the interrupted run and the rerun sees the same jobs; their ledgers are the truth about
what was paid.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.flows.helpers import (
    EXAMPLE,
    duplicate_payments,
    net_charged,
    subprocess_env,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[2]
FULL_RUN = {"listingrva": 60, "pixii": 144, "prodvisual": 7}
"""Credits one complete run of the example catalog pays (tests/flows/test_reruns.py)."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "listingflow.cli", "run", *args]


def _stopped_within(proc: subprocess.Popen[str], seconds: float) -> tuple[int, float]:
    started = time.monotonic()
    try:
        proc.wait(timeout=seconds + 20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, time.monotonic() - started


def _run_manifest(archive: Path) -> dict[str, Any]:
    [path] = archive.glob("runs/*/manifest.json")
    return json.loads(path.read_text())


async def test_ctrl_c_with_jobs_in_flight_stops_within_10s_and_the_rerun_resumes_them(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    from listingflow.server import running_server, stop_server

    rva = sandboxes["listingrva"]
    rva.reconfigure(job_seconds=5.0)  # copy jobs are certainly running when Ctrl-C comes
    archive = lf_env["archive"]
    # no PREFECT_API_URL: the CLI starts the local background Prefect server, as on a person's machine
    env = {k: v for k, v in subprocess_env().items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(lf_env["tmp"] / "prefect-home")
    proc = subprocess.Popen(
        _cli(EXAMPLE, "--archive", str(archive)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=ROOT,
    )
    try:
        await wait_for(lambda: len(rva.jobs) >= 2, 180, "ListingRVA jobs to be submitted")
        assert any(rva.status_of(j) != "completed" for j in rva.jobs.values()), "Ctrl-C must land mid-job"
        server = running_server(lf_env["home"])
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground process group
        code, took = await asyncio.to_thread(_stopped_within, proc, 10)
        out = proc.stdout.read() if proc.stdout else ""
        assert code == 130, out[-3000:]
        assert took < 10, f"took {took:.1f}s to stop"
        assert "Traceback" not in out, out[-3000:]
        [line] = [ln for ln in out.splitlines() if ln.startswith("run interrupted (SIGINT)")]
        assert "jobs in flight kept" in line and "manifest.json" in line, line
        # the end balances are read through the stop: the summary still tells what the run was charged
        assert "balance not readable" not in out, out[-3000:]
        assert server is not None and running_server(lf_env["home"]) == server, "Ctrl-C reached the server"

        manifest = _run_manifest(archive)
        assert (manifest["status"], manifest["interrupted_by"]) == ("interrupted", "SIGINT")
        # the 5 s copy jobs, and any other job then running (Pixii's Scale starts beside copy): each is
        # a real job at its provider, kept for the rerun
        in_flight = manifest["in_flight"]
        assert in_flight and all(j["job_id"] in sandboxes[j["provider"]].jobs for j in in_flight), in_flight
        assert any(j["provider"] == "listingrva" for j in in_flight), in_flight
        assert {p["status"] for p in manifest["products"]} <= {"interrupted", "complete"}
        paid_before = dict(net_charged(sandboxes))

        rva.reconfigure(job_seconds=0.3)
        rerun = await asyncio.to_thread(
            subprocess.run,
            _cli(EXAMPLE, "--archive", str(archive)),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        out = rerun.stdout + rerun.stderr
        assert rerun.returncode == 0, out[-3000:]
        assert "6 products: 6 complete" in out and "starting a local Prefect server" not in out, out[-3000:]
    finally:
        stop_server(lf_env["home"])
    assert running_server(lf_env["home"]) is None
    assert duplicate_payments(sandboxes) == []
    # the jobs in flight were resumed, not paid again: the ledgers hold exactly one full run
    assert net_charged(sandboxes) == FULL_RUN, f"the interrupted run had paid {paid_before}"


async def _signal_run(
    pixii: Any, archive: Path, signals: list[signal.Signals]
) -> tuple[int | None, float, str]:
    seen = len(pixii.jobs)
    proc = subprocess.Popen(
        _cli(EXAMPLE, "--archive", str(archive)),
        env=subprocess_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        await wait_for(lambda s=seen: len(pixii.jobs) > s, 120, "a Pixii job to be submitted")
        for sig in signals:
            proc.send_signal(sig)
            await asyncio.sleep(0.2)
        code, took = await asyncio.to_thread(_stopped_within, proc, 10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return code, took, proc.stdout.read() if proc.stdout else ""


async def test_sigterm_stops_with_143(sandboxes: dict[str, Any], lf_env: dict[str, Any]) -> None:
    sandboxes["pixii"].reconfigure(job_seconds=5.0)
    archive = lf_env["tmp"] / "archive-term"
    code, took, out = await _signal_run(sandboxes["pixii"], archive, [signal.SIGTERM])
    assert code == 143 and took < 10, out[-3000:]
    assert _run_manifest(archive)["interrupted_by"] == "SIGTERM"
    assert "run interrupted (SIGTERM)" in out
    assert not (lf_env["home"] / "server.json").exists()  # PREFECT_API_URL wins: no local server


async def test_a_second_signal_exits_at_once(sandboxes: dict[str, Any], lf_env: dict[str, Any]) -> None:
    sandboxes["pixii"].reconfigure(job_seconds=5.0)
    code, took, out = await _signal_run(
        sandboxes["pixii"], lf_env["tmp"] / "archive-twice", [signal.SIGINT, signal.SIGINT]
    )
    assert took < 3, out[-3000:]
    if code == -signal.SIGINT:
        # The first stop had already wound the run down and Python was finalizing (its signal handlers
        # back to the default) when the second came: killed by SIGINT, which a shell reports as 130.
        assert "run interrupted (SIGINT)" in out, out[-3000:]
    else:
        assert code == 130 and "exited at once" in out, out[-3000:]


def _sandbox_run(catalog: Path, archive: Path, job_seconds: float = 0.2) -> subprocess.Popen[str]:
    env = subprocess_env()
    env.pop("LISTINGFLOW_RATE_LIMITS", None)  # the sandboxes' documented limits, as in the demo
    return subprocess.Popen(
        _cli(str(catalog), "--sandbox", "--sandbox-job-seconds", str(job_seconds), "--archive", str(archive)),
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out


async def test_sandbox_runs_never_reuse_another_sandboxs_jobs(lf_env: dict[str, Any]) -> None:
    """``make demo`` into a new archive, and after an interrupted demo: each run's sandboxes are new,
    so jobs cached by an earlier run's (now gone) sandboxes must not be resumed."""
    catalog = lf_env["tmp"] / "two.csv"
    rows = Path(EXAMPLE).read_text().splitlines()
    catalog.write_text("\n".join([rows[0], rows[2], rows[3]]) + "\n")
    for n in range(2):
        code, out = await asyncio.to_thread(_finish, _sandbox_run(catalog, lf_env["tmp"] / f"demo-{n}"))
        assert code == 0, out[-3000:]
        assert "2 products: 2 complete" in out, out[-3000:]

    interrupted = _sandbox_run(catalog, lf_env["tmp"] / "demo-2", job_seconds=5)
    sandbox_state = lf_env["home"] / "sandboxes"

    def submitted() -> bool:  # a submission's job reference is persisted the moment it returns
        return any(sandbox_state.glob("*/results/submit-*"))

    try:
        await wait_for(submitted, 120, "the interrupted run to submit")
        interrupted.send_signal(signal.SIGINT)
        code, out = await asyncio.to_thread(_finish, interrupted, 30)
    finally:
        if interrupted.poll() is None:
            os.killpg(interrupted.pid, signal.SIGKILL)
    assert code == 130, out[-3000:]
    code, out = await asyncio.to_thread(_finish, _sandbox_run(catalog, lf_env["tmp"] / "demo-2"))
    assert code == 0, out[-3000:]
    assert "2 products: 2 complete" in out, out[-3000:]
    # nothing of the sandbox runs stays behind, and nothing reached the real runs' cache
    assert not list(sandbox_state.glob("*/results"))
    assert not (lf_env["home"] / "results").exists()


def test_sandbox_instance_keeps_cache_keys_and_local_state_apart(tmp_path: Path) -> None:
    from flows.settings import Settings

    real = Settings(home=tmp_path)
    boxed = Settings(home=tmp_path, sandbox_instance="abc123")
    other = Settings(home=tmp_path, sandbox_instance="def456")
    assert real.cache_version == "1"
    assert len({real.cache_version, boxed.cache_version, other.cache_version}) == 3
    for attr in ("results_path", "locks_path", "spool_path"):
        paths = {getattr(s, attr) for s in (real, boxed, other)}
        assert len(paths) == 3, attr
        assert getattr(boxed, attr).is_relative_to(tmp_path.resolve() / "sandboxes" / "abc123")
    assert boxed.state_dir == real.state_dir  # one Prefect database for both
