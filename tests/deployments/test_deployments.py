"""The deployment runbook, executed on one machine.

A real ``prefect server start`` (SQLite in a temp dir, random port) per module; ``listingflow
bootstrap`` (run twice: the second run changes nothing); ``prefect deploy --all`` from the repository's
``prefect.yaml``; process workers started with ``prefect worker start`` in a directory outside the
checkout and WITHOUT provider keys in their environment (the pull steps must find the checkout and
load the keys from the Secret blocks); runs triggered with ``prefect deployment run ... --param``
or through the API. The provider sandboxes run in this test process; their records are the truth
for limits and charges.

These tests do not use the session ``prefect_server`` harness: PREFECT_API_URL points at this
module's server only inside each test (``temporary_settings``), and every process started here is
killed (with its descendants) in fixture teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from providers.serving import free_port
from tests.conftest import FAST_LIMITS, sandbox_updates

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
POOL = "listingflow"
ON_DEMAND = "listingflow-catalog/catalog-on-demand"
EXAMPLE = REPO / "examples" / "catalog.csv"
SERVER_START_TIMEOUT = 180
RUN_TIMEOUT = 420


# --- processes --------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def _descendants(pid: int) -> list[int]:
    children = _children_map()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Spawned:
    """A subprocess in its own process group, output to a log file; ``stop`` kills it and every
    descendant (flow-run processes of a worker run in process groups of their own)."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(self.output().splitlines()[-lines:])

    def stop(self) -> None:
        descendants = _descendants(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._log.close()


def _clean_env() -> dict[str, str]:
    """This process's environment without any Prefect, listingflow or provider settings."""
    prefixes = ("PREFECT_", *_listingflow_prefixes())
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _listingflow_prefixes() -> tuple[str, ...]:
    from deployments.credentials import installed_providers

    return (
        "LISTINGFLOW_",
        *(
            p.settings_class.model_config.get("env_prefix", f"{n.upper()}_")
            for n, p in installed_providers().items()
        ),
    )


def _key_vars() -> list[str]:
    from deployments.credentials import api_key_env_var, installed_providers

    return [api_key_env_var(p) for p in installed_providers().values()]


@dataclass
class Server:
    url: str
    root: Path
    process: Spawned

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for CLI and worker subprocesses: this server, the current listingflow and
        sandbox settings, and no provider keys (runs must get them from the Secret blocks)."""
        env = _clean_env()
        env.update({k: v for k, v in os.environ.items() if k.startswith(_listingflow_prefixes())})
        for var in _key_vars():
            env.pop(var, None)
        env.update(
            {
                "PREFECT_API_URL": self.url,
                "PREFECT_HOME": str(self.root / "client-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 240, **extra: str) -> subprocess.CompletedProcess[str]:
        env = self.client_env(**extra)
        env.setdefault("COLUMNS", "250")
        return subprocess.run(
            [*PREFECT, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )


@contextlib.contextmanager
def running_server(root: Path, database_url: str | None = None, **settings: str) -> Iterator[Server]:
    """``prefect server start`` on ``database_url`` (SQLite under ``root`` by default, or PostgreSQL), a
    free port and ``settings``; yields once it is healthy, stops it on exit."""
    database_url = database_url or f"sqlite+aiosqlite:///{root / 'prefect.db'}"
    port = free_port()
    env = _clean_env()
    env.update(
        {
            "PREFECT_HOME": str(root / "home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            **settings,
        }
    )
    process = Spawned(
        "prefect server",
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=root,
        log=root / "server.log",
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.proc.poll() is not None:
                pytest.fail("prefect server exited\n" + process.tail())
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT}s\n" + process.tail())
            time.sleep(0.5)
        yield Server(url=url, root=root, process=process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # no scheduled runs of catalog-nightly may sneak into the tests' runs (tests/deployments/test_schedules.py
    # runs the scheduler)
    with running_server(
        tmp_path_factory.mktemp("prefect-server"), PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false"
    ) as started:
        yield started


@pytest.fixture(autouse=True)
def this_server(server: Server) -> Iterator[None]:
    """Point this process's Prefect client at the module's server for the duration of one test."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.conftest import drain_prefect_workers

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        yield
        drain_prefect_workers()  # before this module's server goes: later tests use the session server


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[Spawned] = []

    def start(name: str, args: list[str], *, env: dict[str, str], cwd: Path | None = None) -> Spawned:
        proc = Spawned(name, args, env=env, cwd=cwd or tmp_path, log=tmp_path / f"{name}.log")
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


async def start_workers(
    spawn: Any, server: Server, names: list[str], tmp_path: Path, env: dict[str, dict[str, str]] | None = None
) -> list[Spawned]:
    """``prefect worker start --limit 1`` per name, each in a directory outside the checkout and
    without provider keys, with ``env[name]`` added to its environment; returns once every worker
    polls the pool."""
    workers = []
    for name in names:
        workdir = tmp_path / f"{name}-cwd"
        workdir.mkdir()
        workers.append(
            spawn(
                name,
                [*PREFECT, "worker", "start", "--pool", POOL, "--name", name, "--limit", "1"],
                env=server.client_env(**(env or {}).get(name, {})),
                cwd=workdir,
            )
        )
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not all(f"Worker '{w.name}' started" in w.output() for w in workers):
        for w in workers:
            if w.proc.poll() is not None:
                pytest.fail(f"worker {w.name} exited\n" + w.tail())
        if time.monotonic() > deadline:
            pytest.fail("workers did not start\n" + "\n".join(w.tail() for w in workers))
        await asyncio.sleep(0.5)
    return workers


# --- helpers ------------------------------------------------------------------------------------------


def write_catalog(path: Path, asins: list[str]) -> Path:
    lines = EXAMPLE.read_text().splitlines()
    rows = [line for line in lines[1:] if line.split(",", 1)[0] in asins]
    assert len(rows) == len(asins)
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    return path


async def bootstrap_and_deploy(server: Server) -> tuple[list[str], list[str]]:
    """The runbook's steps 2 and 3: bootstrap twice (returns both reports), then deploy."""
    from deployments.bootstrap import bootstrap
    from flows.settings import reset_settings

    reset_settings()
    first = await bootstrap(work_pool=POOL)
    second = await bootstrap(work_pool=POOL)
    deployed = await asyncio.to_thread(server.cli, "--no-prompt", "deploy", "--all")
    output = deployed.stdout[-3000:] + deployed.stderr[-3000:]
    if deployed.returncode and "workers/filter" in output and "valid integer" in output:
        pytest.fail(
            "`prefect deploy` hit prefect 3.8.8's null offset/limit on fastapi>=0.151: pin fastapi<0.151\n"
            + output
        )
    assert deployed.returncode == 0, output
    return first, second


async def server_state(prefix: str) -> dict[str, Any]:
    """What the bootstrap manages, with update timestamps."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        pool = await client.read_work_pool(POOL)
        limits = await client.read_global_concurrency_limits(limit=200, offset=0)
        blocks = await client.read_block_documents(offset=0, limit=200, include_secrets=False)
    return {
        "pool": (pool.type, pool.updated),
        "limits": {
            g.name: (g.limit, g.slot_decay_per_second, g.active, g.updated)
            for g in limits
            if g.name.startswith(prefix)
        },
        "blocks": {
            (b.block_type.slug if b.block_type else b.block_type_name, b.name): b.updated
            for b in blocks
            if not b.is_anonymous
        },
    }


async def wait_final(run_ids: list[UUID], workers: list[Spawned], timeout: float = RUN_TIMEOUT) -> list[Any]:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = [await client.read_flow_run(i) for i in run_ids]
            if all(r.state is not None and r.state.is_final() for r in runs):
                return runs
            if time.monotonic() > deadline:
                states = [(str(r.id), r.state_name) for r in runs]
                pytest.fail(
                    f"runs not finished after {timeout}s: {states}\n" + "\n".join(w.tail() for w in workers)
                )
            for w in workers:
                if w.proc.poll() is not None:
                    pytest.fail(f"worker {w.name} exited\n" + w.tail())
            await asyncio.sleep(1.0)


async def run_logs(run_id: UUID) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200, offset=0
        )
    return [log.message for log in logs]


async def cost_summary_artifacts(run_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["cost-summary"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            ),
        )


async def all_artifacts(run_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )


async def trigger(server: Server, deployment: str, *params: str) -> UUID:
    """``prefect deployment run DEPLOYMENT --param ...``, as in the runbook; returns the run id."""
    args = ["deployment", "run", deployment]
    for param in params:
        args += ["--param", param]
    done = await asyncio.to_thread(server.cli, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return UUID(re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1))


def _rows(artifact: Any) -> list[dict[str, Any]]:
    """The table artifact's rows (it is stored column by column)."""
    columns = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def sandbox_keys(boxes: dict[str, Any]) -> list[str]:
    from providers.registry import load_providers

    registry = load_providers()
    return [registry.get(n).sandbox_key for n in boxes]


@contextlib.contextmanager
def sandboxes_with(
    limits: dict[str, dict[str, tuple[int, float]]], job_seconds: float
) -> Iterator[dict[str, Any]]:
    """The three sandboxes in this process with ``limits``; listingflow settings to match."""
    from flows.settings import reset_settings
    from listingflow.local import running_sandboxes
    from providers.registry import load_providers

    updates = sandbox_updates()
    for name, groups in limits.items():
        updates[name]["rate_limits"] = dict(groups)
    overrides = {
        p: {g: {"requests": n, "per_seconds": w} for g, (n, w) in groups.items()}
        for p, groups in limits.items()
    }
    saved = os.environ.get("LISTINGFLOW_RATE_LIMITS")
    os.environ["LISTINGFLOW_RATE_LIMITS"] = json.dumps(overrides)
    try:
        registry = load_providers()
        with running_sandboxes(
            dict(registry.providers), job_seconds=job_seconds, config_updates=updates
        ) as boxes:
            reset_settings()
            yield boxes
    finally:
        if saved is None:
            os.environ.pop("LISTINGFLOW_RATE_LIMITS", None)
        else:
            os.environ["LISTINGFLOW_RATE_LIMITS"] = saved
        reset_settings()


def assert_limits_held(
    boxes: dict[str, Any],
    limits: dict[str, dict[str, tuple[int, float]]],
    inflight: dict[str, int] | None = None,
) -> None:
    for name, box in boxes.items():
        for group, (limit, window) in limits[name].items():
            seen = box.max_requests_in_window(group, window)
            assert seen <= limit, f"{name} {group}: {seen} requests in {window}s, limit {limit}"
        assert not [r for r in box.requests if r.status == 429], f"{name} answered 429"
        assert not [r for r in box.requests if r.status == 401], f"{name} answered 401 (credential missing)"
        if inflight and name in inflight:
            assert box.max_jobs_in_flight() <= inflight[name], (name, box.max_jobs_in_flight())


# --- the runbook ----------------------------------------------------------------------------------------


async def test_runbook_bootstrap_deploy_worker_run(
    server: Server, spawn: Any, lf_env: dict[str, Any], tmp_path: Path
) -> None:
    """Bootstrap (idempotent), deploy from prefect.yaml, a worker, a run with --param: the archive, the
    manifests and the cost-summary artifact are there, credentials came from Secret blocks and show
    nowhere."""
    from prefect.client.orchestration import get_client

    with sandboxes_with(FAST_LIMITS, job_seconds=0.3) as boxes:
        first, second = await bootstrap_and_deploy(server)
        before = await server_state(lf_env["prefix"])
        # the second bootstrap reported nothing to do, and indeed changed nothing
        assert not [line for line in second if re.search(r": (created|updated)\b", line)], second
        assert await server_state(lf_env["prefix"]) == before
        assert [line for line in first if line.startswith(f"concurrency limit {lf_env['prefix']}-")]
        assert all(
            ": created" in line for line in first if line.startswith(f"concurrency limit {lf_env['prefix']}")
        )
        assert before["pool"][0] == "process"
        assert set(before["limits"]) == {
            f"{lf_env['prefix']}-{p}-{g}" for p, groups in FAST_LIMITS.items() for g in [*groups, "inflight"]
        }
        # 20 slots for "20 requests per 2 s": each request holds one for the window (no decay)
        assert before["limits"][f"{lf_env['prefix']}-pixii-submit"][:2] == (20, 0.0)
        assert any("pixii-submit: created (20 requests per 2 s window)" in line for line in first), first
        assert {("secret", f"{p}-api-key") for p in boxes} <= set(before["blocks"])
        keys = sandbox_keys(boxes)
        assert not [line for line in first + second if any(k in line for k in keys)], "a key was printed"

        # prefect.yaml as deployed: schedule with timezone, schema enforcement, concurrency limit
        async with get_client() as client:
            nightly = await client.read_deployment_by_name("listingflow-catalog/catalog-nightly")
            on_demand = await client.read_deployment_by_name(ON_DEMAND)
            rerun = await client.read_deployment_by_name("listingflow-catalog/catalog-rerun")
        schedule = nightly.schedules[0].schedule
        assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "Europe/Berlin")
        assert not on_demand.schedules and not rerun.schedules
        assert all(d.enforce_parameter_schema for d in (nightly, on_demand, rerun))
        assert all(d.entrypoint == "flows/catalog_flow.py:catalog_flow" for d in (nightly, on_demand, rerun))
        assert on_demand.global_concurrency_limit.limit == 2
        assert rerun.parameters["rerun_failed_of"]
        assert not any(
            k in json.dumps(d.model_dump(mode="json")) for d in (nightly, on_demand, rerun) for k in keys
        )

        # a bad value is refused before a run exists, naming the field
        refused = await asyncio.to_thread(
            server.cli, "deployment", "run", ON_DEMAND, "--param", 'image_options={"size": 999}'
        )
        assert refused.returncode != 0
        assert "image_options.size" in refused.stdout + refused.stderr, refused.stdout + refused.stderr

        (worker,) = await start_workers(spawn, server, ["worker-a"], tmp_path)
        catalog = write_catalog(tmp_path / "catalog.csv", ["B0CHX1W1XY", "B0BQRG7K5N"])
        archive = tmp_path / "deployed-archive"
        boxes["pixii"].reconfigure(fail_asins=["B0BQRG7K5N"])  # its A+ job fails at the provider
        started = time.monotonic()
        run_id = await trigger(
            server, ON_DEMAND, f"catalog={catalog}", f"archive={archive}", 'price_per_credit={"pixii": 0.05}'
        )
        (run,) = await wait_final([run_id], [worker])
        elapsed = time.monotonic() - started
        assert run.state.is_failed(), f"{run.state}\n{worker.tail()}"
        assert "B0BQRG7K5N" in run.state.message and "1 complete" in run.state.message, run.state.message

        # the run manifest names the failed product; the cost-summary artifact, read through the API,
        # equals the sandboxes' own ledgers (the failed job's refund included)
        run_manifest = json.loads((archive / "runs" / str(run_id) / "manifest.json").read_text())
        assert run_manifest["run_id"] == str(run_id)
        assert {p["key"]: p["status"] for p in run_manifest["products"]} == {
            "US/B0CHX1W1XY": "complete",
            "US/B0BQRG7K5N": "partial",
        }
        (artifact,) = await cost_summary_artifacts(run_id)
        assert artifact.type == "table"
        rows = _rows(artifact)
        by_provider = {r["provider"]: r for r in rows if r["scope"] == "provider"}
        assert {p: r["net"] for p, r in by_provider.items()} == {n: b.net_credits() for n, b in boxes.items()}
        assert all(r["net"] > 0 for r in by_provider.values())
        assert by_provider["pixii"]["refunded"] > 0
        assert next(r for r in rows if r["scope"] == "total")["net"] == sum(
            b.net_credits() for b in boxes.values()
        )
        assert by_provider["pixii"]["money"] != "-"

        # the runbook's rerun: only the failed product runs, and only its failed step is paid again
        boxes["pixii"].reconfigure(fail_asins=[])
        paid_before = {n: len(b.paid_jobs()) for n, b in boxes.items()}
        net_before = {n: b.net_credits() for n, b in boxes.items()}
        rerun_id = await trigger(
            server, "listingflow-catalog/catalog-rerun", f"rerun_failed_of={run_id}", f"archive={archive}"
        )
        (rerun_run,) = await wait_final([rerun_id], [worker])
        assert rerun_run.state.is_completed(), f"{rerun_run.state}\n{worker.tail()}"
        assert rerun_run.state.message == "1 products: 1 complete"
        assert {n: len(b.paid_jobs()) - paid_before[n] for n, b in boxes.items()} == {
            "listingrva": 0,
            "prodvisual": 0,
            "pixii": 1,
        }
        (rerun_artifact,) = await cost_summary_artifacts(rerun_id)
        rerun_rows = {r["provider"]: r for r in _rows(rerun_artifact) if r["scope"] == "provider"}
        assert {p: r["net"] for p, r in rerun_rows.items()} == {
            n: b.net_credits() - net_before[n] for n, b in boxes.items()
        }
        assert rerun_rows["listingrva"]["reused"] >= 1 and rerun_rows["prodvisual"]["reused"] >= 1
        # the deployment's catalog and steps equal the flow's defaults: the failed run's are kept, and said
        kept = [m for m in await run_logs(rerun_id) if m.startswith(f"rerun of {run_id}: kept ")]
        assert kept and f"catalog={catalog}" in kept[0] and 'price_per_credit={"pixii": 0.05}' in kept[0], (
            kept
        )
        assert rerun_rows["pixii"]["money"] != "no price"
        assert_limits_held(boxes, FAST_LIMITS)

    # the archive: every step's outputs and the product manifests, both products complete now
    files = sorted(str(p.relative_to(archive)) for p in archive.rglob("*") if p.is_file())
    for asin in ("B0CHX1W1XY", "B0BQRG7K5N"):
        assert f"US/{asin}/copy/listingrva-copy.json" in files
        assert any(f.startswith(f"US/{asin}/images/prodvisual-") and f.endswith(".png") for f in files)
        assert any(f.startswith(f"US/{asin}/aplus/pixii-") and f.endswith(".png") for f in files)
        manifest = json.loads((archive / "US" / asin / "manifest.json").read_text())
        statuses = {s: v["status"] for s, v in manifest["steps"].items()}
        assert all(statuses.get(s) in ("done", "reused") for s in ("copy", "images", "aplus")), statuses
    assert {f.split("/")[1] for f in files if "/scale/" in f} == {"B0CHX1W2AA", "B0CHX1W3BB"}
    rerun_manifest = json.loads((archive / "runs" / str(rerun_id) / "manifest.json").read_text())
    assert {p["key"]: p["status"] for p in rerun_manifest["products"]} == {"US/B0BQRG7K5N": "complete"}

    # credentials: the worker had none, the runs got them from the Secret blocks, and they show nowhere
    assert not [v for v in _key_vars() if v in server.client_env()]
    logs = [*await run_logs(run_id), *await run_logs(rerun_id)]
    sources = [m for m in logs if m.startswith("provider credentials: ")]
    assert sources, logs[:20]
    assert all(f"{p}: secret block {p}-api-key" in line for p in boxes for line in sources), sources
    shown = [
        json.dumps(run.parameters),
        json.dumps(rerun_run.parameters),
        *logs,
        worker.output(),
        *[json.dumps(a.data) for r in (run_id, rerun_id) for a in await all_artifacts(r)],
        *[p.read_text(errors="replace") for p in archive.rglob("*.json")],
    ]
    leaked = [k for k in keys if any(k in text for text in shown)]
    assert not leaked, "credential visible in parameters, logs, artifacts or archive"
    print(f"\nfirst run on the worker: {elapsed:.1f}s")


