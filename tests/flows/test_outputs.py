"""Archived outputs: named by the image type the provider really returned, written with the usual file mode.

Fast: ``archive_outputs`` runs against a local archive and an in-memory download transport, no
Prefect server.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from flows.archive import LocalArchive, SpooledArchive
from flows.outputs import archive_outputs
from flows.settings import RetryPolicy
from providers.contract import JobRef, JobResult, OutputRef, Product, Step

PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 64
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"w" * 64
TYPES = {PNG: "image/png", JPEG: "image/jpeg", WEBP: "image/webp"}


class Downloads:
    """Serves one body per URL path and counts the requests (an archived output is not fetched again)."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        body = self.bodies[request.url.path]
        return httpx.Response(200, content=body, headers={"content-type": TYPES[body]})


@pytest.fixture
def downloads() -> Downloads:
    return Downloads()


@pytest.fixture
async def run(tmp_path: Path, downloads: Downloads):
    http = httpx.AsyncClient(transport=httpx.MockTransport(downloads))
    settings = SimpleNamespace(
        sandbox_mode=True, download_max_bytes=1 << 20, retry=RetryPolicy(max_attempts=1)
    )
    archive = SpooledArchive(LocalArchive(tmp_path / "archive"), tmp_path / "spool")
    yield SimpleNamespace(archive=archive, download_http=http, settings=settings)
    await http.aclose()


PRODUCT = Product(asin="B0EXT00001", country_code="US", title="A product")
PLUGIN = SimpleNamespace(output_hosts=())


def _result(job_id: str, *outputs: tuple[str, str]) -> JobResult:
    """``outputs``: (label, the content type the provider's job response declared)."""
    ref = JobRef(provider="prov", step=Step.IMAGES, job_id=job_id, kind="image")
    return JobResult(
        ref=ref,
        status="completed",
        outputs=[
            OutputRef(url=f"http://127.0.0.1/{label}", label=label, content_type=declared)
            for label, declared in outputs
        ],
    )


async def test_each_image_is_named_and_typed_by_what_was_downloaded(run, downloads) -> None:
    """The providers declare PNG by default; the bytes decide the name (a .png holding JPEG breaks
    viewers)."""
    downloads.bodies.update({"/image-1": JPEG, "/image-2": WEBP, "/image-3": PNG})
    result = _result("job-1", ("image-1", "image/png"), ("image-2", "image/png"), ("image-3", "image/png"))
    archived = await archive_outputs(run, PLUGIN, PRODUCT, Step.IMAGES, PRODUCT.asin, result)
    assert [(a.key, a.content_type) for a in archived] == [
        ("US/B0EXT00001/images/prov-image-1.jpg", "image/jpeg"),
        ("US/B0EXT00001/images/prov-image-2.webp", "image/webp"),
        ("US/B0EXT00001/images/prov-image-3.png", "image/png"),
    ]
    assert (run.archive.archive.root / archived[0].key).read_bytes() == JPEG


async def test_a_rerun_finds_the_archived_image_whatever_its_type(run, downloads) -> None:
    """The name is known only after the download; the rerun check looks under every image type, so
    an output of the same job is neither downloaded nor archived twice."""
    downloads.bodies.update({"/image-1": JPEG, "/image-2": WEBP})
    result = _result("job-2", ("image-1", "image/png"), ("image-2", "image/webp"))
    first = await archive_outputs(run, PLUGIN, PRODUCT, Step.IMAGES, PRODUCT.asin, result)
    assert downloads.requests == 2
    again = await archive_outputs(run, PLUGIN, PRODUCT, Step.IMAGES, PRODUCT.asin, result)
    assert downloads.requests == 2
    assert [a.key for a in again] == [a.key for a in first]


