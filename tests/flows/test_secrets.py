"""Secrets: credentials never leave the HTTP Authorization header.

A full catalog run with recognizable keys (and a run with a wrong key, so authentication errors are
raised and reported), then every place the runs wrote to is searched: Prefect logs, artifacts, flow
and task runs, persisted task results, the archive and manifests, the local state directory, the run
summary, exception messages and Python log records. Webhook signatures are checked with the
providers' verify functions: valid, tampered, wrong key, in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.listingrva.client import verify_webhook_signature as rva_verify
from providers.prodvisual.client import verify_webhook_signature as pv_verify
from tests.conftest import sandbox_updates

from .helpers import run_flow

RANDOM = uuid.uuid4().hex
KEYS = {
    "pixii": f"pk_live_PIXIISECRET{RANDOM[:16]}",
    "listingrva": f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.RVASECRET{RANDOM[8:24]}",
    "prodvisual": f"pv_live_PVSECRET{RANDOM[16:32]}",
}
WRONG = f"pk_live_WRONGKEY{uuid.uuid4().hex[:16]}"
PREFIX = {"pixii": "PIXII_", "listingrva": "LISTINGRVA_", "prodvisual": "PRODVISUAL_"}


def needles() -> list[str]:
    """Each key, and the random core of each key (a truncated or re-encoded key still shows it)."""
    out = [*KEYS.values(), WRONG]
    out += [k[-16:] for k in KEYS.values()] + [WRONG[-16:]]
    return out


def leaks(text: str) -> list[str]:
    return [n for n in needles() if n in text]


@pytest.fixture
def keyed_sandboxes(lf_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The three sandboxes accepting only this test's keys; provider settings use those keys."""
    from flows.settings import reset_settings
    from listingflow.local import running_sandboxes
    from providers.registry import load_providers

    updates = sandbox_updates(**{name: {"api_keys": [key]} for name, key in KEYS.items()})
    registry = load_providers()
    with running_sandboxes(dict(registry.providers), job_seconds=0.3, config_updates=updates) as boxes:
        for name, key in KEYS.items():
            monkeypatch.setenv(f"{PREFIX[name]}API_KEY", key)
        reset_settings()
        yield boxes
    reset_settings()


