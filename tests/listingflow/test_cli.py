"""The command line a person runs: provider listing, the demo run's output, the README example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from listingflow.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_providers_lists_the_three_builtins_with_capabilities() -> None:
    result = CliRunner().invoke(app, ["providers"])
    assert result.exit_code == 0, result.output
    for name, caps in [("listingrva", "copy, images"), ("pixii", "images, aplus, scale"), ("prodvisual", "images")]:
        assert re.search(rf"{name} .*\n  capabilities: {re.escape(caps)}\n", result.output), result.output
    assert "10/60s" in result.output  # Pixii's documented submit limit
    assert "unknown" in result.output  # unpublished prices are unknown, not free


def test_bad_parameters_are_refused_with_the_field_named() -> None:
    result = CliRunner().invoke(app, ["run", "examples/catalog.csv", "--scale-mode", "language", "--sandbox"])
    assert result.exit_code == 2
    assert "scale_options.language is required" in result.output


@pytest.mark.usefixtures("prefect_server")
def test_demo_run_prints_progress_outputs_and_costs_without_tracebacks(tmp_path: Path, lf_env: dict) -> None:
    from tests.flows.helpers import subprocess_env

    catalog = tmp_path / "two.csv"
    rows = (ROOT / "examples" / "catalog.csv").read_text().splitlines()
    catalog.write_text("\n".join(rows[:3]) + "\n")
    env = subprocess_env({"LISTINGFLOW_RATE_LIMITS": ""})  # the real documented limits, as in the demo
    env.pop("LISTINGFLOW_RATE_LIMITS")
    proc = subprocess.run(
        [sys.executable, "-m", "listingflow.cli", "run", str(catalog), "--sandbox", "--sandbox-job-seconds", "0.5",
         "--archive", str(tmp_path / "archive"), "--price", "pixii=0.01"],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 products: 2 complete" in out
    assert f"outputs: {tmp_path / 'archive'}" in out.replace("\n", "")
    assert "Cost summary" in out and "pixii" in out
    assert re.search(r"compliance: \d+ pass, \d+ warn, \d+ fail", out), out  # flows/compliance, one line
    assert "Traceback" not in out and "Warning" not in out and "WARNING" not in out
    assert list((tmp_path / "archive").rglob("*.png"))


def test_readme_example_submits_an_aplus_job_and_waits() -> None:
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(import asyncio, httpx.*?)```", text, re.S)
    assert code, "the README lost its plugin API example"
    env = {"PIXII_POLL_INTERVAL_SECONDS": "0.2", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("40 ['a-plus-basic-preview'")
