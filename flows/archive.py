"""Where outputs live once downloaded: a local folder (the embedded default) or any S3 endpoint.

Key layout (all identifiers sanitized, so no traversal and no collisions between products)::

    <prefix>/<country>/<asin>/<step>/<provider>-<label>.<ext>     one output (images: png, jpg or webp,
                                                                    named by their content)
    <prefix>/<country>/<asin>/manifest.json                         what the product has, per step
    <prefix>/runs/<run_id>/manifest.json                            one run: products, failures
    <prefix>/runs/<run_id>/cost-summary.json                        one run: credits and money

Scale outputs go under the variation's own ASIN. Every object carries its content type and metadata
``sha256``, ``source-job-id``, ``provider`` and ``step``. An object counts as archived only once it is
verified (size and SHA-256). Writes are atomic: S3 PUTs are, local files are written to a temporary
name and renamed, so a crash never leaves a half-written manifest a rerun would trust.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from pydantic import BaseModel

_T = TypeVar("_T")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe(part: str) -> str:
    """One key segment: only ``[A-Za-z0-9._-]``, never ``.``/``..``, never empty."""
    cleaned = _SAFE.sub("-", part).strip("-.") or "x"
    return cleaned[:120]


def output_key(prefix: str, country: str, asin: str, step: str, provider: str, label: str, ext: str) -> str:
    parts = [safe(country), safe(asin), safe(step), f"{safe(provider)}-{safe(label)}.{safe(ext)}"]
    return "/".join(([prefix.strip("/")] if prefix.strip("/") else []) + parts)


def product_manifest_key(prefix: str, country: str, asin: str) -> str:
    return "/".join(
        ([prefix.strip("/")] if prefix.strip("/") else []) + [safe(country), safe(asin), "manifest.json"]
    )


def run_key(prefix: str, run_id: str, name: str) -> str:
    return "/".join(([prefix.strip("/")] if prefix.strip("/") else []) + ["runs", safe(run_id), name])


class StoredObject(BaseModel):
    key: str
    uri: str
    size: int
    sha256: str
    content_type: str
    metadata: dict[str, str] = {}


class ArchiveUnavailable(RuntimeError):
    """The archive could not be written after retries (outputs go to the local spool)."""


class ArchiveVerificationFailed(ArchiveUnavailable):
    """The archive answered, but the object it holds is not what was sent (size or SHA-256): that
    object is not archived (it goes to the spool), and the archive itself is not considered down."""


class Archive(Protocol):
    uri: str
    prefix: str

    def put(self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]) -> StoredObject: ...
    def put_file(self, key: str, path: Path, *, content_type: str) -> StoredObject: ...
    def stat(self, key: str) -> StoredObject | None: ...
    def get(self, key: str) -> bytes | None: ...
    def delete(self, key: str) -> None: ...


def write_json_with_list(out: BinaryIO, head: dict[str, Any], key: str, items: Iterable[Any]) -> None:
    """A JSON document: ``head`` plus ``key`` holding ``items``, each item encoded as it comes, one per
    line. Building the whole document as objects first and dumping it held every item three times over
    (objects, str, bytes); run manifests and cost summaries have one item per product, and are written
    to a file (``out``) so that not even their bytes are held."""
    out.write(json.dumps(head, sort_keys=True, default=str)[:-1].encode())
    out.write(f"{', ' if head else ''}{json.dumps(key)}: [\n".encode())
    for i, item in enumerate(items):
        out.write((b",\n" if i else b"") + json.dumps(item, sort_keys=True, default=str).encode())
    out.write(b"\n]}\n")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read a block at a time (never the whole file in memory)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class LocalArchive:
    """A folder; metadata sits in a ``<name>.meta.json`` sidecar next to each object."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.prefix = ""
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"archive key escapes the archive: {key!r}")
        return path

    def put(self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]) -> StoredObject:
        return self._store(key, data, sha256(data), len(data), content_type, metadata)

    def put_file(self, key: str, source: Path, *, content_type: str) -> StoredObject:
        """``put`` for a document written to a file first (the review gallery: 20 MB for 5,000
        products), copied rather than read into memory."""
        return self._store(key, source, file_sha256(source), source.stat().st_size, content_type, {})

    def _store(
        self,
        key: str,
        data: bytes | Path,
        digest: str,
        size: int,
        content_type: str,
        metadata: dict[str, str],
    ) -> StoredObject:
        path = self._path(key)
        meta = {**metadata, "sha256": digest, "content-type": content_type, "size": str(size)}
        try:
            # Two processes may write one key at once (overlapping runs archiving a shared product's
            # manifest): without the lock one writer's bytes can meet the other's sidecar, fail the
            # check below and mark the whole archive down for that run.
            with _key_lock(path):
                _atomic_write(path, data)
                _atomic_write(path.with_name(path.name + ".meta.json"), json.dumps(meta, indent=1).encode())
                stored = self.stat(key)
        except OSError as exc:  # disk full, permissions, a vanished mount: the archive is unavailable
            raise ArchiveUnavailable(f"{path}: {type(exc).__name__}: {exc.strerror or exc}") from None
        if stored is None or stored.sha256 != digest or stored.size != size:
            raise ArchiveVerificationFailed(f"verification failed after writing {key}")
        return stored

    def _read(self, key: str) -> tuple[Path, bytes, dict[str, Any]] | None:
        """The object and its metadata, only if the bytes match the recorded size and SHA-256."""
        path = self._path(key)
        meta_path = path.with_name(path.name + ".meta.json")
        try:
            meta = json.loads(meta_path.read_text())
            data = path.read_bytes()
        except (OSError, ValueError):
            return None
        if (
            not isinstance(meta, dict)
            or sha256(data) != meta.get("sha256")
            or str(len(data)) != str(meta.get("size", len(data)))
        ):
            return None  # a torn or tampered object is not archived (and never trusted)
        return path, data, meta

    def stat(self, key: str) -> StoredObject | None:
        """The object's record if its bytes match it, hashed from the file a block at a time: read
        whole, checking a 5,000-product gallery page (20 MB) doubled the run's peak memory at its end."""
        path = self._path(key)
        try:
            meta = json.loads(path.with_name(path.name + ".meta.json").read_text())
            digest, size = file_sha256(path), path.stat().st_size
        except (OSError, ValueError):
            return None
        if (
            not isinstance(meta, dict)
            or digest != meta.get("sha256")
            or str(size) != str(meta.get("size", size))
        ):
            return None  # a torn or tampered object is not archived (and never trusted)
        return StoredObject(
            key=key,
            uri=str(path),
            size=size,
            sha256=meta["sha256"],
            content_type=meta.get("content-type", ""),
            metadata=meta,
        )

    def get(self, key: str) -> bytes | None:
        found = self._read(key)
        return None if found is None else found[1]

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".meta.json").unlink(missing_ok=True)
        except OSError as exc:
            raise ArchiveUnavailable(f"{path}: {type(exc).__name__}: {exc.strerror or exc}") from None


