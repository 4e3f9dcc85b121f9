"""Rate limits as sliding windows of slots held through Prefect global concurrency limits, and
in-flight limits, both handed out locally from a few leases per process.

Two limiters with the same names stand for two processes (or two flow runs) sharing one Prefect server:
each has its own pool of leases, only the server's limit is common to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import httpx
import pytest

from flows.limits import LimitMissing, ProviderLimiter, ensure_limits, limit_specs, window_hold
from flows.limits.pool import SlotPool
from flows.settings import Settings
from providers.contract import ProviderLimits, RouteLimit
from providers.registry import load_providers

pytestmark = pytest.mark.usefixtures("prefect_server")

GROUP = RouteLimit(group="api", requests=10, per_seconds=2.0)


def _limiter(prefix: str) -> ProviderLimiter:
    return ProviderLimiter(provider="fake", groups={"api": GROUP}, inflight=5, prefix=prefix)


async def _limits(prefix: str, *groups: RouteLimit) -> None:
    provider = type(
        "Fake",
        (),
        {"name": "fake", "limits": ProviderLimits(route_groups=groups or (GROUP,), max_inflight_jobs=5)},
    )
    await ensure_limits(limit_specs(provider, Settings(limit_prefix=prefix)))  # type: ignore[arg-type]


async def _send(
    limiter: ProviderLimiter, n: int, sent: list[float], groups: tuple[str, ...] = ("api",)
) -> None:
    async def one() -> None:
        answered = await limiter.throttle(list(groups))
        sent.append(time.monotonic())
        answered()

    await asyncio.gather(*(one() for _ in range(n)))


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u - t < window) for i, t in enumerate(times))


def test_global_limits_are_n_slots_per_window_and_an_in_flight_limit() -> None:
    registry = load_providers()
    specs = {s.name: s for s in limit_specs(registry.providers["pixii"], Settings(limit_prefix="x"))}
    submit = specs["x-pixii-submit"]
    assert submit.limit == 10 and submit.slot_decay_per_second is None  # 10 per minute: 10 slots
    assert specs["x-pixii-inflight"].slot_decay_per_second is None
    assert window_hold(RouteLimit(group="g", requests=10, per_seconds=60), 0.01) == pytest.approx(60.6)
    assert window_hold(GROUP, 0.001) == pytest.approx(2.01)  # never less than 10 ms of margin


async def test_the_window_allows_n_at_once_and_never_more_than_n_in_any_window() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    limiter = _limiter(prefix)
    sent: list[float] = []
    began = time.monotonic()
    await _send(limiter, 25, sent)
    sent.sort()
    assert sent[9] - began < 0.5, sent[9] - began  # the first ten leave at once, as documented
    assert _max_in_window(sent, 2.0) <= 10
    assert sent[10] - sent[0] >= 2.0 and sent[20] - sent[10] >= 2.0
    assert sent[-1] - began < 2 * 2.05 + 0.6  # 25 = 10 + 10 + 5: two windows and a little
    assert limiter.global_acquisitions == 1  # one lease of ten slots, reused window after window
    await limiter.aclose()


async def test_two_processes_share_the_window_without_exceeding_it() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    first, second = _limiter(prefix), _limiter(prefix)
    sent_first: list[float] = []
    sent_second: list[float] = []
    await _send(first, 6, sent_first)  # holds six slots for a window
    await asyncio.gather(_send(first, 9, sent_first), _send(second, 15, sent_second))
    both = sent_first + sent_second
    # the server arbitrates: together they never exceed 10 in any 2-s window (a sliding window, as the
    # providers count), and both finish (a busy process keeps its slots; the other gets them once given back)
    assert _max_in_window(both, 2.0) <= 10
    assert len(sent_first) == 15 and len(sent_second) == 15
    assert first.global_acquisitions >= 1 and second.global_acquisitions >= 1
    await first.aclose()
    await second.aclose()


async def test_a_process_that_dies_holds_only_the_slots_it_took() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    dead = _limiter(prefix)
    await dead.throttle(["api"])  # takes one slot and "dies": it expires with its lease
    sent: list[float] = []
    began = time.monotonic()
    await asyncio.wait_for(_send(_limiter(prefix), 9, sent), 10)
    assert max(sent) - began < 1.0  # the other nine were there at once


async def test_a_window_still_running_at_exit_holds_its_slots_until_it_ends_not_four_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that ends within a 60-s window keeps its slots for the rest of that window (no burst by
    the next run), and only that long: a lease is renewed to Prefect's shortest (60 s), not left to run
    out its four windows."""
    from prefect.client.orchestration import PrefectClient

    renewed: list[float] = []
    released: list[object] = []
    renew, release = PrefectClient.renew_concurrency_lease, PrefectClient.release_concurrency_slots_with_lease

    async def recorded_renew(self: PrefectClient, lease_id: object, lease_duration: float) -> None:
        renewed.append(lease_duration)
        await renew(self, lease_id=lease_id, lease_duration=lease_duration)  # type: ignore[arg-type]

    async def recorded_release(self: PrefectClient, lease_id: object) -> None:
        released.append(lease_id)
        await release(self, lease_id)  # type: ignore[arg-type]

    monkeypatch.setattr(PrefectClient, "renew_concurrency_lease", recorded_renew)
    monkeypatch.setattr(PrefectClient, "release_concurrency_slots_with_lease", recorded_release)
    minute = RouteLimit(group="api", requests=10, per_seconds=60.0)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix, minute)
    limiter = ProviderLimiter(provider="fake", groups={"api": minute}, inflight=5, prefix=prefix)
    await _send(limiter, 3, [])
    pool = limiter._windows["api"]
    assert pool.lease_seconds > 200  # what the lease was taken for (a crashed process's safety margin)
    await limiter.aclose()
    assert released == [] and len(renewed) == 1
    assert 60.0 <= renewed[0] <= window_hold(minute, 0.01)  # the rest of the window, at least Prefect's 60 s

    quick = _limiter(f"t{uuid.uuid4().hex[:8]}")  # a 2-s window long over at exit: given back at once
    await _limits(quick.prefix)
    await _send(quick, 2, [])
    await asyncio.sleep(2.2)
    renewed.clear()
    await quick.aclose()
    assert renewed == [] and len(released) == 1


