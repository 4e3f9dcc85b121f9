"""The Redis lock manager for submissions on several hosts (``LISTINGFLOW_REDIS_URL``).

prefect-redis's ``RedisLockManager`` with two fixes, both needed for overlapping runs on different
hosts:

* **Locks taken by async tasks are released.** Prefect's ``AsyncTransaction`` acquires a lock with
  ``aacquire_lock`` (an asyncio Redis lock) but releases it with the synchronous ``release_lock``,
  which calls that asyncio lock's ``release()`` without awaiting it: the lock is never released, and
  the other run waits for it forever (seen with prefect 3.9.1 and prefect-redis 0.3.0, "coroutine
  'Lock.release' was never awaited"; ``tests/deployments/test_multihost.py``). Here such a lock is
  released through the synchronous client, by its token.
* **A crashed holder's lock expires.** Prefect acquires without a hold timeout, so a run killed
  mid-submit would keep its lock for good; here every lock expires after ``hold_seconds``
  (``LISTINGFLOW_LOCK_HOLD_SECONDS``, like the file locks on one host).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from prefect_redis.locking import RedisLockManager  # optional: pip install 'listingflow[redis]'
from redis.asyncio.lock import Lock as AsyncLock
from redis.lock import Lock


class ExpiringRedisLockManager(RedisLockManager):
    """Redis locks that are released by async tasks too, and expire after ``hold_seconds``."""

    def __init__(self, url: str, hold_seconds: float) -> None:
        parts = urlsplit(url)
        self.hold_seconds = hold_seconds
        super().__init__(
            host=parts.hostname or "localhost",
            port=parts.port or 6379,
            db=int((parts.path or "/0").strip("/") or 0),
            username=parts.username or None,
            password=parts.password,
            ssl=parts.scheme == "rediss",
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "hold_seconds": self.hold_seconds}

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        acquired: bool = super().acquire_lock(key, holder, acquire_timeout, hold_timeout or self.hold_seconds)
        return acquired

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        acquired: bool = await super().aacquire_lock(
            key, holder, acquire_timeout, hold_timeout or self.hold_seconds
        )
        return acquired

    def release_lock(self, key: str, holder: str) -> None:
        name = self._lock_name_for_key(key)
        held = self._locks.get(name)
        if isinstance(held, AsyncLock):
            # the same lock (name and token) on the synchronous client, which releases it at once
            twin = Lock(self.client, name, timeout=held.timeout, thread_local=False)
            twin.local.token = held.local.token
            self._locks[name] = twin
        super().release_lock(key, holder)
