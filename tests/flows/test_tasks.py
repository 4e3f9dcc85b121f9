"""The cache records the run reads and writes itself (``flows.tasks.CacheReader``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from prefect.filesystems import LocalFileSystem

from flows.intents import Intents
from flows.tasks import CacheReader


async def test_a_local_result_folder_is_read_and_written_without_worker_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An intent record is written on every submission's way to the wire: in place, no hop to a worker
    thread (each waits for a CPU on a loaded machine). The records are Prefect's own, as before."""

    async def no_threads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a worker thread was used")

    cache = CacheReader(LocalFileSystem(basepath=str(tmp_path)))
    intents = Intents(cache)
    monkeypatch.setattr(anyio.to_thread, "run_sync", no_threads)
    await intents.begin(["submit-a", "submit-b"], "run-1", timeout=30)
    pending = await intents.pending("submit-a")
    assert pending is not None and pending.run_id == "run-1" and pending.answer_by is not None
    await intents.end(["submit-a"], "run-1")
    assert await intents.pending("submit-a") is None and await intents.pending("submit-b") is not None
    assert await cache.get("never-written") is None
    monkeypatch.undo()
    # what Prefect's async reader (remote storage's path) makes of the same record
    record = await cache.store.aread("intent-submit-b")
    assert record.result["run_id"] == "run-1"