async def test_a_missing_limit_raises_instead_of_running_unthrottled() -> None:
    limiter = _limiter(f"missing{uuid.uuid4().hex[:8]}")
    with pytest.raises(LimitMissing, match="does not exist"):
        await asyncio.wait_for(limiter.throttle(["api"]), 30)


async def test_a_window_counts_from_the_answer_not_from_the_send() -> None:
    """The provider counts a request when it arrives, which may be just before it answers: a slot is
    ready again a window after the answer, so a slow answer can never make the next window overlap."""
    limiter = ProviderLimiter(
        provider="fake",
        groups={"api": RouteLimit(group="api", requests=1, per_seconds=0.5)},
        inflight=5,
        prefix="unused",
        use_global=False,
        margin=0.0,
    )
    began = time.monotonic()
    answered = await limiter.throttle(["api"])
    await asyncio.sleep(0.4)  # the request is on its way, then answered
    answered()
    await limiter.throttle(["api"])
    assert time.monotonic() - began >= 0.4 + 0.5


async def test_slots_of_a_request_never_answered_go_back_after_the_answer_timeout() -> None:
    limiter = ProviderLimiter(
        provider="fake",
        groups={"api": RouteLimit(group="api", requests=1, per_seconds=0.1)},
        inflight=5,
        prefix="unused",
        use_global=False,
        answer_timeout=0.3,
    )
    began = time.monotonic()
    await limiter.throttle(["api"])  # e.g. a plugin's own code that ignores what the throttle returns
    await asyncio.wait_for(limiter.throttle(["api"]), 5)
    assert 0.3 + 0.1 <= time.monotonic() - began < 2.0


async def test_without_global_limits_the_local_window_still_holds() -> None:
    limiter = ProviderLimiter(
        provider="fake", groups={"api": GROUP}, inflight=5, prefix="unused", use_global=False
    )
    sent: list[float] = []
    await _send(limiter, 12, sent)
    assert _max_in_window(sent, 2.0) <= 10 and limiter.global_acquisitions == 0
    assert sorted(sent)[10] - min(sent) >= 2.0