async def _logs(flow_run_ids: list[Any], expect: str) -> list[Any]:
    """The runs' log lines as the Prefect API stores them (they are shipped in the background)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    wanted = LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
    async with get_client() as client:
        for _ in range(100):
            logs: list[Any] = []
            while True:
                page = await client.read_logs(log_filter=wanted, limit=200, offset=len(logs))
                logs += page
                if len(page) < 200:
                    break
            if sum(1 for log in logs if expect in log.message) >= len(flow_run_ids):
                return logs
            await asyncio.sleep(0.2)
    raise AssertionError(f"the runs' final log lines never reached the API ({len(logs)} lines read)")


async def _prefect_records(flow_run_ids: list[Any]) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    records: dict[str, str] = {}
    runs = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
    async with get_client() as client:
        for run_id in flow_run_ids:
            flow_run = await client.read_flow_run(run_id)
            records[f"flow-run {run_id} parameters"] = json.dumps(flow_run.parameters, default=str)
            records[f"flow-run {run_id}"] = flow_run.model_dump_json()
        # (the typed client sends empty filters that the server turns into joins: flow-level
        # artifacts have no task run, so they would never match; post the filter as the API takes it)
        response = await client._client.post(
            "/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [str(i) for i in flow_run_ids]}},
                "limit": 200,
                "offset": 0,
                "sort": "CREATED_DESC",
            },
        )
        response.raise_for_status()
        artifacts = response.json()
        records["artifacts"] = json.dumps(artifacts)
        records["artifact keys"] = " ".join(sorted(str(a["key"]) for a in artifacts))
        # task runs reach the API through events the server records in the background: wait for them
        for _ in range(150):
            task_runs = await client.read_task_runs(
                flow_run_filter=runs, sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=200
            )
            if len(task_runs) > 5:
                break
            await asyncio.sleep(0.2)
        records["task runs"] = json.dumps([t.model_dump(mode="json") for t in task_runs])
        records["task run count"] = str(len(task_runs))
    return records


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.usefixtures("prefect_server")
async def test_no_credential_appears_anywhere_a_run_writes(
    keyed_sandboxes: dict[str, Any],
    lf_env: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    keyed_sandboxes["pixii"].reconfigure(fail_asins=["B0BQRG7K5N"])  # a failed job, reported
    state, summary = await run_flow(products=["B0CHX1W1XY", "B0BQRG7K5N"])
    by = {p.asin: p for p in summary.products}
    assert by["B0CHX1W1XY"].status == "complete", summary.failure_report()
    assert by["B0BQRG7K5N"].status == "partial"
    # the keys really were used: every sandbox accepted authenticated requests
    for name, box in keyed_sandboxes.items():
        assert any(r.status < 300 and r.route not in ("styles",) for r in box.requests), name
        assert not [r for r in box.requests if r.status == 401], name

    # a run with a wrong Pixii key: refused by pre-flight's authenticated request, reported without the key
    keyed_sandboxes["pixii"].reconfigure(fail_asins=[])
    monkeypatch.setenv("PIXII_API_KEY", WRONG)
    submitted = len([r for r in keyed_sandboxes["pixii"].requests if r.method == "POST"])
    bad_state, bad = await run_flow(
        products=["B0BQRG7K5N"], steps=["aplus"], archive=str(lf_env["tmp"] / "wrong-key")
    )
    assert bad_state.is_failed()
    [auth_error] = bad.refused
    assert auth_error.startswith("pixii: credential rejected ("), auth_error
    assert keyed_sandboxes["pixii"].requests[-1].status == 401
    assert len([r for r in keyed_sandboxes["pixii"].requests if r.method == "POST"]) == submitted

    flow_runs = [state.state_details.flow_run_id, bad_state.state_details.flow_run_id]
    texts: dict[str, str] = {
        "state messages": f"{state.message}\n{bad_state.message}",
        "summaries": summary.model_dump_json() + bad.model_dump_json(),
        "failure reports": "\n".join(summary.failure_report() + bad.failure_report()),
        "auth error": auth_error,
        "python log records": "\n".join(
            f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
        ),
    }
    logs = await _logs(flow_runs, "products:")
    texts["prefect logs"] = "\n".join(log.message for log in logs)
    texts.update(await _prefect_records(flow_runs))
    for path, data in _files(lf_env["tmp"]).items():  # archive, manifests, cached results, locks, spool
        texts[path] = data.decode("utf-8", "replace")

    # the search is not vacuous: the places searched hold what the runs produced
    assert len(logs) > 10 and "cost-summary" in texts["artifact keys"] and int(texts["task run count"]) > 5
    assert any("/results/" in p for p in texts) and any(p.endswith("manifest.json") for p in texts)
    assert any(p.endswith("listingrva-copy.json") for p in texts)

    found = {where: leaks(text) for where, text in texts.items() if leaks(text)}
    assert found == {}, f"credentials leaked into: {sorted(found)}"


def test_the_run_form_has_no_place_for_a_credential() -> None:
    """Keys come from settings only: no flow parameter, at any depth, can carry one."""
    from prefect.utilities.callables import parameter_schema

    from flows.catalog_flow import catalog_flow

    schema = parameter_schema(catalog_flow).model_dump(by_alias=True)
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "properties" and isinstance(value, dict):
                    names.extend(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    assert "catalog" in names and "styles" in names  # nested models are walked
    credential = re.compile(
        r"(^|_)(key|api_?key|token|secret|password|credentials?|auth)($|_)", re.IGNORECASE
    )
    suspicious = [n for n in names if credential.search(n)]
    assert suspicious == []


# ---- webhook signatures ---------------------------------------------------------------------------------

BODY = json.dumps(
    {"event": "image.generated", "data": {"jobId": "job_1", "imageUrl": "https://cdn.x/y.png"}}
).encode()


def _sign(key: str, body: bytes = BODY) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("verify", [rva_verify, pv_verify], ids=["listingrva", "prodvisual"])
def test_webhook_signature_valid_tampered_and_wrong_key(verify: Any) -> None:
    secret = KEYS["prodvisual"]
    good = _sign(secret)
    assert verify(BODY, good, secret)
    assert verify(BODY, good.upper(), secret)  # hex case does not matter
    tampered = BODY.replace(b"job_1", b"job_2")
    assert not verify(tampered, good, secret)
    assert not verify(BODY + b" ", good, secret)
    assert not verify(BODY, _sign("another-key"), secret)
    assert not verify(BODY, good[:-1], secret)
    assert not verify(BODY, "", secret)
    assert not verify(BODY, good, "")  # no key configured: nothing verifies


def test_webhook_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import providers.listingrva.client as rva
    import providers.prodvisual.client as pv

    real = hmac.compare_digest
    for module, verify in ((rva, rva_verify), (pv, pv_verify)):
        seen: list[tuple[Any, Any]] = []

        def spy(a: Any, b: Any, _seen: list[tuple[Any, Any]] = seen) -> bool:
            _seen.append((a, b))
            return real(a, b)

        monkeypatch.setattr(module.hmac, "compare_digest", spy)
        assert not verify(BODY, "0" * 64, "k")
        assert seen, f"{module.__name__} does not compare with hmac.compare_digest"
        monkeypatch.undo()


def test_listingrva_sandbox_deliveries_verify_with_the_webhook_secret() -> None:
    """A real delivery, signed by the sandbox with the secret ListingRVA returned once."""
    import httpx

    from providers.listingrva.sandbox import ListingRVASandbox

    sandbox = ListingRVASandbox(ListingRVASandbox.default_config().model_copy(update={"job_seconds": 0.05}))
    sandbox.start()
    try:
        auth = {"Authorization": f"Bearer {ListingRVASandbox.default_config().api_keys[0]}"}
        with httpx.Client(base_url=sandbox.public_url, headers=auth, timeout=10) as http:
            hook = http.post(
                "/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["image.generated"]}
            ).json()
            product = http.post("/products", json={"title": "Bottle B0CHX1W1XY"}).json()
            job = http.post(
                "/ai/image",
                json={"productId": product["id"], "style": "CLEAN_WHITE_BG", "platform": "amazon"},
            ).json()
            for _ in range(50):
                time.sleep(0.1)
                if http.get(f"/ai/jobs/{job['jobId']}").json().get("status") == "completed":
                    break
        [delivery] = sandbox.deliveries
        assert rva_verify(delivery["body"], delivery["signature"], hook["secret"])
        assert not rva_verify(delivery["body"] + b"\n", delivery["signature"], hook["secret"])
        assert not rva_verify(delivery["body"], delivery["signature"], "whsec_" + "0" * 32)
    finally:
        sandbox.stop()
