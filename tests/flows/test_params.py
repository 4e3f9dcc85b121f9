"""The run form Prefect builds from the flow: titles a seller can read, providers to choose from, and
help texts that survive the UI's markdown rendering."""

from __future__ import annotations

import re
from typing import Any

from prefect.utilities.callables import parameter_schema

from flows.catalog_flow import catalog_flow
from flows.params import RunParameters
from providers.registry import load_providers


def _schema() -> dict[str, Any]:
    return parameter_schema(catalog_flow.fn).model_dump()


def _resolved(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """A property merged over the definition it refers to, as the form renders it."""
    ref = prop.get("$ref") or next((p["$ref"] for p in prop.get("allOf", []) if "$ref" in p), None)
    return {**schema["definitions"][ref.rsplit("/", 1)[-1]], **prop} if ref else prop


def test_top_level_parameters_have_titles_not_snake_case_names() -> None:
    schema = _schema()
    titles = {name: _resolved(schema, prop).get("title") for name, prop in schema["properties"].items()}
    assert set(titles) == set(RunParameters.model_fields)
    assert titles["rerun_failed_of"] == "Rerun failed products of"
    assert titles["price_per_credit"] == "Price per credit"
    assert not [name for name, title in titles.items() if not title or "_" in title or title == name], titles


def test_provider_fields_offer_the_installed_providers() -> None:
    providers = _schema()["definitions"]["StepProviders"]["properties"]
    registry = load_providers()
    assert providers["images"]["enum"] == registry.for_step("images") == ["listingrva", "pixii", "prodvisual"]
    assert providers["copy"]["enum"] == registry.for_step("copy")
    assert providers["aplus"]["enum"] == providers["scale"]["enum"] == ["pixii"]
    for prop in providers.values():
        assert prop["default"] in prop["enum"]


def test_help_texts_have_nothing_the_ui_would_swallow() -> None:
    """The UI renders descriptions as markdown/HTML: ``<id>`` in ``runs/<id>/manifest.json`` vanished."""
    schema = _schema()
    texts = [p.get("description") or "" for p in schema["properties"].values()]
    texts += [
        p.get("description") or ""
        for d in schema["definitions"].values()
        for p in d.get("properties", {}).values()
    ]
    assert any("runs/RUN_ID/manifest.json" in t for t in texts)
    assert not [t for t in texts if re.search(r"<[A-Za-z/!]|(^|\s)[*-]\s|^>|->", t)]


def test_the_rerun_rule_compares_with_the_flows_own_defaults() -> None:
    """A rerun counts a parameter as given when it differs from ``RunParameters()``: those must be the
    defaults of the flow signature that Prefect shows and fills in."""
    defaults = RunParameters().model_dump(mode="json", by_alias=True)
    shown = {name: prop["default"] for name, prop in _schema()["properties"].items()}
    assert shown == defaults