async def test_seconds_until_free_tells_batching_how_long_the_window_holds_requests_back() -> None:
    limiter = ProviderLimiter(
        provider="fake", groups={"api": GROUP}, inflight=5, prefix="unused", use_global=False
    )
    assert limiter.seconds_until_free() == 0.0
    await _send(limiter, 9, [])
    assert limiter.seconds_until_free() == 0.0  # one slot left
    await _send(limiter, 1, [])
    assert 1.9 < limiter.seconds_until_free() <= 2.05


async def test_a_request_in_a_fast_group_is_not_queued_behind_a_slow_groups_turns() -> None:
    """ListingRVA's product creates (products + global) and its /ai/* submissions (ai + global): the
    creates must not wait behind submissions queued for /ai/* slots."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    wide = RouteLimit(group="wide", requests=100, per_seconds=2.0)
    await _limits(prefix, GROUP, wide)
    limiter = ProviderLimiter(provider="fake", groups={"api": GROUP, "wide": wide}, inflight=5, prefix=prefix)
    slow: list[float] = []
    began = time.monotonic()
    queued = asyncio.gather(_send(limiter, 16, slow, ("api", "wide")))  # six wait a window for api slots
    await asyncio.sleep(0.3)
    fast: list[float] = []
    await _send(limiter, 1, fast, ("wide",))
    await queued
    assert fast[0] - began < 0.6, fast[0] - began  # not after the queued api turns
    assert max(slow) - began >= 2.0  # which still wait for their window
    assert _max_in_window(slow, 2.0) <= 10 and _max_in_window(slow + fast, 2.0) <= 100
    await limiter.aclose()


def _busy_server() -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/api/v2/concurrency_limits/increment-with-lease")
    return httpx.HTTPStatusError("503", request=request, response=httpx.Response(503, request=request))


@pytest.mark.parametrize(
    "failure", [lambda: httpx.ReadError("connection reset by peer"), _busy_server], ids=["dropped", "503"]
)
async def test_a_dropped_connection_or_a_busy_prefect_server_is_asked_again(
    monkeypatch: pytest.MonkeyPatch, failure: Any
) -> None:
    """Every request waiting on a group shares its pool: one lost connection, or one 503 from a server
    busy with its own writes, must not fail them all."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    ask, dropped = SlotPool._ask, []

    async def flaky(self: SlotPool) -> None:
        if not dropped:
            dropped.append(self.name)
            raise failure()
        await ask(self)

    monkeypatch.setattr(SlotPool, "_ask", flaky)
    limiter = _limiter(prefix)
    sent: list[float] = []
    await asyncio.wait_for(_send(limiter, 3, sent), 10)
    assert dropped and len(sent) == 3
    await limiter.aclose()


async def _inflight_state(prefix: str) -> tuple[int, int]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        state = await client.read_global_concurrency_limit_by_name(f"{prefix}-fake-inflight")
    return state.active_slots, state.limit


async def test_jobs_share_a_few_leases_and_never_exceed_the_in_flight_limit_across_processes() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    first, second = _limiter(prefix), _limiter(prefix)  # two processes, five slots between them
    running = 0
    most = 0

    async def job(limiter: ProviderLimiter) -> None:
        nonlocal running, most
        async with limiter.job_slot():
            running += 1
            most = max(most, running)
            active, limit = await _inflight_state(prefix)
            assert active <= limit
            await asyncio.sleep(0.05)
            running -= 1

    await asyncio.gather(*(job(first) for _ in range(40)), *(job(second) for _ in range(40)))
    assert most <= 5
    assert most >= 3  # both processes got slots while the other held some
    # far fewer leases than jobs: slots are handed out locally once a lease holds them
    assert first.lease_acquisitions + second.lease_acquisitions < 40, (
        first.lease_acquisitions,
        second.lease_acquisitions,
    )
    await first.aclose()
    await second.aclose()
    assert (await _inflight_state(prefix))[0] == 0  # closing gives every slot back


