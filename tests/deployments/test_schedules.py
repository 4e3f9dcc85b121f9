"""The nightly schedule fires: a real ``prefect server start`` with its scheduler on, ``prefect deploy``
from a copy of ``prefect.yaml`` whose ``catalog-nightly`` cron fires every minute (same timezone, a
one-product catalog), a process worker; the scheduler creates the run, the worker runs it, it completes.

This is the check that was missing when Prefect 3.8.8's scheduler failed on SQLAlchemy 2.1 every loop
and no scheduled run was ever created (the runbook test turns the scheduler off). It waits for the next
minute boundary, so it takes up to ~1.5 min.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import FAST_LIMITS
from tests.deployments import test_deployments as runbook
from tests.deployments.test_deployments import Server

spawn = runbook.spawn  # the runbook test's fixture: started processes are killed with their descendants

NIGHTLY = "listingflow-catalog/catalog-nightly"
FIRST_RUN_TIMEOUT = 150  # the next minute boundary, plus the scheduler's loop


@pytest.fixture(scope="module")
def scheduling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose scheduler loops every 2 s and keeps one future run per schedule."""
    with runbook.running_server(
        tmp_path_factory.mktemp("prefect-scheduler"),
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS="1",
        PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS="1",
        PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME="PT0S",
    ) as started:
        yield started


@pytest.fixture(autouse=True)
def this_server(scheduling_server: Server) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.conftest import drain_prefect_workers

    with temporary_settings(updates={PREFECT_API_URL: scheduling_server.url}):
        yield
        drain_prefect_workers()  # before this module's server goes: later tests use the session server


def every_minute_copy(tmp_path: Path, catalog: Path, archive: Path) -> tuple[Path, dict[str, Any]]:
    """prefect.yaml with only catalog-nightly, its cron every minute in its own timezone, on ``catalog``."""
    config = yaml.safe_load((runbook.REPO / "prefect.yaml").read_text())
    (nightly,) = [d for d in config["deployments"] if d["name"] == "catalog-nightly"]
    (schedule,) = nightly["schedules"]
    schedule["cron"] = "* * * * *"
    nightly["parameters"].update({"catalog": str(catalog), "archive": str(archive), "steps": ["copy"]})
    config["deployments"] = [nightly]
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, schedule


async def first_run_of(deployment_id: Any, workers: list[Any]) -> Any:
    """The first flow run of the deployment, as soon as the scheduler has created one."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + FIRST_RUN_TIMEOUT
    async with get_client() as client:
        while time.monotonic() < deadline:
            by_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            runs = await client.read_flow_runs(deployment_filter=by_deployment)
            if runs:
                return min(runs, key=lambda r: r.expected_start_time)
            await asyncio.sleep(1.0)
    pytest.fail(
        f"the scheduler created no run in {FIRST_RUN_TIMEOUT}s\n" + "\n".join(w.tail() for w in workers)
    )


async def test_the_nightly_schedule_creates_runs_that_a_worker_completes(
    scheduling_server: Server, spawn: Any, lf_env: dict[str, Any], tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from deployments.bootstrap import bootstrap
    from flows.settings import reset_settings

    catalog = runbook.write_catalog(tmp_path / "catalog.csv", ["B0CHX1W1XY"])
    archive = tmp_path / "archive"
    prefect_file, schedule = every_minute_copy(tmp_path, catalog, archive)
    with runbook.sandboxes_with(FAST_LIMITS, job_seconds=0.3):
        reset_settings()
        await bootstrap(work_pool=runbook.POOL)
        deployed = await asyncio.to_thread(
            scheduling_server.cli, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)
        )
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        workers = await runbook.start_workers(spawn, scheduling_server, ["worker-a"], tmp_path)
        async with get_client() as client:
            nightly = await client.read_deployment_by_name(NIGHTLY)
        (deployed_schedule,) = nightly.schedules
        cron = deployed_schedule.schedule
        assert (cron.cron, cron.timezone) == ("* * * * *", schedule["timezone"])
        assert cron.timezone and cron.timezone in nightly.description  # the UI's text names the zone

        run = await first_run_of(nightly.id, workers)
        (finished,) = await runbook.wait_final([run.id], workers)
        async with get_client() as client:
            history = await client.read_flow_run_states(run.id)

    # created by the schedule (not a user), for a minute boundary, picked up by the worker, completed
    assert run.auto_scheduled and "auto-scheduled" in run.tags
    assert run.created_by is not None
    assert (run.created_by.type, run.created_by.id) == ("SCHEDULE", deployed_schedule.id)
    assert run.expected_start_time.second == 0 and run.expected_start_time.microsecond == 0
    assert history[0].name == "Scheduled"
    assert finished.state.is_completed(), f"{finished.state}\n{workers[0].tail()}"
    assert f"/runs/flow-run/{run.id}" in workers[0].output()
    assert (archive / "runs" / str(run.id) / "manifest.json").is_file()