def _key_lock(path: Path) -> Any:
    """A per-object lock shared by every process on this host (kept outside the archive folder)."""
    from filelock import FileLock

    locks = Path(tempfile.gettempdir()) / "listingflow-archive-locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{sha256(str(path).encode())[:40]}.lock"), timeout=120)


def _atomic_write(path: Path, data: bytes | Path) -> None:
    """Write ``data`` (the bytes, or a file's contents, copied without reading it whole) to a fresh
    temporary name, then rename. Created with mode 0666 so the umask decides (0644 typically), like
    any file the user writes: ``mkstemp`` would make every object 0600, unreadable to whoever serves or
    reads the archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, Path):
                with data.open("rb") as source:
                    shutil.copyfileobj(source, fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class S3Archive:
    """Any S3 endpoint (AWS, MinIO, moto) through boto3 with its standard retry mode."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None, max_attempts: int | None = None) -> None:
        import boto3
        from botocore.config import Config

        if max_attempts is None:  # attempts per call, the first included: AWS_MAX_ATTEMPTS, else 5
            max_attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise ValueError(f"archive URI has no bucket: {uri!r}")
        self.bucket, self.prefix, self.uri = bucket, prefix.strip("/"), uri.rstrip("/")
        retries = {"mode": "standard", "total_max_attempts": max_attempts}
        config = Config(retries=retries, connect_timeout=5, read_timeout=30)
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def put(self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = sha256(data)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                Metadata={**metadata, "sha256": digest},
            )
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveUnavailable(f"s3://{self.bucket}/{key}: {exc}") from None
        return self._verified(key, digest, len(data))

    def put_file(self, key: str, source: Path, *, content_type: str) -> StoredObject:
        """``put`` from a file, streamed by boto3's transfer manager (multipart when large)."""
        from botocore.exceptions import BotoCoreError, ClientError

        digest, size = file_sha256(source), source.stat().st_size
        extra = {"ContentType": content_type, "Metadata": {"sha256": digest}}
        try:
            self.client.upload_file(str(source), self.bucket, key, ExtraArgs=extra)
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveUnavailable(f"s3://{self.bucket}/{key}: {exc}") from None
        return self._verified(key, digest, size)

    def _verified(self, key: str, digest: str, size: int) -> StoredObject:
        """The uploaded object, read back: archived only if its size and SHA-256 are the ones sent."""
        stored = self.stat(key)
        if stored is None or stored.sha256 != digest or stored.size != size:
            raise ArchiveVerificationFailed(f"s3://{self.bucket}/{key}: verification failed after upload")
        return stored

    def stat(self, key: str) -> StoredObject | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ArchiveUnavailable(f"s3://{self.bucket}/{key}: {exc}") from None
        except BotoCoreError as exc:
            raise ArchiveUnavailable(f"s3://{self.bucket}/{key}: {exc}") from None
        meta = head.get("Metadata", {})
        return StoredObject(
            key=key,
            uri=f"s3://{self.bucket}/{key}",
            size=head["ContentLength"],
            sha256=meta.get("sha256", ""),
            content_type=head.get("ContentType", ""),
            metadata=meta,
        )

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ArchiveUnavailable(f"s3://{self.bucket}/{key}: {exc}") from None
        except BotoCoreError as exc:  # connection refused or lost, timeouts: after botocore's retries
            raise ArchiveUnavailable(f"s3://{self.bucket}/{key}: {exc}") from None

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveUnavailable(f"s3://{self.bucket}/{key}: {exc}") from None


