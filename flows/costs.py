"""The cost summary: credits charged, refunded and net per provider, step and product.

Only jobs submitted by *this* run cost anything; outputs reused from earlier runs are listed apart at
zero cost. A job whose provider does not report its price is counted as unknown, never as 0, and money
is shown only where a price per credit is set.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, Field


class JobCost(BaseModel):
    provider: str
    step: str
    product: str
    job_id: str
    charged: int | None
    refunded: int = 0
    reused: bool = False
    original_run: str | None = None

    @property
    def net(self) -> int | None:
        return None if self.charged is None else self.charged - self.refunded


class CostLine(BaseModel):
    scope: Literal["provider", "step", "product", "total"]
    provider: str = "*"
    step: str = "*"
    product: str = "*"
    jobs: int = 0
    reused_jobs: int = 0
    unknown_jobs: int = Field(0, description="paid jobs whose cost the provider did not report")
    charged: int = 0
    refunded: int = 0
    net: int = 0
    reused_credits: int = Field(0, description="what the reused outputs cost when first paid")
    money: float | None = Field(None, description="net money; None when not computable")
    money_status: Literal["ok", "no_price", "unknown_credits"] = "no_price"

    def money_text(self, currency: str) -> str:
        if self.money_status == "ok" and self.money is not None:
            return f"{self.money:.2f} {currency}"
        return "unknown" if self.money_status == "unknown_credits" else "-"


class CostSummary(BaseModel):
    run_id: str
    currency: str = "USD"
    lines: list[CostLine]
    requests: dict[str, int] = Field(default_factory=dict, description="HTTP requests per provider")
    skipped: list[str] = Field(default_factory=list, description="work not submitted (budget, quota)")

    def by(self, scope: str) -> list[CostLine]:
        return [line for line in self.lines if line.scope == scope]

    @property
    def total(self) -> CostLine:
        return self.by("total")[0]

    def table(self) -> list[dict[str, object]]:
        return [
            {
                "scope": line.scope, "provider": line.provider, "step": line.step, "product": line.product,
                "jobs": line.jobs, "charged": line.charged, "refunded": line.refunded, "net": line.net,
                "unknown cost jobs": line.unknown_jobs, "reused": line.reused_jobs,
                "money": line.money_text(self.currency),
            }  # fmt: skip
            for line in self.lines
        ]

    def markdown(self) -> str:
        out = [f"# Cost summary, run `{self.run_id}`", ""]
        out.append("| provider | step | jobs | charged | refunded | net | reused (free) | money | requests |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for line in self.by("step"):
            out.append(
                f"| {line.provider} | {line.step} | {line.jobs} | {_c(line.charged, line.unknown_jobs)} | "
                f"{line.refunded} | {_c(line.net, line.unknown_jobs)} | {line.reused_jobs} | "
                f"{line.money_text(self.currency)} | |"
            )
        for line in self.by("provider"):
            out.append(
                f"| **{line.provider}** | all | {line.jobs} | {_c(line.charged, line.unknown_jobs)} | "
                f"{line.refunded} | {_c(line.net, line.unknown_jobs)} | {line.reused_jobs} | "
                f"{line.money_text(self.currency)} | {self.requests.get(line.provider, 0)} |"
            )
        t = self.total
        out.append(
            f"| **total** | | {t.jobs} | {_c(t.charged, t.unknown_jobs)} | {t.refunded} | "
            f"{_c(t.net, t.unknown_jobs)} | {t.reused_jobs} | {t.money_text(self.currency)} | "
            f"{sum(self.requests.values())} |"
        )
        if self.skipped:
            out += ["", "**Not submitted:**", *[f"- {s}" for s in self.skipped]]
        return "\n".join(out)


def _c(credits: int, unknown: int) -> str:
    return f"{credits} + {unknown} unknown" if unknown else str(credits)


def summarize(
    run_id: str,
    jobs: list[JobCost],
    *,
    price_per_credit: dict[str, float],
    currency: str = "USD",
    requests: dict[str, int] | None = None,
    skipped: list[str] | None = None,
) -> CostSummary:
    groups: dict[tuple[str, str, str, str], CostLine] = {}

    def line(scope: str, provider: str = "*", step: str = "*", product: str = "*") -> CostLine:
        key = (scope, provider, step, product)
        if key not in groups:
            groups[key] = CostLine(scope=scope, provider=provider, step=step, product=product)  # type: ignore[arg-type]
        return groups[key]

    for job in jobs:
        targets = [
            line("provider", job.provider),
            line("step", job.provider, job.step),
            line("product", job.provider, job.step, job.product),
            line("total"),
        ]
        for target in targets:
            if job.reused:
                target.reused_jobs += 1
                target.reused_credits += job.net or 0
                continue
            target.jobs += 1
            if job.charged is None:
                target.unknown_jobs += 1
            else:
                target.charged += job.charged
                target.refunded += job.refunded
                target.net += job.charged - job.refunded
    if ("total", "*", "*", "*") not in groups:
        line("total")
    for key, target in groups.items():
        paid = {j.provider for j in _matching(jobs, key)}
        if any(p not in price_per_credit for p in paid):
            target.money_status = "no_price"
        elif target.unknown_jobs:
            target.money_status = "unknown_credits"
        else:
            target.money_status = "ok"
            target.money = sum((j.net or 0) * price_per_credit[j.provider] for j in _matching(jobs, key))
    ordered = sorted(groups.values(), key=lambda ln: (["provider", "step", "product", "total"].index(ln.scope),
                                                       ln.provider, ln.step, ln.product))  # fmt: skip
    return CostSummary(run_id=run_id, currency=currency, lines=ordered, requests=requests or {},
                       skipped=skipped or [])  # fmt: skip


def _matching(jobs: list[JobCost], key: tuple[str, str, str, str]) -> list[JobCost]:
    """The jobs this run paid for that fall under one summary line."""
    _, provider, step, product = key
    return [
        j for j in jobs
        if not j.reused and provider in ("*", j.provider) and step in ("*", j.step) and product in ("*", j.product)
    ]  # fmt: skip


def by_provider(jobs: list[JobCost]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for j in jobs:
        if not j.reused and j.net is not None:
            out[j.provider] += j.net
    return dict(out)
