"""A rerun takes the original run's parameters from its manifest; what differs from the flow's defaults
here overrides them, field by field, and the rerun says which."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flows.params import RunParameters
from flows.rerun import plan_rerun

ORIGINAL = RunParameters.model_validate(
    {
        "catalog": "s3://shop/catalog.csv",
        "steps": ["copy", "images", "aplus"],
        "image_options": {"styles": ["lifestyle"], "size": 2000},
        "providers": {"images": "pixii"},
        "force": ["images"],
        "price_per_credit": {"pixii": 0.05},
        "rerun_failed_of": "an-older-run",
    }
)


def _manifest(tmp_path: Path, parameters: Any) -> str:
    path = tmp_path / "runs" / "run-1" / "manifest.json"
    path.parent.mkdir(parents=True)
    products = [
        {"key": "US/B1", "status": "partial"},
        {"key": "US/B2", "status": "complete"},
        {"key": "US/B3", "status": "deferred"},
    ]
    path.write_text(json.dumps({"run_id": "run-1", "parameters": parameters, "products": products}))
    return str(path)


async def _plan(tmp_path: Path, **given: Any) -> Any:
    ref = _manifest(tmp_path, ORIGINAL.model_dump(mode="json", by_alias=True))
    return await plan_rerun(RunParameters.model_validate({**given, "rerun_failed_of": ref}), archive=None)  # type: ignore[arg-type]


async def test_only_rerun_failed_of_keeps_every_parameter_but_force(tmp_path: Path) -> None:
    rerun = await _plan(tmp_path)
    params = rerun.params
    assert params.image_options.styles == ["lifestyle"] and params.image_options.size == 2000
    assert params.providers.images == "pixii" and params.providers.copy_provider == "listingrva"
    assert (params.catalog, params.price_per_credit) == ("s3://shop/catalog.csv", {"pixii": 0.05})
    assert [str(s) for s in params.steps] == ["copy", "images", "aplus"]
    assert params.force == [] and params.rerun_failed_of.endswith("manifest.json")  # type: ignore[union-attr]
    assert rerun.failed == {"US/B1", "US/B3"} and rerun.of == "run-1"
    assert rerun.describe() == (
        'rerun of run-1: kept catalog=s3://shop/catalog.csv, steps=["copy", "images", "aplus"], '
        'providers.images=pixii, image_options.styles=["lifestyle"], image_options.size=2000, '
        'price_per_credit={"pixii": 0.05}; overridden: none; not kept: force=["images"] '
        "(pass force again to regenerate; SPENDS CREDITS)"
    )


async def test_explicit_values_override_field_by_field_and_are_reported(tmp_path: Path) -> None:
    rerun = await _plan(
        tmp_path, image_options={"styles": ["mockup"]}, catalog="s3://shop/catalog.csv", force=["images"]
    )
    params = rerun.params
    assert params.image_options.styles == ["mockup"] and params.image_options.size == 2000  # size kept
    assert params.force == ["images"]
    assert rerun.overridden == {"image_options.styles": ["mockup"]}  # same catalog: kept, not overridden
    assert 'overridden: image_options.styles=["mockup"]' in rerun.describe()
    assert "image_options.size=2000" in rerun.describe() and "not kept" not in rerun.describe()


async def test_a_manifest_without_parameters_keeps_nothing(tmp_path: Path) -> None:
    ref = _manifest(tmp_path, None)
    rerun = await plan_rerun(RunParameters(rerun_failed_of=ref), archive=None)  # type: ignore[arg-type]
    assert rerun.params == RunParameters(rerun_failed_of=ref)
    assert "kept no parameters" in rerun.describe()


async def test_parameters_that_do_not_fit_together_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"rerun of run-1: .*force names steps that are not run"):
        await _plan(tmp_path, force=["scale"])