async def test_a_job_this_run_paid_for_is_archived_without_looking_for_it_first(run, downloads) -> None:
    downloads.bodies.update({"/image-1": PNG})
    looked: list[str] = []
    real_stat = run.archive.stat

    async def counted(key: str) -> Any:
        looked.append(key)
        return await real_stat(key)

    run.archive.stat = counted
    result = _result("job-3", ("image-1", "image/png"))
    [fresh] = await archive_outputs(run, PLUGIN, PRODUCT, Step.IMAGES, PRODUCT.asin, result, fresh=True)
    assert looked == [] and downloads.requests == 1
    [again] = await archive_outputs(run, PLUGIN, PRODUCT, Step.IMAGES, PRODUCT.asin, result)
    assert looked and downloads.requests == 1  # a rerun looks first, and finds it
    assert again.key == fresh.key and again.sha256 == fresh.sha256


async def test_another_jobs_image_under_another_type_is_not_taken_for_this_one(run, downloads) -> None:
    downloads.bodies["/image-1"] = PNG
    await archive_outputs(
        run, PLUGIN, PRODUCT, Step.IMAGES, PRODUCT.asin, _result("job-old", ("image-1", "image/png"))
    )
    downloads.bodies["/image-1"] = JPEG
    [new] = await archive_outputs(
        run, PLUGIN, PRODUCT, Step.IMAGES, PRODUCT.asin, _result("job-new", ("image-1", "image/png"))
    )
    assert downloads.requests == 2
    assert new.key.endswith("prov-image-1.jpg") and new.job_id == "job-new"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_archive_files_get_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    """Anyone who may read the archive folder may read its files (an image server, a colleague),
    as with any file the user writes; the umask decides, not a private temporary-file mode."""
    old = os.umask(umask)
    try:
        stored = LocalArchive(tmp_path).put(
            "US/B0X/images/p-image-1.png", PNG, content_type="image/png", metadata={}
        )
    finally:
        os.umask(old)
    path = Path(stored.uri)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE(path.with_name(path.name + ".meta.json").stat().st_mode) == mode


class SlowDownloads(Downloads):
    """Each download takes a moment; counts how many are under way at once. The paths under /old/ are
    expired (410), as a job's URLs all are after 7 days."""

    def __init__(self) -> None:
        super().__init__()
        self.active = self.peak = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:  # type: ignore[override]
        self.requests += 1
        if request.url.path.startswith("/old/"):
            return httpx.Response(410)
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.05)
        self.active -= 1
        body = self.bodies[request.url.path]
        return httpx.Response(200, content=body, headers={"content-type": TYPES[body]})


async def test_a_jobs_images_are_downloaded_at_once_and_expired_urls_refreshed_once(tmp_path: Path) -> None:
    """An A+ job has an image per module: they are fetched together, as a script would; when the
    job's URLs have expired, the job is read again once for all of them."""
    downloads = SlowDownloads()
    labels = [f"module-{n}" for n in range(4)]
    downloads.bodies.update({f"/new/{label}": PNG for label in labels})
    reads: list[str] = []

    async def refresh(ref: JobRef) -> JobResult:
        reads.append(ref.job_id)
        await asyncio.sleep(0.01)
        fresh = [OutputRef(url=f"http://127.0.0.1/new/{label}", label=label) for label in labels]
        return JobResult(ref=ref, status="completed", outputs=fresh)

    plugin = SimpleNamespace(output_hosts=(), refresh=refresh)
    ref = JobRef(provider="prov", step=Step.APLUS, job_id="job-a", kind="aplus")
    expired = [OutputRef(url=f"http://127.0.0.1/old/{label}", label=label) for label in labels]
    async with httpx.AsyncClient(transport=httpx.MockTransport(downloads)) as http:
        settings = SimpleNamespace(
            sandbox_mode=True, download_max_bytes=1 << 20, retry=RetryPolicy(max_attempts=1)
        )
        archive = SpooledArchive(LocalArchive(tmp_path / "archive"), tmp_path / "spool")
        run = SimpleNamespace(archive=archive, download_http=http, settings=settings)
        result = JobResult(ref=ref, status="completed", outputs=expired)
        archived = await archive_outputs(run, plugin, PRODUCT, Step.APLUS, PRODUCT.asin, result)
    assert [a.label for a in archived] == labels  # in the job's order
    assert reads == ["job-a"]
    assert downloads.peak == len(labels)
