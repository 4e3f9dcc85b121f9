"""Expected credits for a run, from published prices, without spending anything.

Each product's steps are built exactly as the run would build them (same request models, same
validation), with placeholders where an upstream output is not known yet. Steps an earlier run already
produced (recorded in the product manifest) are not counted unless forced; unpublished prices are
counted as unknown jobs, never as free.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel, Field

from providers.contract import STEP_SPECS, ListingCopy, Product, Provider, report_order
from providers.errors import ProviderError

from .params import RunParameters

PLACEHOLDER_IMAGE = "https://placeholder.invalid/main.png"


class EstimateLine(BaseModel):
    provider: str
    step: str
    jobs: int = 0
    credits: int = 0
    unknown_jobs: int = 0
    already_done: int = 0


class Estimate(BaseModel):
    lines: list[EstimateLine] = Field(default_factory=list)
    invalid: list[str] = Field(default_factory=list, description="products whose requests fail validation")

    def credits_for(self, provider: str | None = None) -> int:
        return sum(ln.credits for ln in self.lines if provider is None or ln.provider == provider)

    def unknown_for(self, provider: str | None = None) -> int:
        return sum(ln.unknown_jobs for ln in self.lines if provider is None or ln.provider == provider)


def estimate_run(
    params: RunParameters,
    products: list[Product],
    providers: dict[str, Provider],
    manifests: dict[str, dict[str, Any] | None] | None = None,
) -> Estimate:
    lines: dict[tuple[str, str], EstimateLine] = {}
    invalid: list[str] = []
    manifests = manifests or {}
    for product in products:
        p = params.for_product(product.overrides)
        done = (manifests.get(product.key) or {}).get("steps", {})
        ctx = p.context_for(
            product,
            copy_result=ListingCopy(title=product.title, bullets=[product.title]),
            main_image_url=(product.image_urls[0] if product.image_urls else PLACEHOLDER_IMAGE),
            prepared={"product_id": "prod_estimate"},
        )
        for step in p.ordered_steps():
            name = p.providers.for_step(step)
            line = lines.setdefault((name, str(step)), EstimateLine(provider=name, step=str(step)))
            previous = done.get(str(step)) or {}
            if (
                step not in p.force
                and previous.get("status") in ("done", "reused")
                and previous.get("provider") == name
            ):
                line.already_done += 1
                continue
            plugin = providers[name]
            contexts = STEP_SPECS[step].fan_out(ctx)
            try:
                requests = [r for c in contexts for r in plugin.build_requests(step, c)]
            except ProviderError as exc:
                invalid.append(f"{product.key} {step}: {exc}")
                continue
            for request in requests:
                line.jobs += 1
                credits = plugin.estimate_credits(step, request)
                if credits is None:
                    line.unknown_jobs += 1
                else:
                    line.credits += credits
    ordered = sorted(lines.values(), key=lambda ln: (ln.provider, report_order(ln.step)))
    return Estimate(lines=ordered, invalid=invalid)


def over_budget(
    estimate: Estimate,
    *,
    max_total: int | None,
    per_provider: dict[str, int],
    balances: dict[str, int | None],
) -> list[str]:
    """Reasons the run must not start; empty when it may."""
    reasons = []
    by_provider: dict[str, int] = defaultdict(int)
    for ln in estimate.lines:
        by_provider[ln.provider] += ln.credits
    if max_total is not None and estimate.credits_for() > max_total:
        reasons.append(f"estimated {estimate.credits_for()} credits exceed max_credits {max_total}")
    for name, cap in per_provider.items():
        if by_provider.get(name, 0) > cap:
            reasons.append(f"{name}: estimated {by_provider[name]} credits exceed its max {cap}")
    for name, balance in balances.items():
        if balance is not None and by_provider.get(name, 0) > balance:
            reasons.append(f"{name}: estimated {by_provider[name]} credits exceed the balance {balance}")
    return reasons
