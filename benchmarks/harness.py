"""Benchmark plumbing: one Prefect server, sandboxes per phase, runs in fresh subprocesses.

The sandboxes run in this (the orchestrating) process, on loopback threads; every measured run --
listingflow or the asyncio baseline -- runs in its own subprocess, so its wall time and peak RSS are
its own and it never shares a GIL with a sandbox. The orchestrator reads the sandboxes' records
(requests, charges, jobs) directly after each run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from listingflow.server import prefect_server_args
from providers.serving import free_port

REPO = Path(__file__).resolve().parents[1]
PROVIDERS = ("listingrva", "prodvisual", "pixii")


def postgres_bindir() -> Path | None:
    """PostgreSQL's server binaries: on PATH, else the newest Debian/Ubuntu install
    (``/usr/lib/postgresql/<version>/bin``, which the ``postgresql`` package does not put on PATH)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    installs = [
        p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if (p.parent / "postgres").exists()
    ]
    return max(installs, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0, default=None)


def postgres_available() -> bool:
    return postgres_bindir() is not None


def _cluster_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as ``postgres`` (created by the Debian
    package), else as ``nobody``."""
    if os.geteuid() != 0:
        return []
    import pwd

    # runuser lives in sbin, which a minimal PATH (cron, `env -i`) leaves out
    runuser = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)), "runuser"
    )
    try:
        pwd.getpwnam("postgres")
        return [runuser, "-u", "postgres", "--"]
    except KeyError:
        return [runuser, "-u", "nobody", "--"]


@contextmanager
def postgres(home: Path, *, nice: int = 0) -> Iterator[str]:
    """A throwaway PostgreSQL cluster under ``home`` (the machine's own server binaries); yields the
    SQLAlchemy URL for Prefect. As root, the cluster runs as ``postgres`` (or ``nobody``). ``nice``
    lowers the CPU priority of the cluster and every backend it forks."""
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "postgres.log").open("w")
    # its own directory, outside the benchmark's private (0700) temporary tree
    cluster = Path(tempfile.mkdtemp(prefix="listingflow-bench-pg-"))
    data, sock = cluster / "data", cluster / "sock"
    sock.mkdir()
    port = free_port()
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL's server binaries (initdb, postgres) are not installed")
    as_user = _cluster_user()
    if as_user:
        subprocess.run(["chown", "-R", as_user[2], str(cluster)], check=True)
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "prefect"],
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc = subprocess.Popen(
        [
            *as_user,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(sock),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_niced(nice),
    )
    try:
        for _ in range(100):
            ready = subprocess.run(
                [
                    *as_user,
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "prefect",
                    "prefect",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            if ready.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"PostgreSQL did not start; see {home / 'postgres.log'}")
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(cluster, ignore_errors=True)


def _niced(nice: int) -> Any:
    """A ``preexec_fn`` lowering a child's CPU priority: the memory run shares the machine with the
    rate-bound phases, and must not delay their requests. At the lowest (19) the child is also
    scheduled ``SCHED_IDLE`` (inherited by what it starts): a timed phase's process that wakes takes
    the CPU from it at once instead of waiting out its time slice."""
    if not nice:
        return None

    def lower() -> None:
        os.nice(nice)
        if nice >= 19 and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    return lower


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def prefect_server(home: Path, database_url: str | None = None, *, nice: int = 0) -> Iterator[PrefectServer]:
    """A fresh Prefect server (uvicorn, on ``database_url`` or SQLite under ``home``) for the whole
    benchmark: never a configured one, so results neither depend on nor pollute the operator's server.
    Its output goes to ``home/server.log``; its CPU time is readable per phase (``cpu_seconds``)."""
    import httpx

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(
        {
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url
            or f"sqlite+aiosqlite:///{(home / 'prefect.db').resolve()}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "0",
            "PREFECT_HOME": str(home / "prefect-home"),
            "PREFECT__SERVER_FINAL": "1",
        }
    )

    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            *prefect_server_args(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_niced(nice),
    )
    server = PrefectServer(api_url=f"http://127.0.0.1:{port}/api", pid=proc.pid)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Prefect server exited with {proc.returncode}; see {home / 'server.log'}")
            try:
                if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Prefect server did not start within 180 s")
            time.sleep(0.5)
        yield server
    finally:
        _stop(proc)
        log.close()


class PrefectServer:
    def __init__(self, api_url: str, pid: int) -> None:
        self.api_url, self.pid = api_url, pid

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None


def provider_classes() -> dict[str, Any]:
    from providers.registry import load_providers

    registry = load_providers()
    return {n: registry.get(n) for n in PROVIDERS}


@contextmanager
def sandboxes(config_updates: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The three sandboxes on loopback; sets ``<PROVIDER>_BASE_URL``/``_API_KEY`` in os.environ (which the
    subprocesses inherit) and restores the environment afterwards."""
    from listingflow.local import running_sandboxes

    with running_sandboxes(provider_classes(), config_updates=config_updates) as boxes:
        yield boxes


@contextmanager
def sandbox_process(
    config_updates: dict[str, dict[str, Any]], workdir: Path, *, nice: int = 0
) -> Iterator[dict[str, Any]]:
    """The three sandboxes in their own process (``benchmarks/sandbox_process.py``: why). Yields
    ``{"env": ...}``, the variables that point a run at them; ``paid`` is added once they stopped."""
    workdir.mkdir(parents=True, exist_ok=True)
    config, out = workdir / "sandboxes-config.json", workdir / "sandboxes.json"
    config.write_text(json.dumps(config_updates))
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sandbox_process", str(config), str(out)],
        stdin=subprocess.PIPE,
        env=env,
        cwd=str(workdir),
        preexec_fn=_niced(nice),
    )
    info: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sandbox process did not start")
            time.sleep(0.05)
        time.sleep(0.05)  # the file is written in one call; read it once it is complete
        info.update(json.loads(out.read_text()))
        yield info
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
            info.update(json.loads(out.read_text()))
        except (subprocess.TimeoutExpired, OSError, ValueError):
            proc.kill()


