"""Rule sets per marketplace, discovered like providers: through the ``listingflow.compliance``
entry-point group, each loaded in isolation.

The built-in Amazon rules are registered through the same group (pyproject.toml) and are also added
when an older install's metadata lacks the entry point. A plugin rule set that claims a marketplace
replaces the built-in one there; a rule set that fails to load is reported and skipped.
"""

from __future__ import annotations

import abc
import functools
import logging
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import ClassVar

from .model import Finding, ProductContent

ENTRY_POINT_GROUP = "listingflow.compliance"
BUILTIN = "amazon"
logger = logging.getLogger("listingflow.compliance")


class RuleSet(abc.ABC):
    """A marketplace's rules: ``check`` reads a product's outputs and copy and returns what they break.

    ``check`` is pure (no I/O): images come measured (``CheckedOutput.facts``)."""

    name: ClassVar[str]
    marketplaces: ClassVar[frozenset[str]]
    """Catalog country codes (``Product.country_code``) this rule set checks."""

    @abc.abstractmethod
    def check(self, content: ProductContent) -> list[Finding]:
        """Every finding for the product; empty when it complies."""


@dataclass
class RuleRegistry:
    rulesets: dict[str, type[RuleSet]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def for_marketplace(self, marketplace: str) -> RuleSet | None:
        """The rule set for a marketplace: a plugin's that claims it (the first by name), else the
        built-in's; None when none claims it (the product is then not checked)."""
        claiming = sorted(n for n, r in self.rulesets.items() if marketplace in r.marketplaces)
        plugins = [n for n in claiming if n != BUILTIN]
        if len(plugins) > 1:
            logger.warning(
                "rule sets %s all claim marketplace %s; using %s", plugins, marketplace, plugins[0]
            )
        chosen = plugins[0] if plugins else (claiming[0] if claiming else None)
        return self.rulesets[chosen]() if chosen else None


def _check(name: str, obj: object) -> type[RuleSet]:
    if not (isinstance(obj, type) and issubclass(obj, RuleSet)):
        raise TypeError(f"entry point {name!r} does not point at a RuleSet subclass")
    if obj.name != name:
        raise TypeError(f"entry point {name!r} loads a rule set named {obj.name!r}")
    return obj


def load_rulesets(*, eps: list[EntryPoint] | None = None) -> RuleRegistry:
    """Every installed rule set; one that fails to load (or two that claim one name) is skipped."""
    registry = RuleRegistry()
    found = eps if eps is not None else list(entry_points(group=ENTRY_POINT_GROUP))
    claimed: dict[str, str] = {}
    for ep in found:
        if ep.name in claimed:
            if claimed[ep.name] != ep.value:
                registry.rulesets.pop(ep.name, None)
                registry.failures[ep.name] = (
                    f"name clash: {claimed[ep.name]} and {ep.value}; neither is loaded"
                )
                logger.warning("skipping rule set %r: %s", ep.name, registry.failures[ep.name])
            continue
        claimed[ep.name] = ep.value
        try:
            registry.rulesets[ep.name] = _check(ep.name, ep.load())
        except Exception as exc:  # noqa: BLE001 - one broken plugin never stops the checks
            registry.failures[ep.name] = f"{type(exc).__name__}: {exc}"
            logger.warning("skipping rule set %r: %s", ep.name, registry.failures[ep.name])
    if BUILTIN not in claimed:  # an install whose metadata predates the entry point
        from .amazon import AmazonRules

        registry.rulesets[BUILTIN] = AmazonRules
    return registry


@functools.cache
def installed_rulesets() -> RuleRegistry:
    """The installed rule sets, loaded once per process."""
    return load_rulesets()
