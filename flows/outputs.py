"""A job's outputs archived before their URLs expire: copy as JSON, each image downloaded (from an
allowed host, within the size cap, typed by its bytes) and stored with its job's metadata.

An image is looked up first under every type it may have been stored as, so a rerun never downloads
or stores an output of the same job twice; a job whose URLs expired is read again once for fresh ones.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel

from providers.contract import JobResult, OutputRef, Product, Step
from providers.errors import OutputExpired, ProviderError

from .archive import StoredObject, output_key
from .download import IMAGE_EXTENSIONS, fetch_image
from .retry import call_with_retries
from .runtime import RunContext


class ArchivedOutput(BaseModel):
    key: str
    uri: str
    label: str
    sha256: str
    size: int
    content_type: str
    job_id: str
    source_url: str | None = None
    for_asin: str


async def archive_outputs(
    run: RunContext,
    plugin: Any,
    product: Product,
    step: Step,
    asin: str,
    result: JobResult,
    *,
    fresh: bool = False,
    on_first_image: Callable[[str], None] | None = None,
) -> list[ArchivedOutput]:
    """The job's outputs in the archive. Unless ``fresh`` (a job this run paid for: nothing of it can
    be archived yet), each is looked for there first: a rerun neither downloads nor writes it again.
    For a fresh job that lookup was one of the three waits between ProdVisual's batch finishing and
    Scale starting (~0.02 s at a run's start); a retried flow run (same id) writes the same bytes again.
    ``on_first_image`` is told the job's first image URL once that image is downloaded and checked
    (or found archived), before it is written: the steps that read it start then (with 50 products,
    Scale's first submission waited 0.26 s for the batch's images to be written)."""
    archive = run.archive
    prefix = archive.prefix
    provider = result.ref.provider
    out: list[ArchivedOutput] = []
    meta = {"source-job-id": result.ref.job_id, "provider": provider, "step": str(step), "asin": asin}
    if result.copy_result is not None:
        key = output_key(prefix, product.country_code, asin, step, provider, "copy", "json")
        body = json.dumps(result.copy_result.model_dump(mode="json"), indent=2, sort_keys=True).encode()
        if fresh:
            stored = await archive.put(key, body, content_type="application/json", metadata=meta)
        else:
            stored = await _stored_or_put(
                run, key, result.ref.job_id, lambda: _const(body, "application/json"), meta
            )
        out.append(_archived(stored, "copy", result, None, asin))
    refresh = _once(lambda: plugin.refresh(result.ref))  # a job's URLs expire together: read it once

    async def image(output: OutputRef) -> ArchivedOutput:
        keys = {
            ext: output_key(prefix, product.country_code, asin, step, provider, output.label, ext)
            for ext in _image_extensions(output.content_type)
        }
        first = on_first_image if output is result.outputs[0] else None
        existing = None if fresh else await _archived_image(run, list(keys.values()), result.ref.job_id)
        if existing is not None:
            if first is not None:
                first(output.url)
            return _archived(existing, output.label, result, output.url, asin)
        data, ctype = await _download_output(run, plugin, result, output, refresh)
        if first is not None:
            first(output.url)
        stored = await archive.put(keys[IMAGE_EXTENSIONS[ctype]], data, content_type=ctype, metadata=meta)
        return _archived(stored, output.label, result, output.url, asin)

    # a job's images at once (an A+ job has one per module): one after another, the last product's
    # A+ took 0.15 s to archive at the end of the benchmark's run, where a script's downloads overlap.
    # Each is finished (archived or failed) before the first failure is raised.
    images = await asyncio.gather(*(image(output) for output in result.outputs), return_exceptions=True)
    for done in images:
        if isinstance(done, BaseException):
            raise done
    return out + [done for done in images if isinstance(done, ArchivedOutput)]


_R = TypeVar("_R")


def _once(read: Callable[[], Awaitable[_R]]) -> Callable[[], Awaitable[_R]]:
    """``read`` called at most once, its result (or error) shared by every caller."""
    started: list[asyncio.Task[_R]] = []

    async def shared() -> _R:
        if not started:
            started.append(asyncio.ensure_future(read()))
        return await asyncio.shield(started[0])

    return shared


async def _download_output(
    run: RunContext,
    plugin: Any,
    result: JobResult,
    output: OutputRef,
    refresh: Callable[[], Awaitable[JobResult | None]],
) -> tuple[bytes, str]:
    """One output's bytes and type. An expired URL is asked for again through the job (``refresh``:
    read at most once per job, shared by its outputs)."""
    provider = result.ref.provider
    what = f"download {provider} {output.label} of job {result.ref.job_id}"

    async def download(url: str = output.url) -> tuple[bytes, str]:
        data, ctype, _ = await fetch_image(
            run.download_http,
            url,
            provider=provider,
            allowed_hosts=plugin.output_hosts,
            sandbox_mode=run.settings.sandbox_mode,
            max_bytes=run.settings.download_max_bytes,
        )
        return data, ctype

    try:
        data, ctype = await call_with_retries(download, policy=run.settings.retry, what=what)
    except OutputExpired:
        try:
            refreshed = await refresh()  # retried by the client
        except ProviderError as exc:
            raise OutputExpired(
                f"{provider} output {output.label} of job {result.ref.job_id} expired and the job can no "
                f"longer be read: {exc.message}",
                provider=provider,
                code=exc.code,
                status=exc.status,
            ) from None
        fresh = next((o for o in (refreshed.outputs if refreshed else []) if o.label == output.label), None)
        if fresh is None:
            raise OutputExpired(
                f"{provider} output {output.label} of job {result.ref.job_id} expired and the provider "
                "cannot serve it again",
                provider=provider,
            ) from None
        data, ctype = await call_with_retries(
            partial(download, fresh.url), policy=run.settings.retry, what=what
        )
    return data, ctype


def _image_extensions(declared: str) -> list[str]:
    """Every extension an image output can be archived under, the type the provider declared first.

    An image is named by the type its bytes turn out to be (known only after the download), so a
    rerun looks for the job's output under each of them (``_archived_image``) rather than trusting
    the declaration; the declared type usually matches and is looked up first."""
    first = IMAGE_EXTENSIONS.get(declared.split(";")[0].strip().lower())
    return sorted(set(IMAGE_EXTENSIONS.values()), key=lambda ext: (ext != first, ext))


async def _archived_image(run: RunContext, keys: list[str], job_id: str) -> StoredObject | None:
    """The output this job already archived under one of ``keys``; another job's object (an earlier
    run's image of another type) is not it."""
    found = await asyncio.gather(*(run.archive.stat(key) for key in keys))
    return next((o for o in found if o is not None and o.metadata.get("source-job-id") == job_id), None)


async def _const(body: bytes, ctype: str) -> tuple[bytes, str]:
    return body, ctype


async def _stored_or_put(
    run: RunContext, key: str, job_id: str, produce: Any, meta: dict[str, str]
) -> StoredObject:
    existing = await run.archive.stat(key)
    if existing is not None and existing.metadata.get("source-job-id") == job_id:
        return existing
    data, ctype = await produce()
    return await run.archive.put(key, data, content_type=ctype, metadata=meta)


def _archived(
    stored: StoredObject, label: str, result: JobResult, url: str | None, asin: str
) -> ArchivedOutput:
    return ArchivedOutput(
        key=stored.key,
        uri=stored.uri,
        label=label,
        sha256=stored.sha256,
        size=stored.size,
        content_type=stored.content_type,
        job_id=result.ref.job_id,
        source_url=url,
        for_asin=asin,
    )
