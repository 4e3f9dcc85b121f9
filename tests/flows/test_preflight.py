"""Pre-flight: a run that cannot succeed spends nothing and says why, one line per problem; a row a
provider cannot serve is rejected before anything is paid for it. The sandboxes' ledgers are the judge."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.run import FIRST_REQUESTS

from .helpers import EXAMPLE, net_charged, paid_submissions, run_flow, subprocess_env

pytestmark = pytest.mark.usefixtures("prefect_server")


def nothing_sent(sandboxes: dict[str, Any]) -> bool:
    """No charge and not even a paid request reached any sandbox."""
    posts = [r for box in sandboxes.values() for r in box.requests if r.method == "POST"]
    return sum(paid_submissions(sandboxes).values()) == 0 and not posts


def catalog_rows(
    tmp: Path,
    count: int,
    *,
    without_image: str | None = None,
    unknown_style: str | None = None,
    style: str = "neon_unicorn",
) -> str:
    """The example catalog's first ``count`` rows; ``without_image``: that ASIN's row has no image;
    ``unknown_style``: that ASIN's row asks for image ``style`` (by default one ProdVisual does not
    have)."""
    lines = Path(EXAMPLE).read_text().splitlines()[: count + 1]
    if without_image:
        lines = [
            ln.replace("https://m.media-amazon.com/images/I/81board-main.jpg", "").replace(
                "https://m.media-amazon.com/images/I/81board-set.jpg", ""
            )
            if ln.startswith(without_image)
            else ln
            for ln in lines
        ]
    if unknown_style:
        override = f'"{{""image_options"": {{""styles"": [""{style}""]}}}}"'
        lines = [ln + override if ln.startswith(unknown_style) else ln for ln in lines]
    path = tmp / "catalog.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.mark.parametrize("case", ["no credentials", "no bucket"])
async def test_an_unusable_s3_archive_stops_the_run_before_anything_is_paid(
    case: str,
    sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
    moto_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    from flows.settings import reset_settings

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # credentials an earlier test's session cached
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(lf_env["tmp"] / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(lf_env["tmp"] / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("LISTINGFLOW_S3_ENDPOINT_URL", moto_url)
    if case == "no bucket":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    reset_settings()

    state, summary = await run_flow(archive="s3://listingflow-missing/run")

    assert state.is_failed() and nothing_sent(sandboxes)
    [line] = summary.refused
    assert line.startswith("archive s3://listingflow-missing/run is not writable: "), line
    assert ("Unable to locate credentials" if case == "no credentials" else "NoSuchBucket") in line, line
    assert line in state.message


async def test_missing_and_rejected_credentials_stop_the_run_one_line_each(
    sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PIXII_API_KEY")
    monkeypatch.setenv("PRODVISUAL_API_KEY", "pv_live_not_the_right_key_42")

    state, summary = await run_flow()

    assert state.is_failed() and nothing_sent(sandboxes)
    assert sorted(summary.refused) == summary.refused and len(summary.refused) == 2, summary.refused
    pixii, prodvisual = summary.refused
    assert pixii.startswith("pixii: no credential: set PIXII_API_KEY"), pixii
    assert prodvisual.startswith("prodvisual: credential rejected (") and "PRODVISUAL_API_KEY" in prodvisual
    assert "pv_live_not_the_right_key_42" not in state.message + "".join(summary.refused)
    held = await slots_held(lf_env["prefix"])  # nothing is held but a balance read's lease until its
    # rate window is over: its own slot, and for a batching provider the first batch's and first poll's
    ahead = {"prodvisual-api": FIRST_REQUESTS}
    assert not [n for n in held if n.endswith("-inflight")], held
    assert all(n <= ahead.get(name.split("-", 1)[1], 1) for name, n in held.items()), held


async def slots_held(prefix: str) -> dict[str, int]:
    """The run's limits on the Prefect server that still have slots taken."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        limits = await client.read_global_concurrency_limits(limit=200)
    return {x.name: x.active_slots for x in limits if x.name.startswith(prefix) and x.active_slots}


async def test_a_row_a_provider_cannot_serve_is_rejected_and_nothing_is_spent_on_it(
    sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
) -> None:
    catalog = catalog_rows(lf_env["tmp"], 4, without_image="B09V3KXJPB", unknown_style="B0C7WZ9F2M")

    state, summary = await run_flow(catalog=catalog, steps=["copy", "images"])

    assert state.is_completed(), summary.failure_report()
    assert {p.asin for p in summary.products} == {"B0CHX1W1XY", "B0BQRG7K5N"} and summary.count(
        "complete"
    ) == 2
    no_image, bad_style = summary.rejected_rows
    assert str(no_image).startswith(f"{catalog}:4 (asin B09V3KXJPB): images (prodvisual): "), no_image
    assert "image_url is required for ProdVisual" in str(no_image)
    assert str(bad_style).startswith(f"{catalog}:5 (asin B0C7WZ9F2M): images (prodvisual): "), bad_style
    assert "unknown ProdVisual style 'neon_unicorn'" in str(bad_style)
    assert {str(no_image), str(bad_style)} <= set(summary.failure_report())
    # not even the listing copy before the step they cannot run was paid for (nor product records made)
    assert paid_submissions(sandboxes)["listingrva"] == 2
    assert {p["title"][:6] for p in sandboxes["listingrva"].products.values()} == {"Stainl", "Organi"}
    assert not [
        c for box in sandboxes.values() for c in box.charges if c.asin in ("B09V3KXJPB", "B0C7WZ9F2M")
    ]


