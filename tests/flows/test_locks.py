"""The submission locks two overlapping runs share (``CrashSafeFileSystemLockManager``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from prefect.types._datetime import now

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


async def test_a_free_lock_is_taken_at_once_and_read_by_another_process_as_prefect_wrote_it(
    tmp_path: Path,
) -> None:
    first, other = _manager(tmp_path), _manager(tmp_path)  # two runs, each its own manager
    assert await first.aacquire_lock("member-x", holder="run-1")
    assert other.is_locked("member-x") and other.is_lock_holder("member-x", "run-1")
    info = other._get_lock_info("member-x", use_cache=False)
    assert info is not None and 55 < (info["expiration"] - now("UTC")).total_seconds() <= 60
    # held: the other run waits for it (here only briefly), then takes it once it is released
    assert not await other.aacquire_lock("member-x", holder="run-2", acquire_timeout=0.2)
    first.release_lock("member-x", "run-1")
    assert await other.aacquire_lock("member-x", holder="run-2", acquire_timeout=0.2)
    assert first.is_lock_holder("member-x", "run-2") and not first.is_lock_holder("member-x", "run-1")


async def test_a_lock_whose_holder_process_is_gone_is_taken(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    gone, alive = _manager(tmp_path), _manager(tmp_path)
    assert await gone.aacquire_lock("member-y", holder="run-killed")
    owner = gone._owner_path("member-y")
    owner.write_text(owner.read_text().replace(str(os.getpid()), dead.stdout.decode().strip()))
    assert await alive.aacquire_lock("member-y", holder="run-next", acquire_timeout=0.2)
    assert alive.is_lock_holder("member-y", "run-next")
