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
    for name, caps in [
        ("listingrva", "copy, images"),
        ("pixii", "images, aplus, scale"),
        ("prodvisual", "images"),
    ]:
        assert re.search(rf"{name} .*\n  capabilities: {re.escape(caps)}\n", result.output), result.output
    assert "10/60s" in result.output  # Pixii's documented submit limit
    assert "unknown" in result.output  # unpublished prices are unknown, not free


def test_bad_parameters_are_refused_with_the_field_named() -> None:
    result = CliRunner().invoke(app, ["run", "examples/catalog.csv", "--scale-mode", "language", "--sandbox"])
    assert result.exit_code == 2
    [line] = result.output.splitlines()  # one line, no usage block
    assert line.startswith("listingflow: ") and "scale_options.language is required" in line
    result = CliRunner().invoke(
        app, ["run", "examples/catalog.csv", "--size", "big"], prog_name="listingflow"
    )
    assert result.exit_code == 2
    [line] = result.output.splitlines()
    assert line.startswith("listingflow run: Invalid value for '--size'"), line


def test_version_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"listingflow {version('listingflow')}\n"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["estimate"],
        ["providers"],
        ["unknown"],
        ["sandbox"],
        ["bootstrap"],
        ["server"],
        ["server", "status"],
    ],
)
def test_help_is_plain_text_without_markup_or_python_types(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, prog_name="listingflow")
    assert result.exit_code == 0, result.output
    assert "Usage: listingflow" in result.output
    for raw in (
        "``",
        "`",
        "[bold",
        "[/",
        "╭",
        "<str>",
        "<int>",
        "<float>",
        "<bool>",
        "list[str]",
        "Annotated",
    ):
        assert raw not in result.output, (raw, result.output)
    assert all(len(line) <= 80 for line in result.output.splitlines())


def _run_cli(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``listingflow`` in a subprocess, its output piped (as in CI or ``| tee``), 80 columns."""
    return subprocess.run(
        [sys.executable, "-m", "listingflow.cli", *args],
        env={**env, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.usefixtures("prefect_server")
def test_a_refused_run_says_why_in_one_line(tmp_path: Path, lf_env: dict) -> None:
    from tests.flows.helpers import subprocess_env

    catalog = tmp_path / "bad.csv"
    catalog.write_text("asin,colour\nB0X,red\n")
    proc = _run_cli(["run", str(catalog), "--sandbox"], subprocess_env())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"run refused, nothing was submitted: {catalog}:1: missing required "
        "column(s): country_code, title (header: asin, colour)"
    ]
    assert "Traceback" not in proc.stdout + proc.stderr and "Finished in state" not in proc.stdout


def test_a_failure_before_the_start_is_one_line_and_the_traceback_is_in_a_log(
    tmp_path: Path, lf_env: dict
) -> None:
    import os

    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # nothing listens there
    proc = _run_cli(["run", "examples/catalog.csv"], env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("listingflow: the run could not start: RuntimeError: Failed to reach API at"), line
    assert line.endswith("(--debug shows it)") and "Traceback" not in proc.stdout + proc.stderr
    log = Path(line.split("traceback in ")[1].split(" (--debug")[0])
    assert log.parent == lf_env["home"] / "logs" and "Traceback (most recent call last)" in log.read_text()
    debug = _run_cli(["run", "examples/catalog.csv", "--debug"], env)
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.count("Failed to reach API at") == 2  # the traceback's last line and the one line


@pytest.mark.usefixtures("prefect_server")
def test_demo_run_prints_progress_outputs_and_costs_without_tracebacks(tmp_path: Path, lf_env: dict) -> None:
    from tests.flows.helpers import subprocess_env

    catalog = tmp_path / "two.csv"
    rows = (ROOT / "examples" / "catalog.csv").read_text().splitlines()
    catalog.write_text("\n".join(rows[:3]) + "\n")
    env = subprocess_env({"LISTINGFLOW_RATE_LIMITS": ""})  # the real documented limits, as in the demo
    env.pop("LISTINGFLOW_RATE_LIMITS")
    archive = tmp_path / ("an-archive-folder-whose-name-is-longer-than-a-line-of-eighty-columns-" * 2)
    proc = _run_cli(
        [
            "run",
            str(catalog),
            "--sandbox",
            "--sandbox-job-seconds",
            "0.5",
            "--archive",
            str(archive),
            "--price",
            "pixii=0.01",
        ],
        env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = [line.rstrip() for line in proc.stdout.splitlines()]
    assert "2 products: 2 complete" in out
    assert f"outputs: {archive}" in lines  # whole, on one line: piped output is never wrapped
    assert any(line.startswith(f"run manifest: {archive}/runs/") for line in lines)
    assert {"product 1/2", "product 2/2"} <= {" ".join(line.split()[:2]) for line in lines}
    assert "pixii: submitted 4, in flight 0, done 4, failed 0; submit 4/10 per 60s" in lines  # 2 A+, 2 Scale
    assert any(line.startswith("products 2/2, elapsed") for line in lines)
    start = lines.index("Cost summary (credits)")
    table = lines[start : next(i for i in range(start, len(lines)) if lines[i].startswith("total")) + 1]
    assert all(len(line) <= 80 for line in table)
    for name in ("listingrva", "pixii", "prodvisual"):
        assert any(line.split()[:2] == [name, "all"] for line in table), table
    assert any(line.split()[:2] == ["pixii", "all"] and line.endswith("0.52 USD") for line in table), table
    assert re.search(r"compliance: \d+ pass, \d+ warn, \d+ fail", out), out  # flows/compliance, one line
    assert "Traceback" not in out and "Warning" not in out and "WARNING" not in out and "\x1b" not in out
    assert list(archive.rglob("*.png"))
    gallery = next((archive / "runs").glob("*/index.html"))
    assert f"review gallery: {gallery.resolve().as_uri()}" in lines  # whole, on one line


def test_readme_example_submits_an_aplus_job_and_waits() -> None:
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(import asyncio, httpx.*?)```", text, re.S)
    assert code, "the README lost its plugin API example"
    env = {"PIXII_POLL_INTERVAL_SECONDS": "0.2", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("40 ['a-plus-basic-preview'")


def test_estimate_selects_products_by_the_runs_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--product`` matches an ASIN or a marketplace key in any case, as ``listingflow run`` does, and
    says what it could not find."""
    monkeypatch.setenv("LISTINGFLOW_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("LISTINGFLOW_ARCHIVE", str(tmp_path / "archive"))
    args = ["estimate", "examples/catalog.csv", "--product", "us/b0chx1w1xy", "--product", "B0NOTTHERE"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Estimate for 1 products" in result.output
    assert "not in the catalog: B0NOTTHERE" in result.output


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["frobnicate"],
            "listingflow: No such command 'frobnicate'. Commands: run, estimate, providers, unknown, "
            "sandbox, bootstrap, server (--help describes them).",
        ),
        (["rn", "catalog.csv"], "listingflow: No such command 'rn'. Did you mean 'run'? Commands: run,"),
        (
            ["server", "frob"],
            "listingflow server: No such command 'frob'. Commands: status, stop (--help describes them).",
        ),
        (["--frob"], "listingflow: No such option: --frob (--help lists the options)"),
        (["server", "status", "--frob"], "listingflow server status: No such option: --frob (--help lists"),
    ],
)
def test_an_unknown_command_or_option_is_one_line_naming_it(args: list[str], line: str) -> None:
    """Not click's usage block: the command, what is wrong, the valid commands; exit 2."""
    result = CliRunner().invoke(app, args, prog_name="python -m listingflow.cli")
    assert result.exit_code == 2
    [printed] = result.output.splitlines()
    assert printed.startswith(line), printed


