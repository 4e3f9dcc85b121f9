"""Writes to the Prefect server's limit tables (create, take, renew, give back a lease), one at a time.

Prefect's local server runs on SQLite. There a write transaction that meets another writer fails at
once with 503, which Prefect's client retries only after ~2 s (``2 ** attempt``, jittered; with its
retries turned off it still sleeps those 2 s before returning the 503). A run asks for its first lease
of every limit at once: measured against ``listingflow run``'s local server, six lease requests sent
together took 1.7-2.4 s each (four of them met a 503), one after another 22 ms for all six. So this
process sends its limit writes one at a time. What remains are collisions with the server's own
writers (its services recording the run's first task runs), ~2 s each on SQLite at a run's start;
PostgreSQL has neither, and the queue costs it ~4 ms per write. Run Prefect on PostgreSQL for
catalogs (README, Performance).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

_T = TypeVar("_T")

_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def limit_write(call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()``, one request to the server's limit endpoints, once no other one of this process is
    under way (the lock of this event loop: an ``asyncio.Lock`` belongs to the loop it is used on)."""
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    async with lock:
        return await call()
