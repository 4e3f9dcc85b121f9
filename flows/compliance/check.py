"""A product's compliance check in the pipeline: after its outputs are archived, before it is reported
done. Images are measured on their archived bytes (read back once; an output measured by an earlier
run, same SHA-256, is not read again), then the marketplace's rule set judges them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from providers.contract import ListingCopy

from .images import ImageFacts, measure
from .model import CheckedOutput, ComplianceResult, Finding, ProductContent
from .rules import RuleRegistry, installed_rulesets

logger = logging.getLogger("listingflow.compliance")

CHECKED_STEPS = ("images", "aplus", "scale")
MAIN = ("images", 0)
"""The main image, the only output whose pixels are decoded (the others: type and size, from the header)."""


class ArchiveReader(Protocol):
    async def get(self, key: str) -> bytes | None: ...


async def check_product(
    archive: ArchiveReader,
    marketplace: str,
    asin: str,
    steps: dict[str, Any],
    previous: dict[str, Any] | None = None,
    registry: RuleRegistry | None = None,
) -> ComplianceResult | None:
    """The product's compliance from its manifest's ``steps`` (step -> recorded outcome); None when
    no rule set covers the marketplace or there is nothing to check."""
    rules = (registry or installed_rulesets()).for_marketplace(marketplace)
    if rules is None:
        return None
    content = await _content(archive, marketplace, asin, steps, _measured(previous))
    if content.copy_result is None and not content.outputs():
        return None
    try:
        findings = rules.check(content)
    except Exception as exc:  # noqa: BLE001 - a broken rule set flags the product, never fails it
        logger.warning("rule set %r failed on %s/%s: %s", rules.name, marketplace, asin, exc)
        findings = [
            Finding(
                rule="ruleset-error",
                severity="warn",
                step="-",
                message=f"rule set {rules.name} failed: {type(exc).__name__}: {exc}",
            )
        ]
    return ComplianceResult.of(findings, ruleset=rules.name, content=content)


async def _content(
    archive: ArchiveReader, marketplace: str, asin: str, steps: dict[str, Any], known: dict[str, ImageFacts]
) -> ProductContent:
    copy_step = steps.get("copy") or {}
    copy = copy_step.get("copy_result")
    copy_key = next((o["key"] for o in copy_step.get("outputs") or [] if o.get("label") == "copy"), None)
    content = ProductContent(
        marketplace=marketplace,
        asin=asin,
        copy_key=copy_key,
        copy_result=ListingCopy.model_validate(copy) if copy else None,
    )
    for step in CHECKED_STEPS:
        recorded = [
            o
            for o in (steps.get(step) or {}).get("outputs") or []
            if str(o.get("content_type", "")).startswith("image/")
        ]
        provider = str((steps.get(step) or {}).get("provider") or "")
        checked = await asyncio.gather(
            *(
                _checked(archive, step, provider, o, known, pixels=(step, n) == MAIN)
                for n, o in enumerate(recorded)
            )
        )
        setattr(content, step, list(checked))
    return content


async def _checked(
    archive: ArchiveReader,
    step: str,
    provider: str,
    output: dict[str, Any],
    known: dict[str, ImageFacts],
    *,
    pixels: bool,
) -> CheckedOutput:
    key = output["key"]
    checked = CheckedOutput(
        key=key,
        step=step,
        label=output.get("label", ""),
        provider=provider,
        sha256=output.get("sha256", ""),
        size=int(output.get("size", 0)),
        content_type=output.get("content_type", ""),
    )
    earlier = known.get(checked.sha256)
    if earlier is not None and (earlier.pixels_measured or earlier.error or not pixels):
        checked.facts = earlier
        return checked
    try:
        data = await archive.get(key)
    except Exception as exc:  # noqa: BLE001 - an unreadable archive leaves the output unchecked, never fails the product
        checked.unchecked = f"archive unreadable ({type(exc).__name__})"
        return checked
    if data is None:
        checked.unchecked = "not in the archive"
        return checked
    checked.facts = (
        await asyncio.to_thread(measure, data, pixels=pixels) if pixels else measure(data, pixels=False)
    )
    return checked


def _measured(previous: dict[str, Any] | None) -> dict[str, ImageFacts]:
    """Facts an earlier check measured, by SHA-256 of the bytes."""
    outputs = ((previous or {}).get("compliance") or {}).get("outputs") or []
    return {
        o["sha256"]: ImageFacts.model_validate(o["facts"])
        for o in outputs
        if o.get("sha256") and o.get("facts")
    }