async def test_the_style_list_is_read_only_for_a_style_that_is_not_publicly_documented(
    sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
) -> None:
    styles_read = lambda: sum(r.route == "styles" for r in sandboxes["prodvisual"].requests)  # noqa: E731

    state, summary = await run_flow(catalog=catalog_rows(lf_env["tmp"], 2), steps=["images"])
    assert state.is_completed() and summary.count("complete") == 2, summary.failure_report()
    assert styles_read() == 0  # white_bg is one of the publicly documented ids: known without the list

    listed = catalog_rows(lf_env["tmp"], 3, unknown_style="B09V3KXJPB", style="kitchen")
    state, summary = await run_flow(catalog=listed, steps=["images"])
    assert state.is_completed() and summary.count("complete") == 3, summary.failure_report()
    assert styles_read() == 1  # one of the 14 unpublished ids: checked against the list, read once
    assert not summary.rejected_rows


async def test_base_urls_in_the_contracts_documented_form_work(
    sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "PRODVISUAL_BASE_URL", sandboxes["prodvisual"].public_url + "/v1"
    )  # as the contract writes it
    monkeypatch.setenv("LISTINGRVA_BASE_URL", sandboxes["listingrva"].public_url)  # the bare host
    catalog = catalog_rows(lf_env["tmp"], 2)

    state, summary = await run_flow(catalog=catalog, steps=["copy", "images"])

    assert state.is_completed(), summary.refused or summary.failure_report()
    assert paid_submissions(sandboxes)["listingrva"] == 2 and paid_submissions(sandboxes)["prodvisual"] >= 1
    assert not [
        r for name in ("listingrva", "prodvisual") for r in sandboxes[name].requests if r.status == 404
    ]


async def test_a_base_url_that_is_not_the_api_stops_the_run(
    sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = sandboxes["prodvisual"].public_url + "/v2"
    monkeypatch.setenv("PRODVISUAL_BASE_URL", wrong)

    state, summary = await run_flow()

    assert state.is_failed() and nothing_sent(sandboxes)
    assert summary.refused == [summary.refused[0]] and summary.refused[0].startswith(
        f"prodvisual: {wrong} cannot be used ("
    )
    assert "PRODVISUAL_BASE_URL" in summary.refused[0]


async def test_a_budget_holds_with_an_unpublished_price(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    # A+ is 20 credits a product (published, 120 in all), a Scale job 6 (unpublished: learned from the
    # first one). Before, Scale counted as 0 and every Scale job was submitted while the run was under 130.
    state, summary = await run_flow(steps=["aplus", "scale"], budget={"max_credits": 130})

    assert net_charged(sandboxes)["pixii"] <= 130
    assert sum(net_charged(sandboxes).values()) <= 130
    scale_jobs = sorted(
        (j for j in sandboxes["pixii"].jobs.values() if j.kind == "scale"), key=lambda j: j.created
    )
    assert scale_jobs, "Scale reads only the image: it runs beside A+"
    # the first Scale job teaches the price and runs alone: the next one goes only once it is known
    assert all(j.created >= scale_jobs[0].done for j in scale_jobs[1:]), (
        "a second unknown-priced job ran alongside"
    )
    assert state.is_failed()
    refused = [s for s in summary.cost.skipped if "budget: not submitted" in s]
    assert refused, summary.cost.skipped
    spent = net_charged(sandboxes)["pixii"]
    assert any(
        n.startswith("budget: ") and "job(s) not submitted (max_credits 130" in n for n in summary.notes
    )
    assert all(f"{spent} of max_credits 130 credits spent" in s or "credits spent" in s for s in refused)


def test_the_cli_prints_one_line_per_problem_and_exits_2(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    blocker = lf_env["tmp"] / "a-file"
    blocker.write_text("not a folder")
    env = subprocess_env({"PIXII_API_KEY": "pk_live_wrong_key_7"})
    proc = subprocess.run(
        [sys.executable, "-m", "listingflow.cli", "run", EXAMPLE, "--archive", str(blocker / "archive")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "pk_live_wrong_key_7" not in out
    lines = out.splitlines()
    start = lines.index("run refused, nothing was submitted:")
    problems = lines[start + 1 :]
    assert len(problems) == 2, out
    assert problems[0].startswith(f"  archive {blocker / 'archive'} is not writable: "), out
    assert problems[1].startswith("  pixii: credential rejected ("), out
    assert nothing_sent(sandboxes)


@pytest.mark.parametrize(
    ("settings", "given", "used"),
    [
        (
            "providers.prodvisual.plugin:ProdVisualSettings",
            "https://api.prodvisual.com/v1",
            "https://api.prodvisual.com",
        ),
        (
            "providers.prodvisual.plugin:ProdVisualSettings",
            "https://api.prodvisual.com/",
            "https://api.prodvisual.com",
        ),
        (
            "providers.listingrva.plugin:ListingRVASettings",
            "https://api.listingrvaai.com",
            "https://api.listingrvaai.com/api",
        ),
        (
            "providers.listingrva.plugin:ListingRVASettings",
            "https://api.listingrvaai.com/api/",
            "https://api.listingrvaai.com/api",
        ),
        ("providers.pixii.plugin:PixiiSettings", "https://api.pixii.ai/v1/api", "https://api.pixii.ai"),
    ],
)
def test_base_urls_are_normalized_without_doubled_path_segments(settings: str, given: str, used: str) -> None:
    import importlib

    module, _, name = settings.partition(":")
    assert getattr(importlib.import_module(module), name)(base_url=given).base_url == used
