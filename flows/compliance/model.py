"""What a compliance check reads and what it answers: typed, so manifests, reports and plugins share
one shape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field

from providers.contract import ListingCopy

from .images import ImageFacts

Severity = Literal["warn", "fail"]
Status = Literal["pass", "warn", "fail"]


class Finding(BaseModel):
    """One rule an output (or the product's copy) breaks. ``fail``: the marketplace would refuse or
    suppress it; ``warn``: it may, or a person should look."""

    rule: str = Field(description="rule id, e.g. 'image-size' or 'title-promotional'")
    severity: Severity
    message: str = Field(description="one line naming the value and the limit")
    output_key: str | None = Field(None, description="archive key of the output, None for product-wide rules")
    step: str


class CheckedOutput(BaseModel):
    """One archived output as the rules see it: where it is, what it is and, for images, what was
    measured on its bytes (kept in the manifest, so a rerun measures an unchanged output once)."""

    key: str
    step: str
    label: str
    provider: str
    sha256: str
    size: int
    content_type: str
    facts: ImageFacts | None = Field(None, description="measured on the archived bytes; None for copy")
    unchecked: str | None = Field(None, description="why the bytes could not be read (archive unreachable)")
    status: Status = "pass"

    @property
    def name(self) -> str:
        """Short name for messages: ``images/prodvisual-white_bg-1.png`` (Scale: with the variation ASIN)."""
        return "/".join(self.key.split("/")[-3 if self.step == "scale" else -2 :])


class ProductContent(BaseModel):
    """A product's outputs across steps, as its manifest records them."""

    marketplace: str
    asin: str
    copy_result: ListingCopy | None = None
    copy_key: str | None = Field(None, description="archive key of the copy JSON")
    images: list[CheckedOutput] = Field(
        default_factory=list, description="images step, in order: [0] is the main"
    )
    aplus: list[CheckedOutput] = Field(default_factory=list)
    scale: list[CheckedOutput] = Field(default_factory=list)

    def outputs(self) -> list[CheckedOutput]:
        return [*self.images, *self.aplus, *self.scale]


class Regeneration(BaseModel):
    """A step paid for once more because its output failed (``regenerate_noncompliant``)."""

    step: str
    run_id: str
    jobs: list[str] = Field(default_factory=list)
    done: bool = Field(description="the new job's outputs replaced the failing ones")
    reason: str | None = Field(None, description="why not (e.g. the budget did not allow it)")

    def text(self) -> str:
        if self.done:
            return f"{self.step} regenerated once"
        return f"{self.step} not regenerated ({self.reason})"


class ComplianceResult(BaseModel):
    """A product's compliance: ``fail`` if any finding fails, ``warn`` if any warns, else ``pass``.
    A separate status from the run's: a non-compliant product is still complete and archived."""

    status: Status
    findings: list[Finding] = Field(default_factory=list)
    ruleset: str = Field("", description="the rule set that checked it, e.g. 'amazon'")
    marketplace: str = ""
    regenerated: list[Regeneration] = Field(default_factory=list, description="steps paid for again, per run")
    outputs: list[CheckedOutput] = Field(
        default_factory=list, description="every checked output, with its status"
    )

    @classmethod
    def of(cls, findings: list[Finding], *, ruleset: str, content: ProductContent) -> ComplianceResult:
        outputs = [
            o.model_copy(update={"status": worst(f.severity for f in findings if f.output_key == o.key)})
            for o in content.outputs()
        ]
        return cls(
            status=worst(f.severity for f in findings),
            findings=findings,
            ruleset=ruleset,
            marketplace=content.marketplace,
            outputs=outputs,
        )

    def reasons(self, limit: int = 5) -> tuple[str, ...]:
        """Short reasons, failures first, one per rule (``and N more`` where a rule hit several outputs),
        then the steps regenerated for them."""
        by_rule: dict[str, list[Finding]] = {}
        for f in sorted(self.findings, key=lambda f: f.severity != "fail"):
            by_rule.setdefault(f.rule, []).append(f)
        lines = [
            f"{found[0].message}" + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
            for found in by_rule.values()
        ]
        more = (f"+{len(lines) - limit} more rules",) if len(lines) > limit else ()
        return tuple(lines[:limit]) + more + tuple(r.text() for r in self.regenerated)


def worst(severities: Iterable[Severity]) -> Status:
    seen = set(severities)
    return "fail" if "fail" in seen else "warn" if "warn" in seen else "pass"
