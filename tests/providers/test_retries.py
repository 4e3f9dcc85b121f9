"""One retry layer per kind of failure: transient HTTP failures inside the client call, polls at the
provider's cadence until one deadline per job. Fast: no server, waits recorded, never slept."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from providers.contract import JobRef, Step
from providers.errors import ProviderConnectionError, RateLimited, ServerError, WaitTimeout
from providers.pixii.client import PixiiClient
from providers.pixii.plugin import PixiiProvider, PixiiSettings
from providers.retries import HttpRetry

from .conftest import PollClock

RETRY = HttpRetry(max_attempts=3, base_delay_seconds=1.0, max_delay_seconds=60.0, jitter=0.0)
JOB = {"id": "job_1", "status": "processing"}


class Server:
    """Answers every request with ``respond(request)``; records the requests."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response]) -> None:
        self.respond, self.requests = respond, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)


def client(server: Server, waits: list[float], retry: HttpRetry = RETRY) -> PixiiClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    c = PixiiClient(http, base_url="https://api.pixii.ai", retry=retry)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    c.sleep = sleep
    return c


def error(
    status: int, code: str, headers: dict[str, str] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json={"error": {"code": code, "message": "no"}}, headers=headers)


async def test_a_get_that_always_fails_is_sent_exactly_max_attempts_times() -> None:
    server, waits = Server(error(500, "INTERNAL_ERROR")), []
    with pytest.raises(ServerError):
        await client(server, waits).get_job("job_1")
    assert len(server.requests) == 3 and waits == [1.0, 2.0]


async def test_a_429_waits_for_retry_after_then_succeeds() -> None:
    answers = iter(
        [
            error(429, "RATE_LIMIT_MINUTE_EXCEEDED", {"Retry-After": "7"}),
            lambda _: httpx.Response(200, json=JOB),
        ]
    )
    server, waits = Server(lambda r: next(answers)(r)), []
    assert (await client(server, waits).get_job("job_1")).status == "processing"
    assert len(server.requests) == 2 and waits == [7.0]


async def test_a_paid_submission_is_never_retried_by_the_client_not_even_on_429() -> None:
    server, waits = Server(error(429, "RATE_LIMIT_MINUTE_EXCEEDED", {"Retry-After": "1"})), []
    with pytest.raises(RateLimited):
        await client(server, waits).a_plus(
            {"asin": "B0TEST0001", "country_code": "US", "types": ["A+ Basic"]}
        )
    assert len(server.requests) == 1 and waits == []  # the host's money rule decides (flows.submission)


async def test_an_unpaid_post_is_resent_only_when_the_provider_did_nothing() -> None:
    server, waits = Server(error(503, "SERVICE_UNAVAILABLE")), []
    with pytest.raises(ServerError):
        await client(server, waits).request("POST", "/v1/api/thing", groups=[], json_body={})
    assert len(server.requests) == 1  # a 5xx after a POST is ambiguous: not sent again

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    server = Server(refuse)
    with pytest.raises(ProviderConnectionError):
        await client(server, waits).request("POST", "/v1/api/thing", groups=[], json_body={})
    assert len(server.requests) == 3  # never connected: it cannot have been acted on


async def test_a_client_without_a_policy_sends_once() -> None:
    server = Server(error(500, "INTERNAL_ERROR"))
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    with pytest.raises(ServerError):
        await PixiiClient(http, base_url="https://api.pixii.ai").get_job("job_1")
    assert len(server.requests) == 1


# ---- polls: the provider's cadence, one deadline per job ------------------------------------------------


def provider(server: Server, **settings: Any) -> PixiiProvider:
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    values = {"api_key": "pk_test_x", "max_wait_seconds": 60.0, "http_retry": RETRY, **settings}
    return PixiiProvider(http, PixiiSettings(_env_file=None, **values))


async def test_polls_follow_the_cadence_from_settings(poll_clock: PollClock) -> None:
    statuses = iter(["pending", "processing", "processing", "completed"])
    server = Server(lambda _: httpx.Response(200, json={**JOB, "status": next(statuses)}))
    plugin = provider(server, poll_cadence={"first_seconds": 1, "every_seconds": 2, "step_seconds": 1})
    ref = JobRef(
        provider="pixii",
        step=Step.IMAGES,
        job_id="job_1",
        kind="listing_builder",
        submitted_at=poll_clock.now,
    )
    assert (await plugin.wait(ref)).status == "completed"
    assert poll_clock.slept == [1.0, 2.0, 3.0, 4.0] and len(server.requests) == 4


async def test_the_deadline_is_counted_from_the_submission_and_survives_a_second_wait(
    poll_clock: PollClock,
) -> None:
    """A job submitted max_wait ago gets one last poll, however often its wait is started again."""
    server = Server(lambda _: httpx.Response(200, json=JOB))
    plugin = provider(server, max_wait_seconds=30.0)
    ref = JobRef(
        provider="pixii",
        step=Step.IMAGES,
        job_id="job_1",
        kind="listing_builder",
        submitted_at=time.time() - 31,
    )
    plugin.created_at = ref.submitted_at - 1  # submitted while this plugin ran
    for attempt in (1, 2):
        with pytest.raises(WaitTimeout, match="still processing after 30s"):
            await plugin.wait(ref)
        assert len(server.requests) == attempt  # one poll each, never a fresh 30 s


async def test_a_job_of_an_earlier_run_is_polled_at_once_then_gets_a_full_wait(poll_clock: PollClock) -> None:
    statuses = iter(["processing", "completed"])
    server = Server(lambda _: httpx.Response(200, json={**JOB, "status": next(statuses)}))
    plugin = provider(server, max_wait_seconds=30.0, poll_interval_seconds=5.0)
    ref = JobRef(
        provider="pixii",
        step=Step.IMAGES,
        job_id="job_1",
        kind="listing_builder",
        submitted_at=time.time() - 3600,
    )
    assert (await plugin.wait(ref)).status == "completed" and poll_clock.slept == [0.0, 5.0]


async def test_a_capped_block_bounds_the_retries_of_its_requests() -> None:
    """Pre-flight reports a provider that stays unreachable rather than waiting it out."""
    from providers.retries import capped

    server, waits = Server(error(503, "SERVICE_UNAVAILABLE")), []
    c = client(
        server, waits, retry=RETRY.model_copy(update={"max_attempts": 10, "max_total_seconds": 1000.0})
    )
    with capped(max_attempts=2, max_total_seconds=30.0), pytest.raises(ServerError):
        await c.get_job("job_1")
    assert len(server.requests) == 2
    with pytest.raises(ServerError):
        await c.get_job("job_1")
    assert len(server.requests) == 2 + 10  # outside the block: the client's own policy
