"""Rule sets are plugins: discovered by entry point, isolated, selected by marketplace."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import ClassVar

from flows.compliance import (
    ENTRY_POINT_GROUP,
    Finding,
    ProductContent,
    RuleSet,
    installed_rulesets,
    load_rulesets,
)
from flows.compliance.amazon import AmazonRules

HERE = "tests.flows.compliance.test_rules"


class OttoRules(RuleSet):
    """A plugin's rules for one marketplace."""

    name: ClassVar[str] = "otto"
    marketplaces: ClassVar[frozenset[str]] = frozenset({"DE"})

    def check(self, content: ProductContent) -> list[Finding]:
        return [Finding(rule="otto", severity="warn", message="checked by otto", step="copy")]


NotARuleSet = object()


def ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_installed_rulesets_include_amazon_for_every_marketplace() -> None:
    registry = installed_rulesets()
    assert registry.rulesets["amazon"] is AmazonRules
    for marketplace in ("US", "DE", "JP", "GB", "UK", "IN"):
        assert isinstance(registry.for_marketplace(marketplace), AmazonRules)


def test_a_plugin_claiming_a_marketplace_replaces_the_builtin_there_only() -> None:
    registry = load_rulesets(
        eps=[ep("amazon", "flows.compliance.amazon:AmazonRules"), ep("otto", f"{HERE}:OttoRules")]
    )
    assert isinstance(registry.for_marketplace("DE"), OttoRules)
    assert isinstance(registry.for_marketplace("US"), AmazonRules)


def test_broken_plugins_are_reported_and_skipped() -> None:
    registry = load_rulesets(
        eps=[
            ep("gone", "no_such_module:Rules"),
            ep("odd", f"{HERE}:NotARuleSet"),
            ep("otto", f"{HERE}:OttoRules"),
            ep("otto", "flows.compliance.amazon:AmazonRules"),
            ep("mislabelled", f"{HERE}:OttoRules"),
        ]
    )
    assert set(registry.failures) == {"gone", "odd", "otto", "mislabelled"}
    assert "ModuleNotFoundError" in registry.failures["gone"]
    assert "not point at a RuleSet" in registry.failures["odd"]
    assert "name clash" in registry.failures["otto"]
    assert "named 'otto'" in registry.failures["mislabelled"]
    assert set(registry.rulesets) == {"amazon"}  # the built-in is there even without its entry point
    assert isinstance(registry.for_marketplace("DE"), AmazonRules)
