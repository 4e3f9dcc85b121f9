"""A product's check from its manifest's steps: archived bytes read once, failures isolated."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from flows.archive import ArchiveUnavailable
from flows.compliance import Finding, ProductContent, RuleRegistry, RuleSet, check_product, report
from flows.compliance.amazon import AmazonRules
from flows.pipeline import ProductRecord

from .images import product_image


class DictArchive:
    def __init__(self, objects: dict[str, bytes], *, down: bool = False) -> None:
        self.objects, self.down, self.reads = objects, down, []

    async def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        if self.down:
            raise ArchiveUnavailable("archive unreachable")
        return self.objects.get(key)


def output(key: str, data: bytes, label: str) -> dict[str, Any]:
    return {
        "key": key,
        "label": label,
        "sha256": f"sha-{key}",
        "size": len(data),
        "content_type": "image/png",
    }


MAIN, SMALL = (
    "US/B0TEST0001/images/prodvisual-white_bg-1.png",
    "US/B0TEST0001/images/prodvisual-lifestyle-1.png",
)
OBJECTS = {MAIN: product_image((1500, 1500)), SMALL: product_image((600, 600), background=(80, 90, 100))}
STEPS = {
    "copy": {
        "provider": "listingrva",
        "status": "done",
        "copy_result": {"title": "Acme Bottle, 750 ml", "bullets": []},
        "outputs": [
            {
                "key": "US/B0TEST0001/copy/listingrva-copy.json",
                "label": "copy",
                "sha256": "c",
                "size": 2,
                "content_type": "application/json",
            }
        ],
    },
    "images": {
        "provider": "prodvisual",
        "status": "done",
        "outputs": [output(MAIN, OBJECTS[MAIN], "white_bg-1"), output(SMALL, OBJECTS[SMALL], "lifestyle-1")],
    },
}


async def test_checks_archived_bytes_and_records_facts_for_the_next_run() -> None:
    archive = DictArchive(OBJECTS)
    result = await check_product(archive, "US", "B0TEST0001", STEPS)
    assert result is not None and result.status == "fail" and result.ruleset == "amazon"
    assert [(f.rule, f.output_key) for f in result.findings] == [("image-size", SMALL)]
    assert {o.key: o.status for o in result.outputs} == {MAIN: "pass", SMALL: "fail"}
    # the copy JSON is not read (its result is in the manifest)
    assert sorted(archive.reads) == sorted(OBJECTS)
    facts = {o.key: o.facts for o in result.outputs}
    assert facts[MAIN] is not None and facts[MAIN].pixels_measured  # the main image's pixels are decoded
    assert facts[SMALL] is not None and not facts[SMALL].pixels_measured  # the others': type and size only

    # a rerun with the same outputs (same SHA-256) reuses the measurements: nothing is read again
    again = DictArchive(OBJECTS)
    previous = {"compliance": result.model_dump(mode="json")}
    assert (await check_product(again, "US", "B0TEST0001", STEPS, previous)) == result
    assert again.reads == []


async def test_unreadable_archive_warns_and_never_raises() -> None:
    result = await check_product(DictArchive(OBJECTS, down=True), "US", "B0TEST0001", STEPS)
    assert result is not None and result.status == "warn"
    assert {f.rule for f in result.findings} == {"image-unchecked"}
    assert "ArchiveUnavailable" in result.findings[0].message


class Broken(RuleSet):
    name: ClassVar[str] = "broken"
    marketplaces: ClassVar[frozenset[str]] = frozenset({"US"})

    def check(self, content: ProductContent) -> list[Finding]:
        raise RuntimeError("bug in a plugin")


async def test_a_failing_rule_set_flags_the_product_as_warn() -> None:
    registry = RuleRegistry(rulesets={"broken": Broken})
    result = await check_product(DictArchive(OBJECTS), "US", "B0TEST0001", STEPS, registry=registry)
    assert result is not None and result.status == "warn"
    assert result.findings[0].rule == "ruleset-error" and "bug in a plugin" in result.findings[0].message


@pytest.mark.parametrize(
    ("steps", "registry"), [({}, None), (STEPS, RuleRegistry(rulesets={"amazon": AmazonRules}))]
)
async def test_nothing_to_check_or_no_rules_is_not_checked(steps: dict[str, Any], registry: Any) -> None:
    marketplace = "XX" if registry is not None else "US"  # a marketplace no rule set claims
    assert (
        await check_product(DictArchive(OBJECTS), marketplace, "B0TEST0001", steps, registry=registry) is None
    )


def record(asin: str, compliance: str | None, *reasons: str) -> ProductRecord:
    return ProductRecord(
        asin=asin,
        country_code="US",
        status="complete",
        manifest_key=None,
        steps={},
        compliance=compliance,
        compliance_findings=len(reasons),
        compliance_reasons=reasons,
    )


def test_report_counts_and_lists_failures_first() -> None:
    products = [
        record("B0PASS0001", "pass"),
        record("B0WARN0001", "warn", "title has special characters !"),
        record("B0FAIL0001", "fail", "images/x.png: longest side 32 px (at least 1000)", "title too long"),
        record("B0NONE0001", None),
    ]
    assert report.summary_line(products) == "compliance: 1 pass, 1 warn, 1 fail, 1 not checked"
    assert report.noncompliant(products) == [
        "US/B0FAIL0001 fail: images/x.png: longest side 32 px (at least 1000); title too long",
        "US/B0WARN0001 warn: title has special characters !",
    ]
    assert report.noncompliant(products, limit=1)[-1].startswith("... and 1 more")
    assert (
        report.noncompliant(products, reasons=1)[0]
        == "US/B0FAIL0001 fail: images/x.png: longest side 32 px (at least 1000)"
    )
    assert "**Compliance: 1 pass" in report.markdown(products) and "- US/B0FAIL0001 fail" in report.markdown(
        products
    )
    assert report.summary_line([record("B0NONE0001", None)]) is None and report.markdown([]) == ""


async def test_an_output_measured_by_header_only_is_decoded_once_it_is_the_main_image() -> None:
    first = await check_product(DictArchive(OBJECTS), "US", "B0TEST0001", STEPS)
    assert first is not None
    swapped = {**STEPS, "images": {**STEPS["images"], "outputs": STEPS["images"]["outputs"][::-1]}}
    archive = DictArchive(OBJECTS)
    again = await check_product(
        archive, "US", "B0TEST0001", swapped, {"compliance": first.model_dump(mode="json")}
    )
    assert archive.reads == [SMALL]  # the new main image: read and decoded; the other reuses its facts
    assert again is not None and again.outputs[0].key == SMALL
    assert again.outputs[0].facts is not None and again.outputs[0].facts.pixels_measured
