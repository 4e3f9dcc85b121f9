"""Write-ahead records of paid submissions: a run killed while a paid request was on its way.

A paid POST's job reference is persisted (the submit task's cached result) only once its answer has
arrived. A run killed (SIGKILL, a lost machine) between sending it and that moment leaves no record,
yet the provider may have created and billed the job: a later run would send it again and pay twice.
So just before sending, an *intent* is written under the submission's key (and, for a cross-product
batch, under each member's key) in the same result storage as the cached submissions, and marked done
once the answer is persisted. A later run that finds an intent not marked done resolves it like any
ambiguous submission (``flows.submission``): a provider lookup if the plugin has one, else *held*.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel


class Intent(BaseModel):
    run_id: str
    started: float
    done: bool = False
    answer_by: float | None = None
    """When the sending run would have given up waiting for the answer (its request timeout)."""


class Intents:
    """Intent records in the result store (``tasks.CacheReader``: shared by every host of a setup)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @staticmethod
    def _key(key: str) -> str:
        return f"intent-{key}"

    async def pending(self, key: str) -> Intent | None:
        """An earlier attempt at this submission whose answer was never persisted, if any."""
        found = await self.store.get(self._key(key))
        if isinstance(found, dict):
            found = Intent.model_validate(found)
        return found if isinstance(found, Intent) and not found.done else None

    async def begin(self, keys: list[str], run_id: str, *, timeout: float | None = None) -> None:
        now = time.time()
        record = Intent(run_id=run_id, started=now, answer_by=now + timeout if timeout else None).model_dump()
        for key in keys:
            await self.store.put(self._key(key), record)

    async def end(self, keys: list[str], run_id: str) -> None:
        record = Intent(run_id=run_id, started=time.time(), done=True).model_dump()
        for key in keys:
            await self.store.put(self._key(key), record)


class NoIntents(Intents):
    """For code run outside a flow (unit tests of the pieces): nothing is recorded."""

    def __init__(self) -> None:
        super().__init__(None)

    async def pending(self, key: str) -> Intent | None:
        return None

    async def begin(self, keys: list[str], run_id: str, *, timeout: float | None = None) -> None:
        return None

    async def end(self, keys: list[str], run_id: str) -> None:
        return None
