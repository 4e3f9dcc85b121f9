"""Locks that keep two overlapping runs from paying for the same submission.

The submit task runs under SERIALIZABLE isolation with one of these lock managers (``flows.tasks``):
file locks on one host, Redis locks (``flows.redis_locks``) when several hosts share a setup. Either
way a lock whose holder died is not kept forever.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic_core
from prefect.locking.filesystem import FileSystemLockManager
from prefect.types._datetime import now

from flows.settings import Settings


class CrashSafeFileSystemLockManager(FileSystemLockManager):
    """File locks that a crashed holder cannot keep.

    Prefect's transactions acquire locks without a hold timeout and with a random holder id, so a run
    killed with SIGKILL mid-submit would block every later run forever. Each lock here records the
    holder's host and pid; a lock whose holder process on this host is gone is stale and broken, and
    every lock also expires after ``hold_seconds`` (for holders on other hosts).
    """

    def __init__(self, lock_files_directory: Path, hold_seconds: float) -> None:
        super().__init__(lock_files_directory)
        self.hold_seconds = hold_seconds

    def _owner_path(self, key: str) -> Path:
        return self._lock_path_for_key(key).with_suffix(".owner")

    def _claim(self, key: str) -> None:
        self._owner_path(key).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))

    def _holder_gone(self, key: str) -> bool:
        try:
            owner = json.loads(self._owner_path(key).read_text())
        except (OSError, ValueError):
            return False
        if owner.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (OSError, KeyError, ValueError):
            return False
        return False

    # Prefect creates a lock file and then writes its holder into it: a run reading the same key in
    # between (two overlapping runs, tests/flows/test_reruns.py) finds an empty file, which Prefect's
    # reader fails on (ValueError from pydantic_core). Read again until the holder has written; a file
    # still empty after half a second belongs to a holder that died between the two steps: remove it.
    _UNWRITTEN_READS = 50
    _UNWRITTEN_PAUSE = 0.01

    def _get_lock_info(self, key: str, use_cache: bool = True) -> Any:
        for _ in range(self._UNWRITTEN_READS):
            try:
                return super()._get_lock_info(key, use_cache=use_cache)
            except ValueError:
                time.sleep(self._UNWRITTEN_PAUSE)
        return self._break(key)

    async def _aget_lock_info(self, key: str, use_cache: bool = True) -> Any:
        for _ in range(self._UNWRITTEN_READS):
            try:
                return await super()._aget_lock_info(key, use_cache=use_cache)
            except ValueError:
                await asyncio.sleep(self._UNWRITTEN_PAUSE)
        return self._break(key)

    def _break(self, key: str) -> None:
        """Remove a lock whose holder is gone: its file, its owner record and the cached copy."""
        self._lock_path_for_key(key).unlink(missing_ok=True)
        self._owner_path(key).unlink(missing_ok=True)
        self._locks.pop(key, None)

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        if not super().is_locked(key, use_cache=use_cache):
            return False
        if self._holder_gone(key):
            self._break(key)
            return False
        return True

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        acquired = super().acquire_lock(key, holder, acquire_timeout, hold_timeout or self.hold_seconds)
        if acquired:
            self._claim(key)
        return acquired

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        hold = hold_timeout or self.hold_seconds
        if self._acquire_if_free(key, holder, hold):
            return True
        acquired = await super().aacquire_lock(key, holder, acquire_timeout, hold)
        if acquired:
            self._claim(key)
        return acquired

    def _acquire_if_free(self, key: str, holder: str, hold: float) -> bool:
        """A free lock taken at once, in this thread; False if it is held (or taken meanwhile).

        Prefect's async acquisition makes five thread hops (mkdir, touch, open, write, close) for what
        are local file operations of microseconds: on the way to a run's first batch, 20 products'
        locks took 190 ms behind the other steps' task runs (benchmark phase C, traced). The file is
        written as Prefect writes it, so its readers and ``release_lock`` see no difference."""
        if self.is_locked(key):
            return False
        self._ensure_lock_files_directory_exists()
        path = self._lock_path_for_key(key)
        try:
            path.touch(exist_ok=False)
        except FileExistsError:  # another holder took it meanwhile: wait for it the usual way
            return False
        expiration = now("UTC") + timedelta(seconds=hold)
        path.write_bytes(pydantic_core.to_json({"holder": holder, "expiration": str(expiration)}))
        self._locks[key] = {"holder": holder, "expiration": expiration, "path": path}
        self._claim(key)
        return True

    def release_lock(self, key: str, holder: str) -> None:
        super().release_lock(key, holder)
        self._owner_path(key).unlink(missing_ok=True)


def lock_manager(settings: Settings) -> Any:
    if settings.redis_url:
        from .redis_locks import ExpiringRedisLockManager  # optional: pip install 'listingflow[redis]'

        return ExpiringRedisLockManager(settings.redis_url, settings.lock_hold_seconds)
    return CrashSafeFileSystemLockManager(settings.locks_path, settings.lock_hold_seconds)