async def test_slots_left_unused_are_given_back_to_other_processes_without_closing() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    first = _limiter(prefix)
    await asyncio.gather(*(_hold(first, 0.1) for _ in range(5)))
    assert (await _inflight_state(prefix))[0] == 5  # still held right after the burst
    await asyncio.sleep(2.5)  # a whole linger interval (1 s) passes with the slots unused
    assert (await _inflight_state(prefix))[0] == 0
    second = _limiter(prefix)
    await asyncio.wait_for(asyncio.gather(*(_hold(second, 0.01) for _ in range(5))), timeout=10)
    await first.aclose()
    await second.aclose()


async def _hold(limiter: ProviderLimiter, seconds: float) -> None:
    async with limiter.job_slot():
        await asyncio.sleep(seconds)


async def test_a_missing_in_flight_limit_raises_instead_of_running_unguarded() -> None:
    limiter = _limiter(f"t{uuid.uuid4().hex[:8]}")
    with pytest.raises(LimitMissing):
        await _hold(limiter, 0)
    await limiter.aclose()


async def test_a_pool_given_back_entirely_serves_the_next_jobs() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    limiter = _limiter(prefix)
    for burst in range(3):  # jobs, a pause long enough to give every lease back, jobs again
        await asyncio.wait_for(
            asyncio.gather(*(_hold(limiter, 0.02 * (n % 3)) for n in range(12))), timeout=20
        )
        await asyncio.sleep(2.5)
        assert (await _inflight_state(prefix))[0] == 0, burst
    await limiter.aclose()


async def test_priming_takes_each_pools_first_slot_ahead_and_gives_it_back_unused() -> None:
    """``prime`` asks for a slot of each pool before the run's first request: the first job and the
    first request then take no lease of their own; left unused past ``keep``, it goes back."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    limiter = _limiter(prefix)
    await limiter.prime(3, keep=0.5)
    assert (await _inflight_state(prefix))[0] == 3
    assert (limiter.lease_acquisitions, limiter.global_acquisitions) == (1, 1)
    await asyncio.gather(*(_hold(limiter, 0.01) for _ in range(3)))
    await _send(limiter, 3, [])
    assert (limiter.lease_acquisitions, limiter.global_acquisitions) == (1, 1)  # no round trip more

    idle = _limiter(prefix)
    await idle.prime(50, keep=0.5)  # within the limit (5 in flight): the 2 the first does not hold
    assert (await _inflight_state(prefix))[0] == 5
    await asyncio.sleep(3.0)  # keep (0.5 s), then a linger interval (1 s) with the slot unused
    assert (await _inflight_state(prefix))[0] == 0
    await limiter.aclose()
    await idle.aclose()


async def test_a_limiter_is_engaged_once_its_requests_asked_for_slots() -> None:
    """A run primes the providers not engaged yet before the others (``flows.run._prime``)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    limiter = _limiter(prefix)
    assert not limiter.engaged
    await _send(limiter, 1, [])
    assert limiter.engaged
    await limiter.aclose()


async def test_priming_tops_up_a_pool_that_pre_flight_already_used() -> None:
    """Pre-flight's balance read takes one slot of its route group; priming then asks for the rest of
    what the run's start needs, so the first paid request does not wait a lease round trip."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    limiter = _limiter(prefix)
    await _send(limiter, 1, [])  # pre-flight's read: one slot, one lease
    assert limiter.global_acquisitions == 1
    await limiter.prime(3, keep=0.5)
    assert limiter.global_acquisitions == 2  # the two more the start needs, in one lease
    await _send(limiter, 2, [])
    assert limiter.global_acquisitions == 2  # no round trip more
    await limiter.aclose()


async def test_a_request_asked_ahead_brings_the_next_ones_slots_in_its_lease() -> None:
    """Pre-flight's balance read of a batching provider asks ahead: the first batch and its first
    poll find their slots without a lease call of their own."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    limiter = _limiter(prefix)
    limiter.ask_ahead(3)
    await _send(limiter, 1, [])  # pre-flight's read
    assert limiter.global_acquisitions == 1
    await _send(limiter, 2, [])
    assert limiter.global_acquisitions == 1  # no round trip more
    await _send(limiter, 1, [])
    assert limiter.global_acquisitions == 2  # asked ahead once only
    await limiter.aclose()


