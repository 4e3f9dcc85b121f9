"""A receiver for providers' signed job webhooks, so that finished jobs need no status polls.

ProdVisual and ListingRVA both count status polls against the bucket their submissions are paced by
(60/min and 30/min): polling each job once halves what a run can submit. A webhook ends the wait
without a request. Each provider says how an event is verified and which job it is about; the rest is
the same and lives here.

The inbox is a small Starlette app served by uvicorn in a background thread of the flow-run process
(uvicorn in a thread does not take over the process's signal handlers, which Prefect owns). It listens
on ``listen`` and is reachable at the public ``url`` that routes there; ``auto`` listens on a free
loopback port and uses it as the URL (sandboxes only). The answer is 2xx at once (providers give the
receiver seconds and do not retry) and the event is handed to the flow's event loop. An event that
arrives before its job is expected (a job that finished while its submission was still being
recorded) is kept for a while, so it is not lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from providers.serving import ThreadedServer

logger = logging.getLogger("listingflow.webhooks")

Verify = Callable[[bytes, Mapping[str, str]], bool]
"""True when the raw body carries a valid signature (the headers hold it)."""
Parse = Callable[[bytes], "tuple[str, dict[str, Any]] | None"]
"""The job an event is about and its data; None when the body is not an event of this provider."""

EARLY_EVENTS_KEPT = 10_000  # events for jobs not (yet) expected: the oldest are dropped first


class WebhookInbox:
    """Signed events for the jobs this process submitted, handed to whoever waits on them."""

    def __init__(
        self, *, name: str, path: str, public_url: str, listen: str, verify: Verify, parse: Parse
    ) -> None:
        self.name, self.path = name, path
        self._public_url = public_url
        host, _, port = listen.rpartition(":")
        self._host, self._port = host or "0.0.0.0", int(port or 0)  # a receiver must be reachable
        self._verify, self._parse = verify, parse
        self._events: dict[str, dict[str, Any]] = {}  # job id -> the latest event's data, until taken
        self._early: OrderedDict[str, dict[str, Any]] = OrderedDict()  # events no waiter expected yet
        self._arrived: dict[str, asyncio.Event] = {}
        self._orphan: asyncio.Event = asyncio.Event()  # set when an event no waiter expects arrives
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ThreadedServer | None = None
        self._starting: asyncio.Future[None] | None = None
        self.url = ""
        self.received = 0
        self.refused = 0

    async def start(self) -> None:
        """Serve until ``aclose``; returns once the listener accepts connections (every caller: the
        first jobs of a run are submitted together, and none may go out before the URL is known)."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        auto = self._public_url == "auto"
        if auto:  # the URL is derived from the port: any free one (a fixed one collides on a shared host)
            self._host, self._port = "127.0.0.1", 0
        app = Starlette(routes=[Route(self.path, self._receive, methods=["POST"])])
        self._server = ThreadedServer(app, host=self._host, port=self._port, name=f"{self.name}-webhooks")
        self._port = await asyncio.to_thread(self._server.start)
        self.url = f"http://127.0.0.1:{self._port}{self.path}" if auto else self._public_url

    def expect(self, job_id: str) -> None:
        """Wait for this job's event (called at submission: the event may arrive before ``wait``)."""
        arrived = self._arrived.setdefault(job_id, asyncio.Event())
        if (data := self._early.pop(job_id, None)) is not None:
            self._events[job_id] = data
            self.received += 1
            arrived.set()

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

    async def claim(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> str | None:
        """The job of an event no waiter expects that ``match`` recognises, once one has arrived (None
        after ``timeout``). Such an event at this receiver is about a job this process submitted but
        whose submit answer was lost; the job becomes expected, so ``wait`` returns that event."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._orphan.clear()
            for job_id, data in list(self._early.items()):
                if match(data):
                    self.expect(job_id)  # takes the event out of the early ones
                    return job_id
            try:
                await asyncio.wait_for(self._orphan.wait(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                return None

    def forget(self, job_id: str) -> None:
        self._arrived.pop(job_id, None)
        self._events.pop(job_id, None)

    async def aclose(self) -> None:
        if self._server is None:
            return
        await asyncio.to_thread(self._server.stop, 10)
        self._server = None
        self._starting = None

    # ---- the receiver (runs on the server thread) ----

    async def _receive(self, request: Request) -> PlainTextResponse:
        raw = await request.body()
        if not self._verify(raw, request.headers):
            self.refused += 1
            return PlainTextResponse("invalid signature", status_code=401)
        parsed = self._parse(raw)
        if parsed is None:
            self.refused += 1
            return PlainTextResponse(f"not a {self.name} event", status_code=400)
        job_id, data = parsed
        if job_id and self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, job_id, data)
        return PlainTextResponse("ok")

    def _deliver(self, job_id: str, data: dict[str, Any]) -> None:
        if job_id not in self._arrived:
            logger.debug("%s event for job %s, which no waiter expects (yet)", self.name, job_id)
            self._early[job_id] = data
            while len(self._early) > EARLY_EVENTS_KEPT:
                self._early.popitem(last=False)
            self._orphan.set()
            return
        self.received += 1
        self._events[job_id] = data
        self._arrived[job_id].set()
