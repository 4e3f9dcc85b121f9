"""Machinery shared by the three provider sandboxes.

A sandbox is a local server that plays a provider's test key faithfully enough to run the whole
pipeline offline: auth, validation with the provider's own error bodies, a credit ledger with charges
and refunds, rate limits with the documented headers and 429s, async jobs with configurable durations,
real PNG outputs at signed URLs that expire, and fault injection. It records every request and every
charge so tests can compare what listingflow reported with what the "provider" saw.

Unlike the providers' real test keys, sandboxes *do* keep a credit ledger: that is what lets tests
assert that the cost summary equals the charges and that nothing is paid twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import random
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from providers.sandbox.render import Look, content_type, render
from providers.serving import ThreadedServer

# --- configuration -----------------------------------------------------------------------------


class Fault(BaseModel):
    """One injected misbehaviour."""

    kind: Literal["status", "timeout", "reset", "malformed", "slow"] = "status"
    status: int = 503
    retry_after: float | None = Field(None, description="seconds for the Retry-After header/body")
    delay: float = Field(0.0, description="seconds to stall (timeout, slow)")
    after: bool = Field(
        False,
        description="processed first (job created, credits charged), then the response is lost: "
        "replaced by the status, a timeout, a dropped connection or a malformed body",
    )


class FaultRule(BaseModel):
    """Faults for one route (``'*'`` = any): an exact sequence consumed in order, or a rate."""

    route: str = "*"
    sequence: list[Fault] = Field(default_factory=list)
    rate: float = Field(0.0, ge=0, le=1)
    fault: Fault = Field(default_factory=Fault)


class SandboxConfig(BaseModel):
    api_keys: list[str] = Field(default_factory=list, description="accepted credentials")
    starting_credits: int = 1_000_000
    rate_limits: dict[str, tuple[int, float]] = Field(
        default_factory=dict, description="route group -> (requests, window seconds), sliding window"
    )
    daily_limit: int | None = None
    daily_groups: list[str] = Field(default_factory=list, description="groups the daily cap counts")
    job_seconds: float = Field(1.0, ge=0, description="time from submit to completion")
    job_seconds_by_kind: dict[str, float] = Field(default_factory=dict)
    start_delay_fraction: float = Field(0.2, ge=0, le=1, description="share of job time spent pending")
    url_ttl_seconds: float = 7 * 24 * 3600
    image_px: int | None = Field(
        None,
        ge=16,
        le=4096,
        description="cap on the longest side actually rendered (None: the size the "
        "request asked for); tests set a small cap to stay fast",
    )
    fail_asins: list[str] = Field(default_factory=list, description="jobs for these ASINs fail")
    partial_fail_asins: list[str] = Field(
        default_factory=list, description="jobs for these ASINs complete with one failed item"
    )
    noncompliant_asins: list[str] = Field(
        default_factory=list,
        description="outputs for these ASINs break Amazon's rules on purpose (to try "
        "compliance checks): white-background main images on light grey (235), promotional wording in the "
        "listing title",
    )
    faults: list[FaultRule] = Field(default_factory=list)
    seed: int = 7


# --- records -----------------------------------------------------------------------------------


class RequestRecord(BaseModel):
    t: float
    method: str
    path: str
    route: str
    status: int
    groups: list[str] = Field(default_factory=list)
    fault: str | None = None
    counted: bool = Field(False, description="counted against the rate limits")


class ChargeRecord(BaseModel):
    t: float
    job_id: str
    asin: str | None
    route: str
    credits: int = Field(description="positive: charged, negative: refunded")
    kind: Literal["charge", "refund"]


class Job(BaseModel):
    id: str
    kind: str
    asin: str | None = None
    created: float
    started: float
    done: float
    payload: dict[str, Any] = Field(default_factory=dict)
    fail: bool = False
    partial: bool = False
    charged: int = 0
    refunded: int = 0
    finalized: bool = False
    result: dict[str, Any] | None = None


# --- helpers -----------------------------------------------------------------------------------


class Clock:
    """Wall time plus an offset tests can advance (to expire URLs or roll the day over)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds: the strictest reading of "N per minute"."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.events: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self.events and self.events[0] <= now - self.window:
            self.events.popleft()

    def remaining(self, now: float) -> int:
        self._trim(now)
        return max(0, self.limit - len(self.events))

    def retry_after(self, now: float) -> float:
        self._trim(now)
        if len(self.events) < self.limit:
            return 0.0
        return max(0.0, self.events[0] + self.window - now)

    def reset_at(self, now: float) -> float:
        self._trim(now)
        return (self.events[0] + self.window) if self.events else now

    def add(self, now: float) -> None:
        self.events.append(now)


