"""A run's outcome: ``RunSummary`` (what the CLI's report, the run manifest and the flow run's logs are
made of) and the flow run's final state that carries it."""

from __future__ import annotations

from typing import Any

from prefect.states import Cancelled, Completed, Failed, State
from pydantic import BaseModel, Field

from .catalog import RowError
from .costs import CostSummary
from .pipeline import ProductRecord


class RunSummary(BaseModel):
    run_id: str
    catalog: str
    archive: str
    started_at: float
    finished_at: float
    products: list[ProductRecord] = Field(default_factory=list)
    rejected_rows: list[RowError] = Field(default_factory=list)
    cost: CostSummary | None = None
    refused: list[str] = Field(default_factory=list, description="why the run did not start")
    spooled: list[str] = Field(default_factory=list, description="outputs kept locally, archive down")
    notes: list[str] = Field(default_factory=list)
    interrupted: str | None = Field(None, description="why the run stopped early (SIGINT, SIGTERM)")
    in_flight: list[dict[str, Any]] = Field(
        default_factory=list, description="jobs left running, resumed next run"
    )
    gallery: str | None = Field(None, description="the run's review page: a file:// URL or an s3:// URI")

    def count(self, status: str) -> int:
        return sum(1 for p in self.products if p.status == status)

    @property
    def ok(self) -> bool:
        return (
            not self.refused
            and not self.interrupted
            and not any(p.status in ("failed", "partial") for p in self.products)
        )

    @property
    def status(self) -> str:
        """The run's outcome in one word, as the run manifest records it."""
        if self.refused:
            return "refused"
        if self.interrupted:
            return "interrupted"
        return "completed" if self.ok else "failed"

    def headline(self) -> str:
        if self.refused:
            return "run refused: " + "; ".join(self.refused)
        parts = [f"{self.count('complete')} complete"]
        for status in ("partial", "failed", "deferred", "interrupted", "skipped"):
            if self.count(status):
                parts.append(f"{self.count(status)} {status}")
        if self.rejected_rows:
            parts.append(f"{len(self.rejected_rows)} rejected rows")
        line = f"{len(self.products)} products: " + ", ".join(parts)
        if self.interrupted:
            jobs = len(self.in_flight)
            line = (
                f"run interrupted ({self.interrupted}): {line}; "
                f"{jobs} job{'' if jobs == 1 else 's'} in flight "
                "kept, the same command resumes them without paying again"
            )
        return line

    def failure_report(self, include_interrupted: bool = True) -> list[str]:
        lines = []
        for p in self.products:
            if p.status == "interrupted" and not include_interrupted:
                continue
            for failure in p.failures():
                lines.append(f"{p.key} {failure}")
        lines += [str(r) for r in self.rejected_rows]
        return lines


def final_state(summary: RunSummary) -> State:
    """The flow run's final state; its result is the summary
    (``await state.aresult(raise_on_failure=False)``)."""
    if summary.refused:
        return Failed(message=summary.headline(), data=summary)
    if summary.interrupted:
        return Cancelled(message=summary.headline(), data=summary)
    if not summary.ok:
        return Failed(
            message=summary.headline() + " | " + "; ".join(summary.failure_report()[:20]), data=summary
        )
    return Completed(message=summary.headline(), data=summary)
