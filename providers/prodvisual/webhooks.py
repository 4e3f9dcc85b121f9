"""Receiving ProdVisual's webhooks (contract §11), so that batches need no status polls.

ProdVisual counts status polls against the same 60 requests per minute as submissions (contract §4).
A client that polls each batch once can therefore submit at most 30 batches a minute: half the limit
(benchmarks: 0.51 of it in paid submissions, with the bucket itself at 0.99). With ``webhook_url`` on
the batch, ProdVisual POSTs the finished batch, and the whole bucket goes to submissions.

The receiver is the shared ``providers.webhooks.WebhookInbox``, listening on
``PRODVISUAL_WEBHOOK_LISTEN``; ProdVisual is told the public ``PRODVISUAL_WEBHOOK_URL`` that routes
there (``auto``: a free loopback port, sandboxes only).

What the contract leaves open is handled as it advises: every event is verified with the API key that
created the job (HMAC-SHA256 of the raw body) and refused with 401 otherwise; the answer is 2xx at once
and the event is processed on the flow's event loop; events are de-duplicated on ``data.id``; an event
whose body is not a finished job (an unknown event name, a bare ``generation.completed`` without the
batch's results) only wakes the waiter, which then confirms with ``GET /v1/generations/{id}``; a
webhook that never comes costs one poll per ``webhook_reconcile_seconds``.

Contract: docs/providers/prodvisual.md (cited below as "contract §N").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr, ValidationError

from providers.webhooks import WebhookInbox

from .client import verify_webhook_signature
from .models import WebhookEvent

PATH = "/prodvisual/webhook"


def webhook_inbox(public_url: str, listen: str, api_key: SecretStr | None) -> WebhookInbox:
    key = api_key.get_secret_value() if api_key else ""

    def verify(raw: bytes, headers: Mapping[str, str]) -> bool:
        return bool(key) and verify_webhook_signature(raw, headers.get("X-ProdVisual-Signature"), key)

    def parse(raw: bytes) -> tuple[str, dict[str, Any]] | None:
        try:
            event = WebhookEvent.model_validate_json(raw)
        except ValidationError:
            return None
        return str(event.data.get("id") or ""), {**event.data, "_event": event.event}

    return WebhookInbox(
        name="ProdVisual", path=PATH, public_url=public_url, listen=listen, verify=verify, parse=parse
    )