# --- scale-out on one machine -------------------------------------------------------------------------

SCALE_LIMITS: dict[str, dict[str, tuple[int, float]]] = {
    "pixii": {"submit": (4, 2.0)},
    "listingrva": {"ai": (4, 2.0), "products": (6, 2.0), "global": (8, 2.0)},
    "prodvisual": {"api": (8, 2.0)},
}
SCALE_INFLIGHT = {"listingrva": 1, "prodvisual": 1, "pixii": 2}


async def test_two_workers_share_limits_and_pay_each_output_once(
    server: Server, spawn: Any, lf_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One server, two process workers on the pool, two runs of catalog-on-demand at once with
    overlapping products: the runs execute concurrently on different workers, each provider's rate
    and in-flight limits hold across both (the sandboxes saw no more and answered no 429), and every
    job was paid once: the overlapping product's jobs are shared and the sandboxes' charges equal the
    two runs' cost summaries together."""
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("LISTINGFLOW_INFLIGHT_LIMITS", json.dumps(SCALE_INFLIGHT))
    with sandboxes_with(SCALE_LIMITS, job_seconds=0.5) as boxes:
        await bootstrap_and_deploy(server)
        workers = await start_workers(spawn, server, ["worker-a", "worker-b"], tmp_path)
        catalog = write_catalog(tmp_path / "catalog.csv", ["B0CHX1W1XY", "B0BQRG7K5N", "B09V3KXJPB"])
        archive = tmp_path / "shared-archive"
        products = {"a": ["B0CHX1W1XY", "B0BQRG7K5N"], "b": ["B0BQRG7K5N", "B09V3KXJPB"]}
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(ON_DEMAND)
            runs = await asyncio.gather(
                *[
                    client.create_flow_run_from_deployment(
                        deployment.id,
                        parameters={"catalog": str(catalog), "archive": str(archive), "products": p},
                    )
                    for p in products.values()
                ]
            )
        started = time.monotonic()
        finished = await wait_final([r.id for r in runs], workers)
        elapsed = time.monotonic() - started
        for run in finished:
            assert run.state.is_completed(), f"{run.state}\n" + "\n".join(w.tail() for w in workers)

    # each worker executed one of the runs (both may try to submit a run; the server lets one win), and
    # the runs overlapped in time
    ran_on = {
        str(r.id): [w.name for w in workers if f"/runs/flow-run/{r.id}" in w.output()] for r in finished
    }
    assert sorted(name for names in ran_on.values() for name in names) == ["worker-a", "worker-b"], ran_on
    a, b = finished
    assert a.start_time < b.end_time and b.start_time < a.end_time, "the runs did not overlap"

    # limits held across both workers, as the providers saw it
    assert_limits_held(boxes, SCALE_LIMITS, SCALE_INFLIGHT)

    # every output paid once: the shared product used the same jobs in both runs, every paid job is one a
    # run used, and the providers charged exactly what the two cost summaries report together
    manifests = [json.loads((archive / "runs" / str(r.id) / "manifest.json").read_text()) for r in finished]
    jobs = [{p["key"]: p["jobs"] for p in m["products"]} for m in manifests]
    assert jobs[0]["US/B0BQRG7K5N"] == jobs[1]["US/B0BQRG7K5N"]
    used = {
        job for run_jobs in jobs for product in run_jobs.values() for step in product.values() for job in step
    }
    for name, box in boxes.items():
        paid = {j.id for j in box.paid_jobs()}
        assert paid and paid <= used, (name, paid - used)
    costs = [json.loads((archive / "runs" / str(r.id) / "cost-summary.json").read_text()) for r in finished]
    total = sum(next(line["net"] for line in c["lines"] if line["scope"] == "total") for c in costs)
    assert total == sum(b.net_credits() for b in boxes.values())
    print(f"\ntwo runs on two workers: {elapsed:.1f}s")


# --- bootstrap details ------------------------------------------------------------------------------


async def test_bootstrap_s3_result_storage_key_rotation_and_missing_keys(
    lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3Bucket block follows LISTINGFLOW_RESULT_* (created, unchanged, updated); a rotated key
    updates its Secret block without printing it; a missing key is reported, not invented."""
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_aws import S3Bucket

    from deployments.bootstrap import BootstrapError, bootstrap
    from deployments.credentials import aload_api_key
    from flows.settings import reset_settings

    block = f"results-{lf_env['prefix']}"
    for var in _key_vars():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LISTINGFLOW_RESULT_STORAGE", f"s3-bucket/{block}")
    reset_settings()
    lines = await bootstrap()
    skipped = f"result storage s3-bucket/{block}: skipped, LISTINGFLOW_RESULT_BUCKET is not set (NOT CREATED"
    assert [line for line in lines if line.startswith(skipped)], lines
    for provider in ("listingrva", "pixii", "prodvisual"):
        expected = f"secret {provider}-api-key: skipped, {provider.upper()}_API_KEY is not set ("
        assert [line for line in lines if line.startswith(expected)], lines

    monkeypatch.setenv("LISTINGFLOW_RESULT_BUCKET", "cache-one")
    monkeypatch.setenv("LISTINGFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    rotated = f"pk_test_rotated_{lf_env['prefix']}"
    monkeypatch.setenv("PIXII_API_KEY", rotated)
    reset_settings()
    lines = await bootstrap()
    assert f"result storage s3-bucket/{block}: created (s3://cache-one at http://127.0.0.1:9000)" in lines
    assert any(
        line.startswith("secret pixii-api-key: ")
        and line.endswith("(from PIXII_API_KEY)")
        and ("created" in line or "updated" in line)
        for line in lines
    ), lines
    assert not [line for line in lines if rotated in line]
    assert (await Secret.aload("pixii-api-key")).get() == rotated
    assert await aload_api_key("pixii-api-key") == rotated  # what a run without PIXII_API_KEY would use
    assert await aload_api_key("no-such-provider-api-key") is None
    saved = await S3Bucket.aload(block)
    assert saved.bucket_name == "cache-one"
    assert saved.credentials.aws_client_parameters.endpoint_url == "http://127.0.0.1:9000"

    lines = await bootstrap()
    assert f"result storage s3-bucket/{block}: unchanged (s3://cache-one at http://127.0.0.1:9000)" in lines
    assert "secret pixii-api-key: unchanged (from PIXII_API_KEY)" in lines

    monkeypatch.setenv("LISTINGFLOW_RESULT_BUCKET", "cache-two")
    lines = await bootstrap()
    assert f"result storage s3-bucket/{block}: updated (s3://cache-two at http://127.0.0.1:9000)" in lines
    assert (await S3Bucket.aload(block)).bucket_name == "cache-two"

    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(BootstrapError, match="PREFECT_API_URL"),
    ):
        await bootstrap()
    reset_settings()


def test_use_checkout_finds_this_checkout_or_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deployments.steps import use_checkout

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LISTINGFLOW_CHECKOUT", raising=False)
    assert use_checkout() == {"directory": str(REPO)}
    assert Path.cwd() == REPO
    monkeypatch.setenv("LISTINGFLOW_CHECKOUT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a listingflow checkout"):
        use_checkout()
