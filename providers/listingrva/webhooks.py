"""Receiving ListingRVA's ``image.generated`` webhook (contract §9), so that image jobs need no polls.

Every ``GET /ai/jobs/:id`` counts against the same 30/min ``/api/ai/*`` bucket as the submissions
(contract §4, ASSUMPTION). Polling each image job once leaves half the bucket for paid work (the
benchmark's listing-copy phase: 0.49 of the limit in submissions with the bucket at 0.93). The
webhook ends an image job's wait without a request. Listing jobs have no published event: they are
still polled.

What the contract leaves open is handled as it advises: the hook is registered for the run (the
signing secret is shown once, so it lives only in this process, never in settings or logs) and
deleted at the end; every delivery is verified (hex HMAC-SHA256 of the raw body with that secret) and
refused with 401 otherwise; the answer is 2xx at once (5 s, no retries); events are de-duplicated on
the job id; unknown event names are accepted. The payload schema is undocumented, so an event is
used only when it names this job and carries its image URL(s); otherwise it wakes the waiter, which
confirms with ``GET /ai/jobs/:id``. A delivery that never comes (none is retried) costs one poll per
``webhook_reconcile_seconds``.

Contract: docs/providers/listingrva.md (cited below as "contract §N").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from providers.webhooks import WebhookInbox

from .client import verify_webhook_signature

PATH = "/listingrva/webhook"
IMAGE_EVENT = "image.generated"


def webhook_inbox(public_url: str, listen: str, secret: Callable[[], str]) -> WebhookInbox:
    """``secret`` is read per delivery: it is known only once the hook is registered at this URL."""

    def verify(raw: bytes, headers: Mapping[str, str]) -> bool:
        key, signature = secret(), headers.get("X-Webhook-Signature")
        return bool(key and signature) and verify_webhook_signature(raw, signature or "", key)

    return WebhookInbox(
        name="ListingRVA", path=PATH, public_url=public_url, listen=listen, verify=verify, parse=parse_event
    )


def parse_event(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """ASSUMPTION (contract §9): an envelope with an event name and a data object carrying the job id."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    inner = body.get("data")
    data: dict[str, Any] = inner if isinstance(inner, dict) else body
    return _job_id(data), {**data, "_event": str(body.get("event") or body.get("type") or "")}


def event_image_urls(job_id: str, data: dict[str, Any]) -> list[str]:
    """The image URLs a verified event carries for this job ([] when it names another job or none)."""
    if _job_id(data) != job_id:
        return []
    urls = data.get("imageUrls") or data.get("images") or []
    if isinstance(data.get("imageUrl"), str):
        urls = [data["imageUrl"], *urls]
    out: list[str] = []
    for u in urls:
        url = u.get("url") if isinstance(u, dict) else u
        if isinstance(url, str) and url.startswith(("http://", "https://")) and url not in out:
            out.append(url)
    return out


def _job_id(data: dict[str, Any]) -> str:
    return str(data.get("jobId") or data.get("job_id") or data.get("id") or "")
