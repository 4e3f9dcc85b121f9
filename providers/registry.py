"""Discovers provider plugins through the ``listingflow.providers`` entry-point group.

Built-ins are registered through the same entry points as third-party plugins. Each entry point is
loaded in isolation: a plugin that fails to import, is not a ``Provider``, speaks another major
contract version or shares its name with another plugin is reported and skipped (or raised, in strict
mode, for plugin authors).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from .contract import PLUGIN_API_VERSION, Provider

ENTRY_POINT_GROUP = "listingflow.providers"
logger = logging.getLogger("listingflow.providers")


class PluginLoadError(RuntimeError):
    """A provider plugin could not be loaded (raised only in strict mode)."""


@dataclass
class Registry:
    providers: dict[str, type[Provider]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> type[Provider]:
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            why = f" (failed to load: {self.failures[name]})" if name in self.failures else ""
            raise KeyError(f"provider {name!r} is not installed{why}; installed: {known}") from None

    def for_step(self, step: str) -> list[str]:
        return sorted(n for n, p in self.providers.items() if step in p.capabilities)


def _check(name: str, obj: object) -> type[Provider]:
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        raise TypeError(f"entry point {name!r} does not point at a Provider subclass")
    major = str(obj.api_version).split(".")[0]
    if major != PLUGIN_API_VERSION.split(".")[0]:
        raise TypeError(
            f"plugin {name!r} implements contract {obj.api_version}, host speaks {PLUGIN_API_VERSION}"
        )
    if obj.name != name:
        raise TypeError(f"entry point {name!r} loads a provider named {obj.name!r}")
    return obj


def _clash(registry: Registry, name: str, targets: str, strict: bool) -> None:
    """Two plugins claim one name: which one ran would depend on install order, and jobs would be paid
    to the wrong API; neither is loaded."""
    reason = f"name clash: {targets} both register provider {name!r}; neither is loaded"
    if strict:
        raise PluginLoadError(reason)
    registry.providers.pop(name, None)
    registry.failures[name] = reason
    logger.warning("skipping provider plugin %r: %s", name, reason)


def load_providers(
    *,
    allow: list[str] | None = None,
    strict: bool = False,
    eps: list[EntryPoint] | None = None,
) -> Registry:
    """Load every provider plugin (or only those in ``allow``)."""
    registry = Registry()
    found = eps if eps is not None else list(entry_points(group=ENTRY_POINT_GROUP))
    claimed: dict[str, str] = {}  # name -> the first entry point's target
    for ep in found:
        if allow is not None and ep.name not in allow:
            continue
        if ep.name in claimed:
            if claimed[ep.name] != ep.value:  # the same target listed twice is one plugin
                _clash(registry, ep.name, f"{claimed[ep.name]} and {ep.value}", strict)
            continue
        claimed[ep.name] = ep.value
        try:
            registry.providers[ep.name] = _check(ep.name, ep.load())
        except Exception as exc:  # isolation is the point: one plugin, one failure
            reason = f"{type(exc).__name__}: {exc}"
            if strict:
                raise PluginLoadError(f"provider plugin {ep.name!r} failed to load: {reason}") from exc
            registry.failures[ep.name] = reason
            logger.warning("skipping provider plugin %r: %s", ep.name, reason)
    if allow is not None:
        for name in allow:
            if name not in registry.providers and name not in registry.failures:
                registry.failures[name] = "not installed"
    return registry
