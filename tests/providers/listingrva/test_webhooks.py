"""Image jobs finished by ListingRVA's signed ``image.generated`` webhook instead of polls (contract §9).

Contract: docs/providers/listingrva.md (cited below as "contract §N").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import pytest

from providers.contract import JobRef, Step, StepContext
from providers.listingrva.plugin import ListingRVAProvider
from providers.listingrva.sandbox import ListingRVASandbox
from providers.listingrva.webhooks import PATH, event_image_urls
from providers.sandbox.core import Fault, FaultRule

from .conftest import make_settings, product


def _polls(sandbox: ListingRVASandbox) -> int:
    return sum(1 for r in sandbox.requests if r.route == "ai_job")


async def _image(provider: ListingRVAProvider, asin: str, style: str = "CLEAN_WHITE_BG") -> JobRef:
    p = product(asin, title=f"Webhook product {asin}")
    prepared = await provider.prepare(p)
    [request] = provider.build_requests(Step.IMAGES, StepContext(product=p, prepared=prepared, style=style))
    return await provider.submit(Step.IMAGES, request)


@pytest.fixture
async def hooked(sandbox, http):
    provider = ListingRVAProvider(
        http, make_settings(sandbox, webhook_url="auto", webhook_reconcile_seconds=30)
    )
    yield provider
    await provider.aclose()


async def test_an_image_job_finishes_on_its_webhook_without_a_poll(hooked, sandbox) -> None:
    polls = _polls(sandbox)
    ref = await _image(hooked, "B0HOOKR001")
    result = await hooked.wait(JobRef.model_validate_json(ref.model_dump_json()))
    assert ref.meta["webhook"] is True
    assert result.status == "completed" and [o.label for o in result.outputs] == ["clean_white_bg-1"]
    assert result.credits_charged == ref.credits_at_submit
    assert _polls(sandbox) == polls  # the signed event carried the image
    assert hooked._inbox is not None and hooked._inbox.received == 1
    # the run's hook exists while it runs, with the secret only this process knows ...
    [hook] = sandbox.webhooks.values()
    assert hook["url"] == hooked._inbox.url and hook["events"] == ["image.generated"]
    await hooked.aclose()
    assert sandbox.webhooks == {}  # ... and is deleted at the end


async def test_listing_jobs_are_still_polled(hooked, sandbox) -> None:
    p = product("B0HOOKR002", title="Webhook copy product")
    prepared = await hooked.prepare(p)
    [request] = hooked.build_requests(Step.COPY, StepContext(product=p, prepared=prepared))
    ref = await hooked.submit(Step.COPY, request)
    polls = _polls(sandbox)
    result = await hooked.wait(ref)
    assert ref.meta["webhook"] is False and result.copy_result is not None
    assert _polls(sandbox) > polls


async def test_unsigned_or_forged_events_are_refused(hooked, http) -> None:
    ref = await _image(hooked, "B0HOOKR003")
    inbox = hooked._inbox
    body = json.dumps(
        {
            "event": "image.generated",
            "data": {"jobId": "job_forged", "imageUrl": "https://evil.example.com/x.png"},
        }
    ).encode()
    inbox.expect("job_forged")
    unsigned = await http.post(inbox.url, content=body)
    forged = await http.post(
        inbox.url,
        content=body,
        headers={"X-Webhook-Signature": hmac.new(b"someone-else", body, hashlib.sha256).hexdigest()},
    )
    garbled = await http.post(inbox.url, content=body, headers={"X-Webhook-Signature": b"\xe9" * 64})
    assert unsigned.status_code == forged.status_code == garbled.status_code == 401 and inbox.refused == 3
    assert (await hooked.wait(ref)).status == "completed"


async def test_an_event_without_the_image_only_wakes_the_waiter(hooked, sandbox, http) -> None:
    """The payload schema is undocumented: an event that does not carry this job's image URL is
    confirmed with one ``GET /ai/jobs/:id`` instead of being trusted."""
    sandbox.reconfigure(job_seconds=1.0)
    try:
        ref = await _image(hooked, "B0HOOKR004")
    finally:
        sandbox.reconfigure(job_seconds=0.2)
    body = json.dumps({"event": "job.completed", "data": {"jobId": ref.job_id}}).encode()
    sig = hmac.new(hooked._hook_secret.encode(), body, hashlib.sha256).hexdigest()
    assert (
        await http.post(hooked._inbox.url, content=body, headers={"X-Webhook-Signature": sig})
    ).status_code == 200
    polls = _polls(sandbox)
    result = await hooked.wait(ref)
    assert result.status == "completed" and len(result.outputs) == 1
    assert _polls(sandbox) >= polls + 1


async def test_a_webhook_that_never_comes_falls_back_to_polling(sandbox, http) -> None:
    provider = ListingRVAProvider(
        http, make_settings(sandbox, webhook_url="auto", webhook_reconcile_seconds=0.3)
    )
    try:
        await provider._webhooks()
        for (
            hook
        ) in sandbox.webhooks.values():  # ListingRVA cannot reach us: the delivery is lost (no retries)
            hook["url"] = "http://127.0.0.1:9" + PATH
        ref = await _image(provider, "B0HOOKR005")
        polls = _polls(sandbox)
        result = await provider.wait(ref)
        assert result.status == "completed" and _polls(sandbox) > polls
    finally:
        await provider.aclose()


async def test_a_refused_registration_falls_back_to_polling(sandbox, http, caplog) -> None:
    """Webhooks need an active Pro session (contract §9): a refusal is a warning, not a failed run."""
    sandbox.reconfigure(faults=[FaultRule(route="webhooks_create", sequence=[Fault(status=403)])])
    provider = ListingRVAProvider(http, make_settings(sandbox, webhook_url="auto"))
    try:
        with caplog.at_level(logging.WARNING, logger="listingflow.listingrva"):
            ref = await _image(provider, "B0HOOKR006")
        assert ref.meta["webhook"] is False and "webhook not registered" in caplog.text
        assert (await provider.wait(ref)).status == "completed"
    finally:
        sandbox.reconfigure(faults=[])
        await provider.aclose()


def test_only_an_event_naming_the_job_gives_its_images() -> None:
    data = {
        "jobId": "job_1",
        "imageUrl": "https://cdn.listingrvaai.com/a.png",
        "imageUrls": ["https://cdn.listingrvaai.com/a.png", "https://cdn.listingrvaai.com/b.png"],
    }
    assert event_image_urls("job_1", data) == [
        "https://cdn.listingrvaai.com/a.png",
        "https://cdn.listingrvaai.com/b.png",
    ]
    assert event_image_urls("job_2", data) == []
    assert event_image_urls("job_1", {"jobId": "job_1", "imageUrl": "javascript:alert(1)"}) == []
    assert PATH.startswith("/")