class RemoteBox:
    """A sandbox of a ``sandbox_process``, read through its ``/_sandbox/records`` endpoint: the
    ``requests`` and ``charges`` the analysis reads, as of the last ``refresh``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[Any] = []
        self.charges: list[Any] = []

    def refresh(self) -> RemoteBox:
        import httpx

        from providers.sandbox.core import ChargeRecord, RequestRecord

        records = httpx.get(f"{self.url}/_sandbox/records", timeout=60).json()
        self.requests = [RequestRecord.model_validate(r) for r in records["requests"]]
        self.charges = [ChargeRecord.model_validate(c) for c in records["charges"]]
        return self


def remote_boxes(info: dict[str, Any]) -> dict[str, RemoteBox]:
    """The sandboxes of a ``sandbox_process`` (its ``info``), to ``refresh`` after a run."""
    return {p: RemoteBox(url) for p, url in info["urls"].items()}


def base_env(api_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "ERROR",
            "PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        }
    )
    return env


def limits_env(limits: dict[str, dict[str, tuple[int, float]]]) -> dict[str, str]:
    overrides = {
        p: {g: {"requests": n, "per_seconds": w} for g, (n, w) in groups.items()}
        for p, groups in limits.items()
    }
    return {"LISTINGFLOW_RATE_LIMITS": json.dumps(overrides)}


def run_subprocess(
    module: str, spec: dict[str, Any], env: dict[str, str], *, timeout: float, workdir: Path, nice: int = 0
) -> dict[str, Any]:
    """Run ``python -m module spec.json out.json``; returns the JSON it wrote plus ``elapsed`` (process
    wall time), ``returncode`` and ``timed_out``."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"{spec.get('name', 'run')}-spec.json"
    out_path = workdir / f"{spec.get('name', 'run')}-out.json"
    out_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec))
    log_path = workdir / f"{spec.get('name', 'run')}.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, str(spec_path), str(out_path)],
            env=env,
            cwd=str(REPO),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_niced(nice),
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
    result: dict[str, Any] = {}
    if out_path.exists():
        try:
            result = json.loads(out_path.read_text())
        except ValueError:
            result = {}
    result.update(
        elapsed=time.monotonic() - started, returncode=proc.returncode, timed_out=timed_out, log=str(log_path)
    )
    if proc.returncode != 0 and not timed_out:
        tail = log_path.read_text(errors="replace")[-3000:]
        result["error_tail"] = tail
    return result


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
