"""``listingflow bootstrap``: everything a Prefect server needs before ``prefect deploy --all``.

Idempotent; every run reports, line by line, what it created, updated or found unchanged:

* the process work pool the deployments in ``prefect.yaml`` use (``listingflow``);
* the global concurrency limits of every installed provider plugin (rate limit per route group,
  in-flight limit per provider; names and sizes from :mod:`flows.limits` and ``LISTINGFLOW_*``
  settings, so the limits on the server match what flow runs acquire);
* a Secret block per provider credential found in the environment (``PIXII_API_KEY`` ->
  ``pixii-api-key`` ...); missing variables are reported and skipped, values are never printed;
* the result-storage block for cached submissions: an ``S3Bucket`` (prefect-aws) when
  ``LISTINGFLOW_RESULT_STORAGE=s3-bucket/<name>`` and ``LISTINGFLOW_RESULT_BUCKET`` are set (endpoint
  from ``LISTINGFLOW_S3_ENDPOINT_URL``), otherwise a ``LocalFileSystem`` block under the state dir.

It talks to the Prefect API in ``PREFECT_API_URL``; without one it refuses rather than starting a
throw-away ephemeral server.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from flows.settings import Settings, get_settings

from .credentials import api_key_env_var, installed_providers, secret_block_name

RESULT_BUCKET_ENV = "LISTINGFLOW_RESULT_BUCKET"


class BootstrapError(RuntimeError):
    """The bootstrap cannot proceed (no Prefect API, a conflicting work pool...)."""


async def bootstrap(work_pool: str = "listingflow") -> list[str]:
    """Create what is missing, fix what differs, leave the rest; returns one line per item."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        raise BootstrapError(
            "PREFECT_API_URL is not set: start a server (`prefect server start`) and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` first"
        )
    settings = get_settings()
    lines = [f"Prefect API: {api}"]
    lines.append(await _work_pool(work_pool))
    providers = installed_providers()
    lines += await _limits(providers, settings)
    lines += await _secrets(providers)
    lines.append(await _result_storage(settings))
    return lines


# --- work pool ---------------------------------------------------------------------------------


async def _work_pool(name: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            pool = None
        if pool is not None:
            if pool.type != "process":
                raise BootstrapError(
                    f"work pool {name!r} exists with type {pool.type!r}; the deployments need a "
                    "'process' pool: delete it or pass --work-pool with another name"
                )
            return f"work pool {name}: unchanged (process)"
        await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                description="listingflow catalog runs (process workers in a listingflow checkout)",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
        return f"work pool {name}: created (process)"


# --- global concurrency limits -----------------------------------------------------------------


async def _limits(providers: dict[str, Any], settings: Settings) -> list[str]:
    from flows.limits import ensure_limits, limit_specs

    if not providers:
        return ["concurrency limits: no provider plugins installed"]
    lines = []
    for _, provider in sorted(providers.items()):
        specs = limit_specs(provider, settings)
        changed = await ensure_limits(specs)
        by_name = {c.split(" ", 1)[1]: c.split(" ", 1)[0] for c in changed}
        for spec in specs:
            lines.append(
                f"concurrency limit {spec.name}: {by_name.get(spec.name, 'unchanged')} ({spec.describe()})"
            )
    return lines


# --- Secret blocks -----------------------------------------------------------------------------


async def _secrets(providers: dict[str, Any]) -> list[str]:
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    from .credentials import aload_api_key

    lines = []
    for name, provider in sorted(providers.items()):
        var = api_key_env_var(provider)
        block = secret_block_name(provider.settings_class)
        if block is None:
            lines.append(f"secret for {name}: skipped, its settings have no env prefix to name it by")
            continue
        value = os.environ.get(var)
        if not value:
            existing = await aload_api_key(block)
            state = "exists, left as is" if existing else "not created"
            lines.append(f"secret {block}: skipped, {var} is not set ({state})")
            continue
        existing = await aload_api_key(block)
        if existing == value:
            lines.append(f"secret {block}: unchanged (from {var})")
            continue
        await Secret(value=SecretStr(value)).save(block, overwrite=True)
        lines.append(f"secret {block}: {'updated' if existing else 'created'} (from {var})")
    return lines


# --- result storage ----------------------------------------------------------------------------


def local_result_block_name(settings: Settings) -> str:
    """The LocalFileSystem block name flow runs use when LISTINGFLOW_RESULT_STORAGE is unset (must
    match ``flows.tasks.result_storage``)."""
    return "listingflow-results-" + hashlib.sha256(str(settings.results_path).encode()).hexdigest()[:10]


async def _result_storage(settings: Settings) -> str:
    slug = settings.result_storage
    if not slug:
        return await _local_block(
            local_result_block_name(settings), settings, note=" (default; one host only)"
        )
    block_type, _, name = slug.partition("/")
    if not name:
        raise BootstrapError(
            f"LISTINGFLOW_RESULT_STORAGE={slug!r}: expected BLOCK-TYPE/NAME, e.g. s3-bucket/listingflow"
        )
    if block_type == "local-file-system":
        return await _local_block(name, settings)
    if block_type == "s3-bucket":
        return await _s3_block(name, settings)
    return f"result storage {slug}: not managed by bootstrap (create the block yourself)"


async def _local_block(name: str, settings: Settings, note: str = "") -> str:
    from prefect.filesystems import LocalFileSystem

    path = str(settings.results_path)
    try:
        existing: Any = await LocalFileSystem.aload(name)
    except ValueError:
        existing = None
    slug = f"local-file-system/{name}"
    if existing is not None and existing.basepath == path:
        return f"result storage {slug}: unchanged ({path}){note}"
    settings.results_path.mkdir(parents=True, exist_ok=True)
    await LocalFileSystem(basepath=path).save(name, overwrite=True)
    return f"result storage {slug}: {'updated' if existing else 'created'} ({path}){note}"


async def _s3_block(name: str, settings: Settings) -> str:
    slug = f"s3-bucket/{name}"
    bucket = os.environ.get(RESULT_BUCKET_ENV)
    try:
        from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket
    except ImportError:
        return f"result storage {slug}: skipped, prefect-aws is not installed (pip install prefect-aws)"
    try:
        existing: Any = await S3Bucket.aload(name)
    except ValueError:
        existing = None
    if not bucket:
        state = (
            "exists, left as is" if existing is not None else "NOT CREATED: flow runs will fail to load it"
        )
        return f"result storage {slug}: skipped, {RESULT_BUCKET_ENV} is not set ({state})"
    endpoint = settings.s3_endpoint_url
    where = f"s3://{bucket}" + (f" at {endpoint}" if endpoint else "")
    if existing is not None and existing.bucket_name == bucket and _endpoint(existing) == endpoint:
        return f"result storage {slug}: unchanged ({where})"
    # No keys are stored: each host's AWS credential chain (env, profile, instance role) is used.
    credentials = AwsCredentials(aws_client_parameters=AwsClientParameters(endpoint_url=endpoint))
    await S3Bucket(bucket_name=bucket, credentials=credentials).save(name, overwrite=True)
    return f"result storage {slug}: {'updated' if existing is not None else 'created'} ({where})"


def _endpoint(block: Any) -> str | None:
    params = getattr(getattr(block, "credentials", None), "aws_client_parameters", None)
    return getattr(params, "endpoint_url", None)