def test_estimate_fits_80_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The columns that say nothing are left out (nothing is done yet); names and figures stay whole."""
    monkeypatch.setenv("LISTINGFLOW_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("LISTINGFLOW_ARCHIVE", str(tmp_path / "archive"))
    args = ["estimate", "examples/catalog.csv", "--no-balances"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in result.output, result.output
    assert re.search(r"^provider +step +jobs +credits +unknown-price jobs$", result.output, re.M)
    assert re.search(r"^pixii +scale +4 +0 +4$", result.output, re.M), result.output  # Scale: unpublished
    assert re.search(r"^total +22 +187 +4$", result.output, re.M), result.output
    assert "already done" not in result.output


def test_estimate_narrower_than_its_table_is_one_line_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from flows.estimate import Estimate, EstimateLine
    from listingflow import cli

    est = Estimate(
        lines=[
            EstimateLine(provider="listingrva", step="copy", jobs=6, credits=60, already_done=2),
            EstimateLine(provider="pixii", step="scale", jobs=4, unknown_jobs=4),
        ]
    )
    for width in (80, 50):
        out = io.StringIO()
        monkeypatch.setattr(cli, "console", Console(file=out, width=width, color_system=None))
        cli._print_estimate(est, 6)
        lines = out.getvalue().splitlines()
        if width == 80:  # every column says something here, and the table still fits
            assert all(len(line) <= 80 for line in lines), lines
            assert re.fullmatch(r"listingrva +copy +6 +60 +0 +2", lines[3]), lines
            assert re.fullmatch(r"total +10 +60 +4 +2", lines[5]), lines
        else:
            assert lines[1:] == [
                "  listingrva copy: jobs 6, credits 60, unknown-price jobs 0, already done 2",
                "  pixii scale: jobs 4, credits 0, unknown-price jobs 4, already done 0",
                "  total: jobs 10, credits 60, unknown-price jobs 4, already done 2",
            ]
