"""Compliance checks: each product's outputs against its marketplace's rules (Amazon's built in),
after they are archived and before the product is reported done. A separate status from the run's:
a non-compliant product is still complete and archived.

Rule sets are plugins (``listingflow.compliance`` entry points, ``RuleSet`` subclasses); see
``flows/compliance/amazon.py`` for the built-in one.
"""

from .check import check_product
from .images import ImageFacts, measure
from .model import CheckedOutput, ComplianceResult, Finding, ProductContent, Regeneration, Severity, Status
from .rules import ENTRY_POINT_GROUP, RuleRegistry, RuleSet, installed_rulesets, load_rulesets

__all__ = [
    "ENTRY_POINT_GROUP",
    "CheckedOutput",
    "ComplianceResult",
    "Finding",
    "ImageFacts",
    "ProductContent",
    "Regeneration",
    "RuleRegistry",
    "RuleSet",
    "Severity",
    "Status",
    "check_product",
    "installed_rulesets",
    "load_rulesets",
    "measure",
]
