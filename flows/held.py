"""Held submissions: paid submissions whose outcome a run could not establish, listed for a person.

The submission record itself (a held ``JobRef`` cached under the submission's key) is what stops any
later run from resending it. This store is the index a person reads (``listingflow unknown``): one JSON
file per submission key under the state folder, removed when the submission is sent again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from providers.contract import JobRef


class HeldRecord(BaseModel):
    key: str
    provider: str
    step: str
    product: str
    label: str
    outcome: str
    credits: int | None
    reason: str
    run_id: str | None
    held_at: float


class HeldStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def record(self, ref: JobRef, *, product: str, key: str, label: str, credits: int | None) -> None:
        """Index a held submission (again: a later run that finds it held keeps the first record)."""
        if self._path(key).exists():
            return
        rec = HeldRecord(
            key=key,
            provider=ref.provider,
            step=str(ref.step),
            product=product,
            label=label,
            outcome=ref.outcome,
            credits=credits,
            reason=str(ref.meta.get("reason", "")),
            run_id=ref.host.run_id,
            held_at=time.time(),
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._path(key).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(rec.model_dump_json(indent=2))
        tmp.replace(self._path(key))

    def release(self, key: str) -> None:
        """The submission was sent again: it is no longer held."""
        self._path(key).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[HeldRecord]:
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.json")):
            try:
                yield HeldRecord.model_validate(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