def open_archive(destination: str, *, endpoint_url: str | None = None) -> Archive:
    if destination.startswith("s3://"):
        return S3Archive(destination, endpoint_url=endpoint_url)
    return LocalArchive(destination)


class SpooledArchive:
    """Writes through to the archive; when it stays unreachable, keeps the bytes in a local spool
    so nothing is lost, and replays the spool into the archive on the next run.

    Once the archive has failed (after the client's own retries), it is not tried again for
    ``retry_after_seconds``: thousands of outputs must not each wait out a full retry cycle against
    an archive that is down. Meanwhile writes go straight to the spool, ``stat`` reports nothing
    archived (a spooled output is not archived) and reads raise ``ArchiveUnavailable``."""

    def __init__(self, archive: Archive, spool: Path, *, retry_after_seconds: float = 60.0) -> None:
        self.archive = archive
        self.spool = LocalArchive(spool / safe(archive.uri))
        self.prefix = archive.prefix
        self.uri = archive.uri
        self.spooled: list[str] = []
        self.retry_after_seconds = retry_after_seconds
        self._down_until = 0.0
        self._down_reason = ""

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def _mark_down(self, exc: ArchiveUnavailable) -> None:
        self._down_until = time.monotonic() + self.retry_after_seconds
        self._down_reason = str(exc)

    async def _call(self, fn: Callable[..., _T], *args: Any, **kw: Any) -> _T:
        if self.down:
            raise ArchiveUnavailable(f"archive {self.uri} unreachable (last error: {self._down_reason})")
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except ArchiveVerificationFailed:
            raise  # one bad object, not an unreachable archive
        except ArchiveUnavailable as exc:
            self._mark_down(exc)
            raise

    async def put(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]
    ) -> StoredObject:
        return await self._store(
            key, lambda target: target.put(key, data, content_type=content_type, metadata=metadata)
        )

    async def put_file(self, key: str, source: Path, *, content_type: str) -> StoredObject:
        """``put`` from a file (copied into the spool too when the archive cannot take it)."""
        return await self._store(key, lambda target: target.put_file(key, source, content_type=content_type))

    async def _store(self, key: str, store: Callable[[Archive], StoredObject]) -> StoredObject:
        """``store`` into the archive or, when it cannot be reached, into the local spool (raising
        ``ArchiveUnavailable`` that says so)."""
        try:
            return await self._call(store, self.archive)
        except ArchiveUnavailable:
            stored = await asyncio.to_thread(store, self.spool)
            self.spooled.append(key)
            raise ArchiveUnavailable(f"{key} kept in local spool {stored.uri}; archive unreachable") from None

    async def stat(self, key: str) -> StoredObject | None:
        """The verified archived object, or None: also when the archive cannot be reached, so the
        caller produces the output again and ``put`` keeps it in the spool."""
        try:
            return await self._call(self.archive.stat, key)
        except ArchiveUnavailable:
            return None

    async def get(self, key: str) -> bytes | None:
        return await self._call(self.archive.get, key)

    async def put_json(self, key: str, value: Any) -> StoredObject:
        body = json.dumps(value, indent=2, sort_keys=True, default=str).encode()
        return await self.put(key, body, content_type="application/json", metadata={})

    async def get_json(self, key: str) -> Any | None:
        raw = await self.get(key)
        return None if raw is None else json.loads(raw)

    async def replay_spool(self) -> list[str]:
        """Upload what an earlier run could not archive; returns the keys now archived."""
        done: list[str] = []
        root = self.spool.root
        if not root.is_dir():
            return done
        for meta_path in sorted(root.rglob("*.meta.json")):
            key = str(meta_path.relative_to(root))[: -len(".meta.json")]
            stored = self.spool.stat(key)
            if stored is None:
                continue
            data = self.spool.get(key) or b""
            meta = {k: v for k, v in stored.metadata.items() if k not in ("sha256", "content-type", "size")}
            await self._call(self.archive.put, key, data, content_type=stored.content_type, metadata=meta)
            (root / key).unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            done.append(key)
        return done
