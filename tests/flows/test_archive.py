"""Storage faults: the archive keeps every output, verified, or keeps it in the local spool.

Unit tests run ``flows.archive`` against a local folder, moto in-process (``mock_aws``) and a moto
server over HTTP (``ThreadedMotoServer``, where botocore's real retry machinery runs); S3 faults are
injected with botocore event hooks. The end-to-end tests run the catalog flow with an S3 archive and
with one that is down.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.archive import (
    ArchiveUnavailable,
    LocalArchive,
    S3Archive,
    SpooledArchive,
    output_key,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
META = {"source-job-id": "job_000042abcdef", "provider": "pixii", "step": "images", "asin": "B0CHX1W1XY"}
KEY = output_key("pre", "US", "B0CHX1W1XY", "images", "pixii", "image-1", "png")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def new_bucket(endpoint_url: str | None) -> str:
    import boto3

    name = f"lf-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint_url).create_bucket(Bucket=name)
    return name


def closed_port_url() -> str:
    import socket

    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def inject(archive: S3Archive, operation: str, faults: list[Any] | Callable[[int], Any]) -> list[int]:
    """Answer the first attempts of ``operation`` with faults (an AWSResponse or an exception),
    before they are sent; returns the attempt counter."""
    from botocore.awsrequest import AWSResponse

    attempts = [0]

    def before_send(request: Any, **kw: Any) -> Any:
        attempts[0] += 1
        n = attempts[0]
        fault = faults(n) if callable(faults) else (faults[n - 1] if n <= len(faults) else None)
        if fault is None:
            return None
        if isinstance(fault, BaseException):
            raise fault
        status, code = fault
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        return AWSResponse(request.url, status, {"content-type": "application/xml"}, _Raw(body))

    archive.client.meta.events.register(f"before-send.s3.{operation}", before_send)
    return attempts


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kw: Any) -> Iterator[bytes]:
        yield self.body


def check_roundtrip(archive: Any, key: str = KEY) -> None:
    stored = archive.put(key, PNG, content_type="image/png", metadata=META)
    assert (stored.size, stored.sha256) == (len(PNG), hashlib.sha256(PNG).hexdigest())
    again = archive.stat(key)
    assert again is not None
    assert (again.size, again.sha256, again.content_type) == (len(PNG), stored.sha256, "image/png")
    for k, v in META.items():
        assert again.metadata[k] == v, k
    assert archive.get(key) == PNG
    assert archive.stat(key + ".missing") is None and archive.get(key + ".missing") is None

    # a document written to a file first (the review gallery) is stored from it, the same way
    page = b"<html>" + b"x" * 300_000 + b"</html>"
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "index.html"
        source.write_bytes(page)
        from_file = archive.put_file(key + ".html", source, content_type="text/html")
    assert (from_file.size, from_file.sha256) == (len(page), hashlib.sha256(page).hexdigest())
    assert archive.get(key + ".html") == page and archive.stat(key + ".html").content_type == "text/html"


# ---- put / stat / get ----------------------------------------------------------------------------------


def test_local_archive_roundtrip(tmp_path: Path) -> None:
    check_roundtrip(LocalArchive(tmp_path / "archive"))


@pytest.mark.usefixtures("aws_env")
def test_s3_archive_roundtrip_in_process() -> None:
    from moto import mock_aws

    with mock_aws():
        bucket = new_bucket(None)
        archive = S3Archive(f"s3://{bucket}/pre")
        assert (archive.bucket, archive.prefix) == (bucket, "pre")
        check_roundtrip(archive)


@pytest.mark.usefixtures("aws_env")
def test_s3_archive_roundtrip_over_http(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    archive = S3Archive(f"s3://{bucket}/pre", endpoint_url=moto_url)
    check_roundtrip(archive)
    import boto3

    head = boto3.client("s3", endpoint_url=moto_url).head_object(Bucket=bucket, Key=KEY)
    assert head["ContentType"] == "image/png"
    assert head["Metadata"]["sha256"] == hashlib.sha256(PNG).hexdigest()


# ---- S3 faults: retried, then reported ---------------------------------------------------------------


@pytest.mark.usefixtures("aws_env")
def test_s3_throttling_5xx_and_connection_loss_on_upload_are_retried(moto_url: str) -> None:
    from botocore.exceptions import ConnectionClosedError

    bucket = new_bucket(moto_url)
    archive = S3Archive(f"s3://{bucket}/pre", endpoint_url=moto_url, max_attempts=5)
    lost = ConnectionClosedError(endpoint_url=moto_url)
    attempts = inject(archive, "PutObject", [(503, "SlowDown"), (500, "InternalError"), lost])
    stored = archive.put(KEY, PNG, content_type="image/png", metadata=META)
    assert attempts[0] == 4
    assert stored.sha256 == hashlib.sha256(PNG).hexdigest()
    assert archive.get(KEY) == PNG


@pytest.mark.usefixtures("aws_env")
def test_s3_upload_that_keeps_failing_raises_archive_unavailable(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    archive = S3Archive(f"s3://{bucket}/pre", endpoint_url=moto_url, max_attempts=3)
    attempts = inject(archive, "PutObject", lambda n: (500, "InternalError"))
    with pytest.raises(ArchiveUnavailable, match=f"s3://{bucket}/{KEY}"):
        archive.put(KEY, PNG, content_type="image/png", metadata=META)
    assert attempts[0] == 3
    assert archive.stat(KEY) is None


@pytest.mark.usefixtures("aws_env")
def test_unreachable_s3_raises_archive_unavailable_for_every_operation() -> None:
    archive = S3Archive("s3://some-bucket/pre", endpoint_url=closed_port_url(), max_attempts=1)
    for call in (
        lambda: archive.put(KEY, PNG, content_type="image/png", metadata=META),
        lambda: archive.stat(KEY),
        lambda: archive.get(KEY),
    ):
        with pytest.raises(ArchiveUnavailable, match="Could not connect"):
            call()


@pytest.mark.usefixtures("aws_env")
def test_max_attempts_follow_the_standard_aws_variable(
    monkeypatch: pytest.MonkeyPatch, moto_url: str
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    bucket = new_bucket(moto_url)
    archive = S3Archive(f"s3://{bucket}/pre", endpoint_url=moto_url)
    attempts = inject(archive, "PutObject", lambda n: (503, "SlowDown"))
    with pytest.raises(ArchiveUnavailable):
        archive.put(KEY, PNG, content_type="image/png", metadata=META)
    assert attempts[0] == 2


# ---- verification: an object is archived only once size and SHA-256 match ---------------------------


@pytest.mark.usefixtures("aws_env")
def test_s3_upload_whose_stored_size_differs_is_not_archived(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    archive = S3Archive(f"s3://{bucket}/pre", endpoint_url=moto_url)

    def truncated(parsed: dict[str, Any], **kw: Any) -> None:  # the store reports fewer bytes than sent
        parsed["ContentLength"] = parsed["ContentLength"] - 1

    archive.client.meta.events.register("after-call.s3.HeadObject", truncated)
    with pytest.raises(ArchiveUnavailable, match="verification failed"):
        archive.put(KEY, PNG, content_type="image/png", metadata=META)


def test_local_write_that_lands_torn_is_not_archived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.archive as module

    real = module._atomic_write
    monkeypatch.setattr(
        module,
        "_atomic_write",
        lambda path, data: real(path, data if path.name.endswith(".json") else data[:-3]),
    )
    archive = LocalArchive(tmp_path / "archive")
    with pytest.raises(ArchiveUnavailable, match="verification failed"):
        archive.put(KEY, PNG, content_type="image/png", metadata=META)
    assert archive.stat(KEY) is None and archive.get(KEY) is None


# ---- atomic manifests ----------------------------------------------------------------------------------


MANIFEST = "pre/US/B0CHX1W1XY/manifest.json"


def _manifest(version: int) -> bytes:
    return json.dumps(
        {"asin": "B0CHX1W1XY", "version": version, "steps": {"copy": {"status": "done"}}}
    ).encode()


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_crash_before_the_rename_leaves_the_previous_manifest_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = LocalArchive(tmp_path / "archive")
    archive.put(MANIFEST, _manifest(1), content_type="application/json", metadata={})

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(ArchiveUnavailable, match="No space left"):
        archive.put(MANIFEST, _manifest(2), content_type="application/json", metadata={})
    monkeypatch.undo()
    assert json.loads(archive.get(MANIFEST) or b"")["version"] == 1
    assert archive.stat(MANIFEST) is not None
    assert _temp_files(tmp_path) == []


def test_crash_between_object_and_metadata_is_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = LocalArchive(tmp_path / "archive")
    archive.put(MANIFEST, _manifest(1), content_type="application/json", metadata={})
    real = os.replace
    calls = [0]

    def crash_second(src: str, dst: str) -> None:
        calls[0] += 1
        if calls[0] == 2:  # the object is renamed, the metadata sidecar is not
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash_second)
    with pytest.raises(ArchiveUnavailable):
        archive.put(MANIFEST, _manifest(2), content_type="application/json", metadata={})
    monkeypatch.undo()
    assert archive.stat(MANIFEST) is None
    assert archive.get(MANIFEST) is None  # a rerun reads "no manifest", never a mismatched one
    assert _temp_files(tmp_path) == []
    archive.put(MANIFEST, _manifest(3), content_type="application/json", metadata={})
    assert json.loads(archive.get(MANIFEST) or b"")["version"] == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage-metadata", "no-metadata"])
def test_torn_or_damaged_objects_are_refused(tmp_path: Path, damage: str) -> None:
    archive = LocalArchive(tmp_path / "archive")
    stored = archive.put(MANIFEST, _manifest(1), content_type="application/json", metadata={})
    path = Path(stored.uri)
    sidecar = path.with_name(path.name + ".meta.json")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:10])
    elif damage == "garbage-metadata":
        sidecar.write_text('{"sha256": ')
    else:
        sidecar.unlink()
    assert archive.stat(MANIFEST) is None
    assert archive.get(MANIFEST) is None


async def test_spooled_archive_reads_a_torn_manifest_as_absent(tmp_path: Path) -> None:
    spooled = SpooledArchive(LocalArchive(tmp_path / "archive"), tmp_path / "spool")
    stored = await spooled.put_json(MANIFEST, {"version": 1})
    Path(stored.uri).write_bytes(b'{"vers')
    assert await spooled.get_json(MANIFEST) is None


# ---- the spool: outputs are never lost --------------------------------------------------------------


@pytest.mark.usefixtures("aws_env")
async def test_unreachable_archive_spools_and_the_next_run_replays(tmp_path: Path, moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    down = S3Archive(f"s3://{bucket}/pre", endpoint_url=closed_port_url(), max_attempts=1)
    tries = [0]
    real_put = down.put

    def counting_put(*a: Any, **kw: Any) -> Any:
        tries[0] += 1
        return real_put(*a, **kw)

    down.put = counting_put  # type: ignore[method-assign]
    first = SpooledArchive(down, tmp_path / "spool")
    second_key = KEY.replace("image-1", "image-2")
    with pytest.raises(ArchiveUnavailable, match="kept in local spool"):
        await first.put(KEY, PNG, content_type="image/png", metadata=META)
    with pytest.raises(ArchiveUnavailable, match="kept in local spool"):
        await first.put(second_key, PNG + b"2", content_type="image/png", metadata=META)
    with pytest.raises(ArchiveUnavailable, match="kept in local spool"):
        await first.put_json("pre/runs/r1/manifest.json", {"run_id": "r1"})
    assert tries[0] == 1, "an archive known to be down is not retried for every object"
    assert first.spooled == [KEY, second_key, "pre/runs/r1/manifest.json"]
    assert await first.stat(KEY) is None  # spooled is not archived

    # next run: the archive is back
    up = SpooledArchive(S3Archive(f"s3://{bucket}/pre", endpoint_url=moto_url), tmp_path / "spool")
    assert up.spool.root == first.spool.root
    replayed = await up.replay_spool()
    assert sorted(replayed) == sorted(first.spooled)
    for key, body in ((KEY, PNG), (second_key, PNG + b"2")):
        stored = await up.stat(key)
        assert stored is not None and stored.sha256 == hashlib.sha256(body).hexdigest()
        assert stored.content_type == "image/png"
        assert stored.metadata["source-job-id"] == META["source-job-id"]
        assert await up.get(key) == body
    assert await up.get_json("pre/runs/r1/manifest.json") == {"run_id": "r1"}
    assert not [p for p in up.spool.root.rglob("*") if p.is_file()]
    assert await up.replay_spool() == []


@pytest.mark.usefixtures("aws_env")
async def test_archive_is_tried_again_after_the_cooldown(tmp_path: Path, moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    archive = S3Archive(f"s3://{bucket}/pre", endpoint_url=moto_url, max_attempts=1)
    attempts = inject(archive, "PutObject", [(503, "SlowDown")])
    spooled = SpooledArchive(archive, tmp_path / "spool", retry_after_seconds=0.0)
    with pytest.raises(ArchiveUnavailable, match="kept in local spool"):
        await spooled.put(KEY, PNG, content_type="image/png", metadata=META)
    stored = await spooled.put(KEY, PNG, content_type="image/png", metadata=META)  # back up: archived
    assert attempts[0] == 2 and stored.uri == f"s3://{bucket}/{KEY}"


@pytest.mark.usefixtures("aws_env")
async def test_one_object_failing_verification_does_not_take_the_archive_down(
    tmp_path: Path, moto_url: str
) -> None:
    bucket = new_bucket(moto_url)
    archive = S3Archive(f"s3://{bucket}/pre", endpoint_url=moto_url)
    heads = [0]

    def first_head_truncated(parsed: dict[str, Any], **kw: Any) -> None:
        heads[0] += 1
        if heads[0] == 1:
            parsed["ContentLength"] = parsed["ContentLength"] - 1

    archive.client.meta.events.register("after-call.s3.HeadObject", first_head_truncated)
    spooled = SpooledArchive(archive, tmp_path / "spool")
    with pytest.raises(ArchiveUnavailable, match="kept in local spool"):
        await spooled.put(KEY, PNG, content_type="image/png", metadata=META)
    assert spooled.spooled == [KEY] and not spooled.down
    other = KEY.replace("image-1", "image-2")
    stored = await spooled.put(other, PNG, content_type="image/png", metadata=META)
    assert stored.uri == f"s3://{bucket}/{other}"


# ---- end to end ------------------------------------------------------------------------------------------


def _s3_objects(endpoint_url: str, bucket: str) -> dict[str, dict[str, Any]]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            head = s3.head_object(Bucket=bucket, Key=obj["Key"])
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"]] = {"meta": head["Metadata"], "type": head["ContentType"], "body": body}
    return out


def _layout(keys: list[str], run_ids: list[str]) -> set[str]:
    out = set()
    for key in keys:
        for run_id in run_ids:
            key = key.replace(f"runs/{run_id}/", "runs/<run>/")
        out.add(key)
    return out


@pytest.mark.usefixtures("prefect_server", "aws_env")
async def test_s3_archive_gets_the_same_layout_as_a_local_run(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.settings import reset_settings

    from .helpers import paid_submissions, run_flow

    monkeypatch.setenv("LISTINGFLOW_S3_ENDPOINT_URL", moto_url)
    reset_settings()
    _, local = await run_flow(products=["B0CHX1W1XY"])
    assert local.ok, local.failure_report()
    paid = paid_submissions(sandboxes)

    bucket = new_bucket(moto_url)
    state, remote = await run_flow(products=["B0CHX1W1XY"], archive=f"s3://{bucket}/listings/2026")
    assert state.is_completed(), remote.failure_report()
    assert remote.archive == f"s3://{bucket}/listings/2026"
    assert paid_submissions(sandboxes) == paid  # the S3 run reused every paid job

    root = lf_env["archive"]
    local_files = {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(".meta.json")
    }
    objects = _s3_objects(moto_url, bucket)
    assert all(k.startswith("listings/2026/") for k in objects)
    remote_keys = [k.removeprefix("listings/2026/") for k in objects]
    run_ids = [local.run_id, remote.run_id]
    assert _layout(remote_keys, run_ids) == _layout(list(local_files), run_ids)
    assert any("/scale/" in k for k in remote_keys) and any(
        k.endswith("cost-summary.json") for k in remote_keys
    )
    for key, obj in objects.items():
        if not key.endswith(".png"):
            continue
        local_meta = json.loads(
            local_files[key.removeprefix("listings/2026/")]
            .with_name(Path(key).name + ".meta.json")
            .read_text()
        )
        assert obj["type"] == "image/png" and obj["body"].startswith(b"\x89PNG")
        assert obj["meta"]["sha256"] == hashlib.sha256(obj["body"]).hexdigest()
        assert obj["meta"]["source-job-id"] == local_meta["source-job-id"]  # the same paid job


def s3_down_after_preflight(monkeypatch: pytest.MonkeyPatch, endpoint_url: str) -> dict[str, bool]:
    """S3 answers the run's pre-flight test object, then refuses every connection while the returned
    switch says ``down``: an outage that starts once the run is under way."""
    from botocore.exceptions import EndpointConnectionError

    import flows.run_inputs

    switch = {"down": True}

    def refuse(request: Any, **kw: Any) -> None:
        if switch["down"] and "/.preflight" not in request.url:
            raise EndpointConnectionError(endpoint_url=endpoint_url)

    def open_archive(destination: str, *, endpoint_url: str | None = None) -> Any:
        archive = S3Archive(destination, endpoint_url=endpoint_url)
        archive.client.meta.events.register("before-send.s3", refuse)
        return archive

    monkeypatch.setattr(flows.run_inputs, "open_archive", open_archive)
    monkeypatch.setenv("LISTINGFLOW_S3_ENDPOINT_URL", endpoint_url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    return switch


@pytest.mark.usefixtures("prefect_server", "aws_env")
async def test_outputs_spooled_while_s3_is_down_are_archived_by_the_next_run(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.settings import reset_settings

    from .helpers import net_charged, paid_submissions, run_flow

    bucket = new_bucket(moto_url)
    archive = f"s3://{bucket}/out"
    s3 = s3_down_after_preflight(monkeypatch, moto_url)
    reset_settings()
    state, down = await run_flow(products=["B0BQRG7K5N"], steps=["copy", "images"], archive=archive)
    assert state.is_failed()
    product = down.products[0]
    assert product.status in ("failed", "partial")
    assert "spool" in "; ".join(product.failures())
    copy_key = "out/US/B0BQRG7K5N/copy/listingrva-copy.json"
    assert copy_key in down.spooled
    paid = paid_submissions(sandboxes)
    assert paid["listingrva"] == 1

    s3["down"] = False
    state, up = await run_flow(products=["B0BQRG7K5N"], steps=["copy", "images"], archive=archive)
    assert state.is_completed(), up.failure_report()
    assert any("spooled by an earlier run" in n for n in up.notes)
    objects = _s3_objects(moto_url, bucket)
    assert copy_key in objects
    copy_jobs = [j.id for j in sandboxes["listingrva"].paid_jobs() if j.kind == "listing"]
    assert objects[copy_key]["meta"]["source-job-id"] == copy_jobs[0]  # the job the first run paid for
    assert up.products[0].steps["copy"].status == "reused"
    assert paid_submissions(sandboxes)["listingrva"] == 1  # the copy was paid once, across both runs
    assert f"out/runs/{down.run_id}/manifest.json" in objects  # the failed run's manifest, replayed
    assert not [k for k in objects if k.endswith(".preflight")]  # pre-flight's test objects were removed
    assert up.cost.total.net == sum(net_charged(sandboxes).values()) - (
        down.cost.total.net if down.cost else 0
    )


@pytest.mark.usefixtures("prefect_server", "aws_env")
async def test_a_run_while_s3_is_down_spools_its_manifest_and_cost_summary(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.settings import reset_settings

    from .helpers import paid_submissions, run_flow

    # down before the run starts: pre-flight refuses it, and nothing is paid
    monkeypatch.setenv("LISTINGFLOW_S3_ENDPOINT_URL", closed_port_url())
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    reset_settings()
    state, refused = await run_flow(products=["B0BQRG7K5N"], steps=["copy"], archive="s3://some-bucket/out")
    assert state.is_failed() and len(refused.refused) == 1 and "is not writable" in refused.refused[0]
    assert sum(paid_submissions(sandboxes).values()) == 0

    # down once the run is under way: the run's own documents are spooled
    s3_down_after_preflight(monkeypatch, moto_url)
    reset_settings()
    _, down = await run_flow(
        products=["B0BQRG7K5N"], steps=["copy"], archive=f"s3://{new_bucket(moto_url)}/out"
    )
    spool = [str(p) for p in lf_env["home"].rglob("*") if p.is_file()]
    assert any(p.endswith(f"runs/{down.run_id}/manifest.json") for p in spool)
    assert any(p.endswith(f"runs/{down.run_id}/cost-summary.json") for p in spool), spool
    assert any(p.endswith(f"runs/{down.run_id}/index.html") for p in spool) and down.gallery is None, spool