Handler = Callable[[Request, dict[str, Any]], Awaitable[Response]]


class Sandbox:
    """Base of the provider sandboxes: subclasses register routes and describe error bodies."""

    provider: str = ""
    id_prefix: str = "job"

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or self.default_config()
        self.clock = Clock()
        self.public_url = "http://sandbox.invalid"
        self.balance = self.config.starting_credits
        self.requests: list[RequestRecord] = []
        self.arrivals: list[str] = []  # route names as requests arrive (``requests`` logs them once answered)
        self.charges: list[ChargeRecord] = []
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, Look] = {}  # file id -> what it shows (rendered when first downloaded)
        self._file_cache: dict[str, bytes] = {}
        self._signing_key = secrets.token_bytes(16)
        self._ids = itertools.count(1)
        self._windows = {g: SlidingWindow(n, w) for g, (n, w) in self.config.rate_limits.items()}
        self._day_counts: dict[int, int] = defaultdict(int)
        self._sequences: dict[int, deque[Fault]] = {}
        self._rng = random.Random(self.config.seed)
        self._lock = threading.RLock()
        self._routes: list[Route] = [
            Route("/files/{file_id}", self._serve_file, methods=["GET"]),
            Route("/_sandbox/records", self._records_endpoint, methods=["GET"]),
            Route("/_sandbox/config", self._config_endpoint, methods=["POST"]),
            Route("/_sandbox/clock", self._clock_endpoint, methods=["POST"]),
        ]
        self.register_routes()
        self.app = Starlette(routes=self._routes)
        self._server: ThreadedServer | None = None

    # ---- subclass hooks ----

    @classmethod
    def default_config(cls) -> SandboxConfig:
        return SandboxConfig()

    def register_routes(self) -> None:
        raise NotImplementedError

    def error_response(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        raise NotImplementedError

    def rate_limit_headers(self, groups: list[str], now: float) -> dict[str, str]:
        return {}

    def rate_limit_error(self, group: str, retry_after: float, daily: bool) -> Response:
        return self.error_response(429, "rate_limited", "Too many requests", retry_after=retry_after)

    def finalize(self, job: Job) -> None:
        """Compute a finished job's result, refunds included (called once, when it is due)."""
        raise NotImplementedError

    # ---- routing ----

    def add_route(
        self,
        method: str,
        path: str,
        name: str,
        handler: Handler,
        *,
        groups: list[str],
        authenticated: bool = True,
    ) -> None:
        async def endpoint(request: Request) -> Response:
            return await self._dispatch(request, name, handler, groups, authenticated)

        self._routes.append(Route(path, endpoint, methods=[method], name=name))

    async def _dispatch(
        self, request: Request, name: str, handler: Handler, groups: list[str], authenticated: bool
    ) -> Response:
        now = self.clock.now()
        record = RequestRecord(
            t=now, method=request.method, path=request.url.path, route=name, status=0, groups=groups
        )
        with self._lock:
            self.arrivals.append(name)
        self.finalize_due()
        fault = self._next_fault(name)
        if fault is not None:
            record.fault = (fault.kind if fault.kind != "status" else str(fault.status)) + (
                "-after" if fault.after else ""
            )
            if not fault.after:
                await (
                    request.body()
                )  # received whole (a stalled request is processed even if its client goes)
            if not fault.after and (response := await self._apply_fault(fault)) is not None:
                return self._log(record, response)
        response = await self._process(request, record, handler, groups, authenticated)
        if fault is not None and fault.after and (lost := await self._apply_fault(fault)) is not None:
            return self._log(record, lost)  # the work is done (and billed); its answer never arrives
        return self._log(record, response)

    async def _process(
        self,
        request: Request,
        record: RequestRecord,
        handler: Handler,
        groups: list[str],
        authenticated: bool,
    ) -> Response:
        now = record.t
        if authenticated and not self._authorized(request):
            return self.error_response(401, "unauthorized", "Missing or invalid API key")
        with self._lock:
            limited = self._check_limits(groups, now)
            if limited is not None:
                return limited
            for g in groups:
                if g in self._windows:
                    self._windows[g].add(now)
            if self.config.daily_limit is not None and set(groups) & set(self.config.daily_groups):
                self._day_counts[int(now // 86400)] += 1
            record.counted = True
        body: dict[str, Any] = {}
        if request.method in ("POST", "PUT", "PATCH"):
            raw = await request.body()
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return self.error_response(400, "invalid_request", "Body is not JSON")
            if not isinstance(body, dict):
                return self.error_response(400, "invalid_request", "Body must be an object")
        response = await handler(request, body)
        response.headers.update(self.rate_limit_headers(groups, self.clock.now()))
        return response

    def _log(self, record: RequestRecord, response: Response) -> Response:
        record.status = response.status_code
        with self._lock:
            self.requests.append(record)
        return response

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header[len("Bearer ") :].strip()
        return any(hmac.compare_digest(token, k) for k in self.config.api_keys)

    def _check_limits(self, groups: list[str], now: float) -> Response | None:
        cap = self.config.daily_limit
        counted = bool(set(groups) & set(self.config.daily_groups))
        if cap is not None and counted and self._day_counts[int(now // 86400)] >= cap:
            reset = (int(now // 86400) + 1) * 86400 - now
            return self.rate_limit_error("day", reset, True)
        for g in groups:
            window = self._windows.get(g)
            if window is not None and window.remaining(now) <= 0:
                return self.rate_limit_error(g, window.retry_after(now), False)
        return None

    # ---- faults ----

    def _next_fault(self, route: str) -> Fault | None:
        with self._lock:
            for i, rule in enumerate(self.config.faults):
                if rule.route not in ("*", route):
                    continue
                if rule.sequence:
                    queue = self._sequences.setdefault(i, deque(rule.sequence))
                    if queue:
                        return queue.popleft()
                elif rule.rate and self._rng.random() < rule.rate:
                    return rule.fault
        return None

    async def _apply_fault(self, fault: Fault) -> Response | None:
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind == "timeout":
            await asyncio.sleep(fault.delay or 30.0)
            return self.error_response(504, "timeout", "Gateway timeout")
        if fault.kind == "malformed":
            return Response(b'{"status": "pend', status_code=200, media_type="application/json")
        if fault.kind == "reset":
            return _TruncatedResponse()
        code = {429: "rate_limited", 500: "server_error", 503: "service_unavailable"}.get(
            fault.status, "error"
        )
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        return self.error_response(
            fault.status, code, "injected fault", retry_after=fault.retry_after, headers=headers
        )

    # ---- jobs, credits, files ----

    def new_id(self, prefix: str | None = None) -> str:
        return f"{prefix or self.id_prefix}_{next(self._ids):06d}{secrets.token_hex(3)}"

    def create_job(
        self,
        kind: str,
        *,
        asin: str | None,
        payload: dict[str, Any],
        charge: int,
        route: str,
        job_id: str | None = None,
    ) -> Job:
        now = self.clock.now()
        duration = self.config.job_seconds_by_kind.get(kind, self.config.job_seconds)
        job = Job(
            id=job_id or self.new_id(),
            kind=kind,
            asin=asin,
            created=now,
            started=now + duration * self.config.start_delay_fraction,
            done=now + duration,
            payload=payload,
            fail=asin in self.config.fail_asins,
            partial=asin in self.config.partial_fail_asins,
        )
        with self._lock:
            self.jobs[job.id] = job
            if charge:
                self.charge(job, charge, route)
        return job

    def charge(self, job: Job, credits: int, route: str) -> None:
        with self._lock:
            self.balance -= credits
            job.charged += credits
            self.charges.append(
                ChargeRecord(
                    t=self.clock.now(),
                    job_id=job.id,
                    asin=job.asin,
                    route=route,
                    credits=credits,
                    kind="charge",
                )
            )

    def refund(self, job: Job, credits: int) -> None:
        if credits <= 0:
            return
        with self._lock:
            self.balance += credits
            job.refunded += credits
            self.charges.append(
                ChargeRecord(
                    t=self.clock.now(),
                    job_id=job.id,
                    asin=job.asin,
                    route="refund",
                    credits=-credits,
                    kind="refund",
                )
            )

    def status_of(self, job: Job) -> str:
        now = self.clock.now()
        if now >= job.done:
            self._finalize_once(job)
            return "failed" if job.fail else "completed"
        return "processing" if now >= job.started else "pending"

    def finalize_due(self) -> None:
        now = self.clock.now()
        for job in list(self.jobs.values()):
            if not job.finalized and now >= job.done:
                self._finalize_once(job)

    def _finalize_once(self, job: Job) -> None:
        with self._lock:
            if job.finalized:
                return
            job.finalized = True
            self.finalize(job)

    def add_file(self, look: Look) -> str:
        file_id = f"{self.new_id('f')}.{'jpg' if look.fmt == 'jpeg' else look.fmt}"
        self.files[file_id] = look
        return file_id

    def file_bytes(self, file_id: str) -> bytes:
        """The file's image at its requested size (capped by ``image_px``), rendered once."""
        if file_id not in self._file_cache:
            self._file_cache[file_id] = render(self.files[file_id], max_side=self.config.image_px)
        return self._file_cache[file_id]

    def is_noncompliant(self, asin: str | None) -> bool:
        return asin is not None and asin in self.config.noncompliant_asins

    def signed_url(self, file_id: str) -> str:
        expires = int(self.clock.now() + self.config.url_ttl_seconds)
        sig = hmac.new(self._signing_key, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()
        return f"{self.public_url}/files/{file_id}?expires={expires}&sig={sig[:32]}"

    async def _serve_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        try:
            expires = int(request.query_params.get("expires", "0"))
        except ValueError:
            expires = 0
        sig = request.query_params.get("sig", "")
        good = hmac.new(self._signing_key, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]
        if file_id not in self.files or not hmac.compare_digest(sig, good):
            return Response("AccessDenied", status_code=403)
        if self.clock.now() > expires:
            return Response("Request has expired", status_code=403)
        return Response(self.file_bytes(file_id), media_type=content_type(self.files[file_id].fmt))

    # ---- what tests read ----

    def records(self) -> dict[str, Any]:
        with self._lock:
            return {
                "provider": self.provider,
                "balance": self.balance,
                "requests": [r.model_dump() for r in self.requests],
                "charges": [c.model_dump() for c in self.charges],
                "jobs": [j.model_dump(exclude={"payload", "result"}) for j in self.jobs.values()],
            }

    def net_credits(self) -> int:
        with self._lock:
            return sum(c.credits for c in self.charges)

    def paid_jobs(self) -> list[Job]:
        with self._lock:
            return [j for j in self.jobs.values() if j.charged > 0]

    def max_requests_in_window(self, group: str, window: float) -> int:
        """Largest number of counted requests of ``group`` in any sliding window."""
        times = sorted(r.t for r in self.requests if r.counted and group in r.groups)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def max_jobs_in_flight(self) -> int:
        events = sorted(
            [(j.created, 1) for j in self.jobs.values()] + [(j.done, -1) for j in self.jobs.values()]
        )
        best = cur = 0
        for _, delta in events:
            cur += delta
            best = max(best, cur)
        return best

    def reconfigure(self, **changes: Any) -> None:
        """Change faults, durations or failing ASINs on a running sandbox."""
        with self._lock:
            self.config = self.config.model_copy(update=changes)
            self._sequences.clear()

    async def _records_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.records())

    async def _config_endpoint(self, request: Request) -> Response:
        changes = await request.json()
        changes = SandboxConfig.model_validate({**self.config.model_dump(), **changes}).model_dump()
        self.reconfigure(**{k: v for k, v in changes.items() if k not in ("api_keys", "rate_limits")})
        return JSONResponse({"ok": True})

    async def _clock_endpoint(self, request: Request) -> Response:
        self.clock.advance(float((await request.json()).get("advance", 0)))
        return JSONResponse({"now": self.clock.now()})

    # ---- serving ----

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve on loopback in a background thread; returns the base URL of the server."""
        self._server = ThreadedServer(self.app, host=host, port=port, name=f"sandbox-{self.provider}")
        self.public_url = f"http://{host}:{self._server.start()}"
        return self.public_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=5)
            self._server = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _TruncatedResponse(Response):
    """Announces a body and closes the connection early: the client sees a reset mid-response."""

    def __init__(self) -> None:
        super().__init__(b"", status_code=200, media_type="application/json")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"job', "more_body": False})
