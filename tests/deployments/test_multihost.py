"""Scale-out across hosts (deployments/README.md section 8), on one machine.

Two process workers stand for two hosts. Each has its own ``LISTINGFLOW_HOME``, ``PREFECT_HOME`` and
``TMPDIR``, so they share no file and no file lock. They share only what hosts share:

* the Prefect server, on PostgreSQL (a throwaway cluster), which holds the global concurrency limits;
* a real ``redis-server``, the lock manager of the submissions (``LISTINGFLOW_REDIS_URL``);
* S3 (a moto server): the cached submissions (an ``S3Bucket`` result-storage block made by
  ``listingflow bootstrap``), the archive and the catalog;
* the provider sandboxes, one set in this process; their ledgers are the truth for charges and limits.

Needs PostgreSQL's server binaries and ``redis-server`` (``.ci/run`` installs both). Without them the
test is skipped, except in CI (``CI`` set), where it fails instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.serving import free_port
from tests.deployments import test_deployments as one_host
from tests.deployments.test_deployments import (
    ON_DEMAND,
    SCALE_INFLIGHT,
    SCALE_LIMITS,
    Server,
    Spawned,
    assert_limits_held,
    bootstrap_and_deploy,
    running_server,
    sandboxes_with,
    start_workers,
    wait_final,
    write_catalog,
)

# the runbook tests' fixtures: ``spawn`` starts subprocesses and kills them (and their descendants) after
# the test; ``this_server`` (autouse) points this process's Prefect client at this module's ``server``
spawn = one_host.spawn
this_server = one_host.this_server

pytestmark = pytest.mark.multihost

RESULTS_BUCKET = "listingflow-results"
ARCHIVE_BUCKET = "listingflow-archive"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
HOSTS = ("host-a", "host-b")


def require(what: str, found: bool) -> None:
    """A missing service skips the test on a developer machine, and fails it in CI."""
    if found:
        return
    message = f"{what} is not installed (.ci/run installs it: apt-get install -y postgresql redis-server)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# --- the shared services ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's Prefect server, on a throwaway PostgreSQL cluster (``this_server`` points the
    test process at it)."""
    from benchmarks.harness import postgres, postgres_available

    require("PostgreSQL (initdb, postgres)", postgres_available())
    root = tmp_path_factory.mktemp("prefect-server-pg")
    with (
        postgres(root / "postgres") as database_url,
        running_server(root, database_url, PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false") as started,
    ):
        yield started


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``redis-server`` on a free loopback port, without persistence."""
    import redis

    binary = shutil.which("redis-server")
    require("redis-server", binary is not None)
    root = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = Spawned(
        "redis-server",
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
        ],
        env=dict(os.environ),
        cwd=root,
        log=root / "redis.log",
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if process.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start\n" + process.tail())
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.stop()


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """A moto S3 server with the result-storage and archive buckets."""
    import boto3
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    for bucket in (RESULTS_BUCKET, ARCHIVE_BUCKET):
        s3.create_bucket(Bucket=bucket)
    try:
        yield url
    finally:
        moto.stop()


def host_env(root: Path) -> dict[str, str]:
    """What differs between the two "hosts": every local folder."""
    (root / "tmp").mkdir(parents=True)
    return {
        "LISTINGFLOW_HOME": str(root / "state"),
        "PREFECT_HOME": str(root / "prefect-home"),
        "TMPDIR": str(root / "tmp"),
    }


def assert_each_request_paid_once(boxes: dict[str, Any], products: int) -> None:
    """The providers' own ledgers: one paid job per distinct request, one charge per paid job, and one
    ListingRVA product record per product."""
    for name, box in boxes.items():
        paid = box.paid_jobs()
        requests = Counter((j.kind, j.asin, json.dumps(j.payload, sort_keys=True)) for j in paid)
        assert paid and set(requests.values()) == {1}, (name, [r for r, n in requests.items() if n > 1])
        charges = Counter(c.job_id for c in box.charges if c.kind == "charge")
        assert set(charges.values()) == {1}, (name, charges)
    assert len(boxes["listingrva"].products) == products


def redis_sets(url: str) -> int:
    """How many SET commands Redis has served (a lock is taken with SET NX)."""
    import redis

    with contextlib.closing(redis.Redis.from_url(url)) as client:
        return int(client.info("commandstats").get("cmdstat_set", {}).get("calls", 0))


def redis_locks_held(url: str) -> list[bytes]:
    import redis

    with contextlib.closing(redis.Redis.from_url(url)) as client:
        return list(client.scan_iter("lock:*"))


# --- the Redis lock manager --------------------------------------------------------------------------------


async def test_redis_lock_taken_by_an_async_task_is_released(redis_url: str) -> None:
    """Prefect's async transactions acquire asynchronously and release synchronously: the lock must be
    free afterwards, or the other host's run waits for it forever."""
    from flows.redis_locks import ExpiringRedisLockManager

    host_a, host_b = (ExpiringRedisLockManager(redis_url, hold_seconds=60) for _ in range(2))
    assert await host_a.aacquire_lock("submit-key-1", holder="run-a")
    assert host_b.is_locked("submit-key-1")
    host_a.release_lock("submit-key-1", holder="run-a")
    assert not host_b.is_locked("submit-key-1")
    assert await host_b.aacquire_lock("submit-key-1", holder="run-b", acquire_timeout=1)
    host_b.release_lock("submit-key-1", holder="run-b")


async def test_redis_lock_of_a_crashed_holder_expires(redis_url: str) -> None:
    """A holder that never releases (killed mid-submit) blocks the key for ``hold_seconds``, not for good."""
    from flows.redis_locks import ExpiringRedisLockManager

    crashed = ExpiringRedisLockManager(redis_url, hold_seconds=0.5)
    assert await crashed.aacquire_lock("submit-key-2", holder="killed-run")
    other = ExpiringRedisLockManager(redis_url, hold_seconds=60)
    assert not await other.aacquire_lock("submit-key-2", holder="run-b", acquire_timeout=0.1)
    assert await other.aacquire_lock("submit-key-2", holder="run-b", acquire_timeout=10)
    other.release_lock("submit-key-2", holder="run-b")


# --- two hosts ----------------------------------------------------------------------------------------------


async def test_two_hosts_share_postgres_redis_and_s3_and_pay_each_output_once(
    server: Server,
    spawn: Any,
    lf_env: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    s3_url: str,
) -> None:
    """Two overlapping runs of catalog-on-demand, one per "host": both complete, every distinct
    request was paid once at the providers, and their limits held across both hosts."""
    import boto3
    from prefect.client.orchestration import get_client

    block = f"results-{lf_env['prefix']}"
    shared = {
        "LISTINGFLOW_REDIS_URL": redis_url,
        "LISTINGFLOW_RESULT_STORAGE": f"s3-bucket/{block}",
        "LISTINGFLOW_RESULT_BUCKET": RESULTS_BUCKET,
        "LISTINGFLOW_S3_ENDPOINT_URL": s3_url,
        "LISTINGFLOW_INFLIGHT_LIMITS": json.dumps(SCALE_INFLIGHT),
        **AWS_ENV,
    }
    for key, value in shared.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = boto3.client("s3", endpoint_url=s3_url)
    asins = ["B0CHX1W1XY", "B0BQRG7K5N", "B09V3KXJPB", "B0C7WZ9F2M"]
    catalog_key = f"{lf_env['prefix']}/catalog.csv"
    s3.put_object(
        Bucket=ARCHIVE_BUCKET,
        Key=catalog_key,
        Body=write_catalog(tmp_path / "catalog.csv", asins).read_bytes(),
    )
    catalog, archive = (
        f"s3://{ARCHIVE_BUCKET}/{catalog_key}",
        f"s3://{ARCHIVE_BUCKET}/{lf_env['prefix']}/archive",
    )
    products = {"a": asins[:3], "b": asins[1:]}  # two products in both runs

    sets_before = redis_sets(redis_url)
    with sandboxes_with(SCALE_LIMITS, job_seconds=0.5) as boxes:
        first, _ = await bootstrap_and_deploy(server)
        assert f"result storage s3-bucket/{block}: created (s3://{RESULTS_BUCKET} at {s3_url})" in first, (
            first
        )
        hosts = {name: host_env(tmp_path / name) for name in HOSTS}
        workers = await start_workers(spawn, server, list(HOSTS), tmp_path, env=hosts)
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(ON_DEMAND)
            runs = await asyncio.gather(
                *[
                    client.create_flow_run_from_deployment(
                        deployment.id, parameters={"catalog": catalog, "archive": archive, "products": p}
                    )
                    for p in products.values()
                ]
            )
        started = time.monotonic()
        finished = await wait_final([r.id for r in runs], workers)
        elapsed = time.monotonic() - started
        for run in finished:
            assert run.state.is_completed(), f"{run.state}\n" + "\n".join(w.tail() for w in workers)

    # one run on each host, at the same time
    ran_on = {
        str(r.id): [w.name for w in workers if f"/runs/flow-run/{r.id}" in w.output()] for r in finished
    }
    assert sorted(name for names in ran_on.values() for name in names) == list(HOSTS), ran_on
    a, b = finished
    assert a.start_time < b.end_time and b.start_time < a.end_time, "the runs did not overlap"

    # the providers' limits held across both hosts (rate per window, no 429, jobs in flight)
    assert_limits_held(boxes, SCALE_LIMITS, SCALE_INFLIGHT)

    assert_each_request_paid_once(boxes, products=len(asins))

    # the run manifests and cost summaries, read back from the S3 archive: the shared products used the
    # same jobs in both runs, and the providers charged exactly what the two summaries report
    def read_json(key: str) -> Any:
        return json.loads(
            s3.get_object(Bucket=ARCHIVE_BUCKET, Key=f"{lf_env['prefix']}/archive/{key}")["Body"].read()
        )

    manifests = [read_json(f"runs/{r.id}/manifest.json") for r in finished]
    assert [{p["asin"]: p["status"] for p in m["products"]} for m in manifests] == [
        dict.fromkeys(p, "complete") for p in products.values()
    ]
    jobs = [{p["asin"]: p["jobs"] for p in m["products"]} for m in manifests]
    for asin in set(products["a"]) & set(products["b"]):
        assert jobs[0][asin] == jobs[1][asin], asin
    used = {
        job for run_jobs in jobs for product in run_jobs.values() for step in product.values() for job in step
    }
    for name, box in boxes.items():
        assert {j.id for j in box.paid_jobs()} <= used, name
    costs = [read_json(f"runs/{r.id}/cost-summary.json") for r in finished]
    total = sum(next(line["net"] for line in c["lines"] if line["scope"] == "total") for c in costs)
    assert total == sum(b.net_credits() for b in boxes.values())

    # what was shared went through the shared services, and nothing through the hosts' folders
    assert s3.list_objects_v2(Bucket=RESULTS_BUCKET).get("KeyCount", 0) > 0, "no cached submission on S3"
    for name, env in hosts.items():
        state = Path(env["LISTINGFLOW_HOME"])
        assert not (state / "locks").exists(), f"{name} took file locks"
        assert not [p for p in (state / "results").rglob("*") if p.is_file()], (
            f"{name} cached results locally"
        )
    assert redis_sets(redis_url) > sets_before, "no lock was taken in Redis"
    assert not redis_locks_held(redis_url), "a lock was left behind"
    print(f"\ntwo runs on two hosts (Postgres, Redis, S3): {elapsed:.1f}s")
