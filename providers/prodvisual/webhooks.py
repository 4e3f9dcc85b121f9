"""Receiving ProdVisual's webhooks (contract §11), so that batches need no status polls.

ProdVisual counts status polls against the same 60 requests per minute as submissions (contract §4).
A client that polls each batch once can therefore submit at most 30 batches a minute: half the limit
(benchmarks: 0.51 of it in paid submissions, with the bucket itself at 0.99). With ``webhook_url`` on
the batch, ProdVisual POSTs the finished batch, and the whole bucket goes to submissions.

The inbox is a small Starlette app served by uvicorn in a background thread of the flow-run process
(uvicorn in a thread does not take over the process's signal handlers, which Prefect owns). It listens
on ``PRODVISUAL_WEBHOOK_LISTEN`` and tells ProdVisual the public ``PRODVISUAL_WEBHOOK_URL`` that routes
there; ``auto`` listens on a free loopback port and uses it as the URL (sandboxes only).

What the contract leaves open is handled as it advises: every event is verified with the API key that
created the job (HMAC-SHA256 of the raw body) and refused with 401 otherwise; the answer is 2xx at once
and the event is processed on the flow's event loop; events are de-duplicated on ``data.id``; an event
whose body is not a finished job (an unknown event name, a bare ``generation.completed`` without the
batch's results) only wakes the waiter, which then confirms with ``GET /v1/generations/{id}``; a
webhook that never comes costs one poll per ``webhook_reconcile_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import uvicorn
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from providers.sandbox.core import free_port

from .client import verify_webhook_signature
from .models import WebhookEvent

PATH = "/prodvisual/webhook"
logger = logging.getLogger("listingflow.prodvisual.webhooks")


class WebhookInbox:
    """Signed ProdVisual events for the jobs this process submitted, handed to whoever waits on them."""

    def __init__(self, public_url: str, listen: str, api_key: SecretStr | None) -> None:
        self._public_url = public_url
        host, _, port = listen.rpartition(":")
        self._host, self._port = host or "0.0.0.0", int(port or 0)  # noqa: S104 - a receiver must be reachable
        self._api_key = api_key.get_secret_value() if api_key else ""
        self._events: dict[str, dict[str, Any]] = {}  # job id -> the latest event's data, until taken
        self._arrived: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._starting: asyncio.Future[None] | None = None
        self.url = ""
        self.received = 0
        self.refused = 0

    async def start(self) -> None:
        """Serve until ``aclose``; returns once the listener accepts connections (every caller: the
        first batches of a run are submitted together, and none may go out before the URL is known)."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        auto = self._public_url == "auto"
        if auto:
            self._host, self._port = "127.0.0.1", self._port or free_port()
        elif not self._port:
            self._port = free_port()
        app = Starlette(routes=[Route(PATH, self._receive, methods=["POST"])])
        config = uvicorn.Config(app, host=self._host, port=self._port, log_level="warning", lifespan="off",
                                access_log=False)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="prodvisual-webhooks", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"ProdVisual webhook receiver failed to listen on {self._host}:{self._port}")
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{self._port}{PATH}" if auto else self._public_url

    def expect(self, job_id: str) -> None:
        """Wait for this job's event (called at submission: the event may arrive before ``wait``)."""
        self._arrived.setdefault(job_id, asyncio.Event())

    def expects(self, job_id: str) -> bool:
        return job_id in self._arrived

    async def wait(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The job's event data once it arrives (taken: the next call waits for a new one), or None."""
        arrived = self._arrived.setdefault(job_id, asyncio.Event())
        try:
            await asyncio.wait_for(arrived.wait(), timeout=max(0.0, timeout))
        except TimeoutError:
            return None
        arrived.clear()
        return self._events.pop(job_id, None)

    def forget(self, job_id: str) -> None:
        self._arrived.pop(job_id, None)
        self._events.pop(job_id, None)

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        self._server = None
        self._starting = None

    # ---- the receiver (runs on the server thread) ----

    async def _receive(self, request: Request) -> PlainTextResponse:
        raw = await request.body()
        if not self._api_key or not verify_webhook_signature(raw, request.headers.get("X-ProdVisual-Signature"),
                                                             self._api_key):  # fmt: skip
            self.refused += 1
            return PlainTextResponse("invalid signature", status_code=401)
        try:
            event = WebhookEvent.model_validate_json(raw)
        except ValidationError:
            self.refused += 1
            return PlainTextResponse("not a ProdVisual event", status_code=400)
        job_id = str(event.data.get("id") or "")
        if job_id and self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, job_id, event)
        return PlainTextResponse("ok")

    def _deliver(self, job_id: str, event: WebhookEvent) -> None:
        if job_id not in self._arrived:
            logger.debug("ProdVisual event %s for job %s, which this run does not wait for", event.event, job_id)
            return
        self.received += 1
        self._events[job_id] = {**event.data, "_event": event.event}
        self._arrived[job_id].set()
