"""The submission locks two overlapping runs share (``CrashSafeFileSystemLockManager``)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from flows.locks import CrashSafeFileSystemLockManager


def _manager(tmp_path: Path) -> CrashSafeFileSystemLockManager:
    return CrashSafeFileSystemLockManager(tmp_path / "locks", hold_seconds=60)


def test_a_lock_read_while_its_holder_writes_it_is_held(tmp_path: Path) -> None:
    holder, reader = _manager(tmp_path), _manager(tmp_path)
    assert holder.acquire_lock("submit-x", holder="run-1")
    path = holder._lock_path_for_key("submit-x")
    written = path.read_bytes()
    path.write_bytes(b"")  # the moment between Prefect's touch() and its write of the holder

    def finish_writing() -> None:
        time.sleep(0.1)
        path.write_bytes(written)

    writer = threading.Thread(target=finish_writing)
    writer.start()
    try:
        assert reader.is_locked("submit-x")  # read again until written: never a ValueError
        assert not reader.is_lock_holder("submit-x", "run-2")
    finally:
        writer.join()


def test_a_lock_file_never_written_is_removed(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    manager._ensure_lock_files_directory_exists()
    path = manager._lock_path_for_key("submit-y")
    path.touch()  # its holder died between creating and writing it
    assert not manager.is_locked("submit-y")
    assert not path.exists()
    assert manager.acquire_lock("submit-y", holder=f"run-{os.getpid()}")
