"""The plugin registry through its ``eps=`` seam: one bad plugin never takes the others down.

Fast: entry points are built here, pointing at the built-in plugins and at the classes below.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint

import pytest

from providers.pixii.plugin import PixiiProvider
from providers.registry import PluginLoadError, load_providers

GROUP = "listingflow.providers"
HERE = __name__


def ep(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=target, group=GROUP)


PIXII = ep("pixii", "providers.pixii.plugin:PixiiProvider")
RVA = ep("listingrva", "providers.listingrva.plugin:ListingRVAProvider")


class FutureContract(PixiiProvider):
    """A plugin written for a contract this host does not speak."""

    name = "future"
    api_version = "2.0"


class NextMinor(PixiiProvider):
    """A newer minor version of the same contract: compatible."""

    name = "nextminor"
    api_version = "1.99"


class NotAProvider:
    name = "imposter"


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="listingflow.providers"):
        registry = load_providers(eps=[PIXII, ep("broken", "tests.providers.no_such_module:Plugin"), RVA])
    assert sorted(registry.providers) == ["listingrva", "pixii"]
    assert registry.failures["broken"].startswith("ModuleNotFoundError")
    assert "skipping provider plugin 'broken'" in caplog.text
    with pytest.raises(
        KeyError, match="provider 'broken' is not installed \\(failed to load: ModuleNotFoundError"
    ):
        registry.get("broken")


def test_strict_mode_raises_on_the_first_bad_plugin() -> None:
    with pytest.raises(PluginLoadError, match="provider plugin 'broken' failed to load: ModuleNotFoundError"):
        load_providers(eps=[PIXII, ep("broken", "tests.providers.no_such_module:Plugin")], strict=True)


def test_another_major_contract_version_is_skipped_a_newer_minor_is_not() -> None:
    registry = load_providers(
        eps=[ep("future", f"{HERE}:FutureContract"), ep("nextminor", f"{HERE}:NextMinor")]
    )
    assert list(registry.providers) == ["nextminor"]
    assert "implements contract 2.0, host speaks 1." in registry.failures["future"]
    with pytest.raises(PluginLoadError, match=r"contract 2\.0"):
        load_providers(eps=[ep("future", f"{HERE}:FutureContract")], strict=True)


def test_an_entry_point_must_name_a_provider_class_of_that_name() -> None:
    registry = load_providers(eps=[ep("imposter", f"{HERE}:NotAProvider"), ep("pixie", PIXII.value)])
    assert registry.providers == {}
    assert "does not point at a Provider subclass" in registry.failures["imposter"]
    assert "loads a provider named 'pixii'" in registry.failures["pixie"]


def test_two_plugins_claiming_one_name_are_both_refused() -> None:
    """Which one would win depends on install order; jobs would be paid to the wrong API."""
    impostor = ep("pixii", f"{HERE}:NextMinor")
    registry = load_providers(eps=[PIXII, RVA, impostor])
    assert list(registry.providers) == ["listingrva"]
    assert registry.failures["pixii"] == (
        f"name clash: {PIXII.value} and {impostor.value} both register provider 'pixii'; neither is loaded"
    )
    with pytest.raises(PluginLoadError, match="name clash"):
        load_providers(eps=[PIXII, impostor], strict=True)


def test_one_plugin_listed_twice_is_no_clash() -> None:
    """The same distribution can be found twice on the path (an editable install and a wheel)."""
    registry = load_providers(eps=[PIXII, PIXII])
    assert list(registry.providers) == ["pixii"] and registry.failures == {}


def test_allow_loads_only_the_named_plugins_and_reports_missing_ones() -> None:
    registry = load_providers(
        eps=[PIXII, RVA, ep("broken", "tests.providers.no_such_module:Plugin")], allow=["pixii", "acme"]
    )
    assert list(registry.providers) == ["pixii"]
    assert registry.failures == {"acme": "not installed"}


def test_providers_for_a_step_are_those_with_the_capability() -> None:
    registry = load_providers(eps=[PIXII, RVA])
    assert registry.for_step("copy") == ["listingrva"]
    assert registry.for_step("images") == ["listingrva", "pixii"]
