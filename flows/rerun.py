"""Reruns of an earlier run's failed products keep that run's parameters.

A rerun that took the deployment's (or the CLI's) defaults instead bought a new ``white_bg`` image
for a run that had used ``lifestyle``, and built A+ and Scale on it: the original parameters are in
its run manifest, so they are read from there.

Which parameters the user gave explicitly: Prefect hands a flow run every parameter (a deployment
merges its own parameters with the run's, and the UI form sends every field), so "present" means
nothing. A parameter counts as explicit when it **differs from the flow's default**; nested options
(``image_options.styles``, ``providers.images``, ...) are compared field by field. An explicit value
overrides the original run's, anything else takes the original run's. The consequence: a rerun
cannot set a parameter back to its default; start a normal run (``products``/``steps``) for that.

Three parameters are never kept: ``rerun_failed_of`` (this run's own), ``force`` (regenerating
again what the original run already paid for would pay twice; pass ``force`` again to do that) and
``resubmit_unknown`` (it may pay twice: a person asks for it each time).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from flows.settings import get_settings

from .archive import SpooledArchive, run_key
from .params import RunParameters

NOT_KEPT = ("rerun_failed_of", "force", "resubmit_unknown", "regenerate_noncompliant")
RERUN_STATUSES = ("failed", "partial", "deferred", "interrupted")
logger = logging.getLogger("listingflow")


@dataclass
class Rerun:
    """What a rerun takes from the run it repairs, and what it says about it."""

    of: str
    params: RunParameters
    failed: set[str]
    kept: dict[str, Any] = field(default_factory=dict)
    overridden: dict[str, Any] = field(default_factory=dict)
    dropped: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [
            f"kept {_values(self.kept)}" if self.kept else "kept no parameters (that run used the defaults)",
            f"overridden: {_values(self.overridden)}" if self.overridden else "overridden: none",
        ]
        if self.dropped:
            parts.append(
                f"not kept: {_values(self.dropped)} (pass force again to regenerate; SPENDS CREDITS)"
            )
        return f"rerun of {self.of}: " + "; ".join(parts)


def _values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items())


async def plan_rerun(params: RunParameters, archive: SpooledArchive) -> Rerun:
    """Read the manifest ``params.rerun_failed_of`` names and merge its parameters under ``params``."""
    assert params.rerun_failed_of
    manifest = await read_run_manifest(params.rerun_failed_of, archive)
    failed = {p["key"] for p in manifest["products"] if p.get("status") in RERUN_STATUSES}
    of = str(manifest.get("run_id") or params.rerun_failed_of)
    original = manifest.get("parameters")
    if not isinstance(original, dict):
        return Rerun(of=of, params=params, failed=failed)
    rerun = Rerun(of=of, params=params, failed=failed)
    given = params.model_dump(mode="json", by_alias=True)
    defaults = RunParameters().model_dump(mode="json", by_alias=True)
    merged = _merge(RunParameters, given, defaults, original, "", rerun)
    for name in NOT_KEPT:
        merged[name] = given[name]
    if original.get("force") and not params.force:
        rerun.dropped["force"] = original["force"]
    try:
        rerun.params = RunParameters.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"rerun of {of}: its parameters with this run's do not fit: {problems}") from None
    return rerun


def _merge(
    model: type[BaseModel],
    given: dict[str, Any],
    defaults: dict[str, Any],
    original: dict[str, Any],
    prefix: str,
    rerun: Rerun,
) -> dict[str, Any]:
    """``given`` where it differs from ``defaults``, else ``original``; nested models field by field."""
    out = dict(given)
    for name, info in model.model_fields.items():
        key = info.alias or name
        if (prefix == "" and key in NOT_KEPT) or key not in original or key not in given:
            continue
        path, g, d, o = prefix + key, given[key], defaults.get(key), original[key]
        nested = _model_of(info.annotation)
        if nested is not None and isinstance(g, dict) and isinstance(o, dict) and isinstance(d, dict):
            out[key] = _merge(nested, g, d, o, path + ".", rerun)
        elif g != d:
            if g != o:
                rerun.overridden[path] = g
        else:
            out[key] = o
            if o != d:
                rerun.kept[path] = o
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


async def read_run_manifest(ref: str, archive: SpooledArchive) -> dict[str, Any]:
    """``runs/RUN_ID/manifest.json`` of a run id in ``archive``, or a manifest path or URI."""
    from .catalog import read_bytes

    if ref.endswith(".json"):
        data = json.loads(read_bytes(ref, s3_endpoint_url=get_settings().s3_endpoint_url))
    else:
        data = await archive.get_json(run_key(archive.prefix, ref, "manifest.json"))
        if data is None:
            raise ValueError(f"no run manifest for run {ref!r} in {archive.uri}")
    if not isinstance(data, dict) or "products" not in data:
        raise ValueError(f"{ref}: not a listingflow run manifest")
    return data


def log_rerun(rerun: Rerun) -> None:
    """The kept and overridden parameters, in the flow run's log (or the package's, outside a flow)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        run_logger: Any = get_run_logger()
    except MissingContextError:
        run_logger = logger
    run_logger.info("%s", rerun.describe())