async def test_a_process_sends_one_lease_call_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lease increments sent at once wait ~2 s each on a SQLite-backed server (the default local one):
    pools growing together (a run's start) take their turns instead."""
    from flows.limits import pool as pool_module

    real = pool_module.prefect_client
    open_now, most = 0, 0

    @contextlib.asynccontextmanager
    async def counted() -> Any:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            async with real() as client:
                yield client
        finally:
            open_now -= 1

    monkeypatch.setattr(pool_module, "prefect_client", counted)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    limiters = [_limiter(prefix) for _ in range(3)]
    await asyncio.gather(*(limiter.prime(2, keep=0.5) for limiter in limiters))
    await asyncio.gather(*(_send(limiter, 3, []) for limiter in limiters))
    assert most == 1
    assert sum(limiter.global_acquisitions + limiter.lease_acquisitions for limiter in limiters) >= 6
    await asyncio.gather(*(limiter.aclose() for limiter in limiters))


async def test_a_request_waiting_for_a_slot_asks_before_the_primes_queued_ahead_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run's start primes many pools one lease call after another; a request that needs a slot now
    (the first ProdVisual batch) is not queued behind them."""
    real = SlotPool._increment
    asked: list[SlotPool] = []

    async def recorded(self: SlotPool, client: Any, want: int) -> bool:
        asked.append(self)
        return await real(self, client, want)

    monkeypatch.setattr(SlotPool, "_increment", recorded)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    primed = [_limiter(prefix) for _ in range(3)]  # two pools each: in flight and the api window
    urgent = _limiter(prefix)
    priming = asyncio.gather(*(limiter.prime(1, keep=0.5) for limiter in primed))
    await asyncio.sleep(0)  # every prime has asked for its turn; the first one has it
    await _send(urgent, 1, [])
    await priming
    assert len(asked) == 7
    assert asked.index(urgent._window("api")) == 1  # right after the prime already under way
    await asyncio.gather(*(limiter.aclose() for limiter in [*primed, urgent]))


async def test_priming_a_missing_limit_is_quiet_and_the_first_job_still_raises() -> None:
    limiter = _limiter(f"t{uuid.uuid4().hex[:8]}")
    await limiter.prime(1)
    with pytest.raises(LimitMissing):
        await _hold(limiter, 0)
    await limiter.aclose()


async def test_limits_are_created_updated_or_left_as_they_are_even_by_runs_starting_together() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    specs = limit_specs(load_providers().providers["pixii"], Settings(limit_prefix=prefix))
    names = sorted(s.name for s in specs)
    first, second = await asyncio.gather(ensure_limits(specs), ensure_limits(specs))  # a race to create
    assert sorted(first + second) == [f"created {n}" for n in names]  # each once; the loser finds it made
    assert await ensure_limits(specs) == []  # as they are: nothing to do
    changed = limit_specs(
        load_providers().providers["pixii"], Settings(limit_prefix=prefix, inflight_limits={"pixii": 7})
    )
    assert await ensure_limits(changed) == [f"updated {prefix}-pixii-inflight"]
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        assert (await client.read_global_concurrency_limit_by_name(f"{prefix}-pixii-inflight")).limit == 7


async def test_the_lease_calls_tls_context_is_built_in_a_thread_before_the_first_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run's start builds it off the event loop (``warm_prefect_tls``, while Prefect creates the flow
    run there); the first lease call then finds it built."""
    import ssl
    import threading

    from flows.limits.client import _tls, prefect_client, warm_prefect_tls

    built_in: list[str] = []
    real = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built_in.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    _tls.cache_clear()
    await warm_prefect_tls()
    async with prefect_client() as client:
        assert await client.api_healthcheck() is None
    assert len(built_in) == 1 and built_in[0] != threading.main_thread().name


async def test_lease_calls_outside_a_flow_run_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's client loads the CA bundle for each client (~18 ms); a CLI run's pre-flight and first
    leases, before its flow run exists, open one client per call."""
    import ssl

    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.limits.client import _tls, prefect_client

    built: list[int] = []
    real = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    _tls.cache_clear()
    for _ in range(3):
        async with prefect_client() as client:
            assert await client.api_healthcheck() is None
    assert len(built) == 1

    @flow
    async def inside() -> bool:
        return prefect_client() is get_client()  # the flow run's own client

    assert await inside()


async def test_lease_calls_wait_until_the_flow_run_exists() -> None:
    """The CLI's pre-flight runs while Prefect creates the flow run; its lease calls wait for it (on
    SQLite a lease call meeting the flow run's writes waited ~2 s)."""
    from flows.limits.pool import _turns_here, lease_calls_wait_for

    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    limiter = _limiter(prefix)
    flow_run_exists = asyncio.Event()
    try:
        with lease_calls_wait_for(flow_run_exists):
            sending = asyncio.ensure_future(_send(limiter, 1, []))
            await asyncio.sleep(0.3)
            assert not sending.done() and limiter.global_acquisitions == 0
            flow_run_exists.set()
            await asyncio.wait_for(sending, timeout=10)
            assert limiter.global_acquisitions == 1
        assert _turns_here().opened is None  # later lease calls of the loop (another run's) do not wait
    finally:
        flow_run_exists.set()
        await limiter.aclose()


async def test_a_lease_call_cancelled_while_waiting_for_its_turn_does_not_stop_the_others() -> None:
    """A run's end cancels lease calls still waiting (its primes, its pools' growers): the turn passes
    over them to the next caller; before, handing it to a cancelled one raised and left the process's
    lease calls waiting forever."""
    from flows.limits.pool import _Turns

    turns = _Turns()
    await turns.take(None)  # one call under way
    cancelled = asyncio.ensure_future(turns.take(None))
    waiting = asyncio.ensure_future(turns.take(None))
    await asyncio.sleep(0)
    cancelled.cancel()
    turns.give()  # the call under way ends before the cancelled one has run its handler
    await asyncio.wait_for(waiting, timeout=1)
    await asyncio.gather(cancelled, return_exceptions=True)
    turns.give()
    assert not turns.busy and not turns.queue


async def test_callers_waiting_for_a_slot_are_handed_slots_in_order() -> None:
    """Each slot coming back used to wake every waiting caller; now it is handed to the first in line."""
    pool = SlotPool("local", hold=0.0, use_global=False, local_slots=1)
    first = await pool.acquire()
    served: list[int] = []

    async def caller(i: int) -> None:
        lease = await pool.acquire()
        served.append(i)
        pool.release(lease)

    callers = [asyncio.ensure_future(caller(i)) for i in range(20)]
    await asyncio.sleep(0.01)
    assert pool.waiting == 20 and len(pool._line) == 20
    pool.release(first)
    await asyncio.wait_for(asyncio.gather(*callers), timeout=2)
    assert served == list(range(20)) and not pool._line


async def test_callers_cancelled_in_line_leave_it_to_the_next() -> None:
    pool = SlotPool("local", hold=0.0, use_global=False, local_slots=1)
    held = await pool.acquire()
    first, second, third = (asyncio.ensure_future(pool.acquire()) for _ in range(3))
    await asyncio.sleep(0.01)
    first.cancel()
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    pool.release(held)
    assert await asyncio.wait_for(third, timeout=1) is None  # the local lease
    assert pool.waiting == 0 and not pool._line


async def test_a_slot_handed_to_a_caller_cancelled_meanwhile_goes_to_the_next() -> None:
    pool = SlotPool("local", hold=10.0, use_global=False, local_slots=1)
    held = await pool.acquire()
    cancelled, waiting = asyncio.ensure_future(pool.acquire()), asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.01)
    pool.release(held)
    pool.free[0] = (0.0, *pool.free[0][1:])  # its window over at once
    pool._serve()  # handed to the first caller, which is cancelled before it runs
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert await asyncio.wait_for(waiting, timeout=1) is None  # not held for a window: never used


async def test_a_failed_ask_fails_every_caller_in_line() -> None:
    pool = SlotPool("missing-limit", limit=None)

    async def refused(*, upto: int | None = None) -> None:
        raise LimitMissing("missing-limit")

    pool._ask = refused  # type: ignore[method-assign]
    callers = [asyncio.ensure_future(pool.acquire()) for _ in range(3)]
    outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), timeout=2)
    assert all(isinstance(o, LimitMissing) for o in outcomes) and not pool._line
