"""Rate limits granted in chunks by Prefect global concurrency limits, spent at a local pace.

Two limiters with the same names stand for two processes (or two flow runs) sharing one Prefect server:
each has its own pacing state, only the server's limit is common to them.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from flows.limits import LimitMissing, ProviderLimiter, chunk_size, ensure_limits, limit_specs, server_decay
from listingflow.settings import Settings
from providers.contract import ProviderLimits, RouteLimit
from providers.registry import load_providers

pytestmark = pytest.mark.usefixtures("prefect_server")

GROUP = RouteLimit(group="api", requests=10, per_seconds=2.0)


def _limiter(prefix: str, *, chunk_seconds: float = 1.0) -> ProviderLimiter:
    return ProviderLimiter(provider="fake", groups={"api": GROUP}, inflight=5, prefix=prefix,
                           chunk_seconds=chunk_seconds)  # fmt: skip


async def _limits(prefix: str, *, chunk_seconds: float = 1.0) -> None:
    provider = type("Fake", (), {"name": "fake", "limits": ProviderLimits(route_groups=(GROUP,), max_inflight_jobs=5)})
    settings = Settings(limit_prefix=prefix, rate_chunk_seconds=chunk_seconds)
    await ensure_limits(limit_specs(provider, settings))  # type: ignore[arg-type]


async def _send(limiter: ProviderLimiter, n: int, sent: list[float]) -> None:
    async def one() -> None:
        await limiter.throttle(["api"])
        sent.append(time.monotonic())

    await asyncio.gather(*(one() for _ in range(n)))


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u - t < window) for i, t in enumerate(times))


def test_a_chunk_is_about_ten_seconds_of_requests_within_the_documented_window() -> None:
    assert chunk_size(RouteLimit(group="g", requests=60, per_seconds=60), 0.01, 10.0) == 9
    assert chunk_size(RouteLimit(group="g", requests=10, per_seconds=60), 0.01, 10.0) == 1  # Pixii: one per ask
    assert chunk_size(RouteLimit(group="g", requests=30, per_seconds=6), 0.01, 10.0) == 30  # never above the window
    assert server_decay(RouteLimit(group="g", requests=60, per_seconds=60), 0.01) < 1.0  # the margin is kept


def test_global_limits_are_declared_as_chunks_at_the_documented_rate() -> None:
    registry = load_providers()
    specs = {s.name: s for s in limit_specs(registry.providers["prodvisual"], Settings(limit_prefix="x"))}
    api = specs["x-prodvisual-api"]
    assert api.limit == 9 and api.slot_decay_per_second == pytest.approx(60 / 60 / 1.01)
    assert specs["x-prodvisual-inflight"].slot_decay_per_second is None


async def test_one_process_runs_at_the_rate_with_one_server_round_trip_per_chunk() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix, chunk_seconds=2.0)
    limiter = _limiter(prefix, chunk_seconds=2.0)
    sent: list[float] = []
    began = time.monotonic()
    await _send(limiter, 25, sent)
    elapsed = time.monotonic() - began
    gaps = [b - a for a, b in zip(sorted(sent), sorted(sent)[1:], strict=False)]
    assert min(gaps) >= 0.2 * 0.99  # 10 per 2 s, paced one by one
    assert _max_in_window(sent, 2.0) <= 10
    # 25 requests at 5/s take ~4.8 s when the bucket is saturated; the round trips add little
    assert elapsed < 4.8 * 1.25, elapsed
    assert limiter.global_acquisitions <= 25 / 9 + 1  # chunks of 9, not one ask per request


async def test_a_request_sent_late_by_a_busy_process_keeps_the_window() -> None:
    """The event loop is blocked while a paced request waits for its turn: it goes out late, and the
    requests a window after it (in the next chunk) must move with it, or a provider counting a sliding
    window would see 11 requests in 2 s and answer 429."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix, chunk_seconds=2.0)
    limiter = _limiter(prefix, chunk_seconds=2.0)
    sent: list[float] = []
    await _send(limiter, 1, sent)  # takes the first chunk
    rest = asyncio.create_task(_send(limiter, 19, sent))  # all turns are given out now: the next in 0.2 s
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # noqa: ASYNC251 - a busy process: the second request's turn passes meanwhile
    await rest
    assert sorted(sent)[1] - sent[0] > 0.3  # it did go out late
    assert _max_in_window(sent, 2.0) <= 10


async def test_a_request_queued_beyond_the_chunk_does_not_hold_back_those_inside_it() -> None:
    """A request whose turn (in another group) is seconds ahead needs the next chunk and waits for it;
    requests whose turns fall inside the current chunk still take its grants meanwhile."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix, chunk_seconds=2.0)
    limiter = _limiter(prefix, chunk_seconds=2.0)
    await limiter.throttle(["api"])  # the first chunk: 9 grants over ~1.8 s
    bucket = limiter._bucket("api")
    began = time.monotonic()
    ahead = asyncio.create_task(bucket.reserve(began + 5.0))  # beyond this chunk: waits for the next one
    await asyncio.sleep(0.05)
    start, _ = await asyncio.wait_for(bucket.reserve(time.monotonic()), 1.0)  # inside it: not held back
    assert start - began < 0.5
    later, _ = await asyncio.wait_for(ahead, 10.0)
    assert later >= began + 5.0


async def test_a_request_in_a_fast_group_is_not_queued_behind_a_slow_groups_turns() -> None:
    """ListingRVA's product creates (products + global) and its /ai/* submissions (ai + global): the
    creates must not wait for the global turns of submissions queued seconds ahead in /ai/*."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    wide = RouteLimit(group="wide", requests=100, per_seconds=2.0)
    provider = type("Fake", (), {"name": "fake", "limits": ProviderLimits(route_groups=(GROUP, wide), max_inflight_jobs=5)})
    await ensure_limits(limit_specs(provider, Settings(limit_prefix=prefix, rate_chunk_seconds=2.0)))  # type: ignore[arg-type]
    limiter = ProviderLimiter(provider="fake", groups={"api": GROUP, "wide": wide}, inflight=5, prefix=prefix,
                              chunk_seconds=2.0)  # fmt: skip
    await limiter.throttle(["api", "wide"])  # both chunks taken
    slow: list[float] = []
    began = time.monotonic()

    async def one(groups: list[str], sent: list[float]) -> None:
        await limiter.throttle(groups)
        sent.append(time.monotonic())

    queued = asyncio.gather(*(one(["api", "wide"], slow) for _ in range(6)))  # 0.2 s apart: ~1.2 s of turns
    await asyncio.sleep(0.05)
    fast: list[float] = []
    await one(["wide"], fast)
    await queued
    assert fast[0] - began < 0.3, fast[0] - began  # not after the queued api turns
    assert max(slow) - began > 1.0  # which still keep their own pace
    assert _max_in_window(slow, 2.0) <= 10 and _max_in_window(slow + fast, 2.0) <= 100


async def test_a_dropped_connection_to_the_prefect_server_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request waiting on a group shares its refill: one lost connection must not fail them all."""
    from flows.limits import _Bucket

    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    read, dropped = _Bucket._read_limit, []

    async def flaky(self: _Bucket, client: object) -> object:
        if not dropped:
            dropped.append(self.name)
            raise httpx.ReadError("connection reset by peer")
        return await read(self, client)

    monkeypatch.setattr(_Bucket, "_read_limit", flaky)
    limiter = _limiter(prefix)
    sent: list[float] = []
    await asyncio.wait_for(_send(limiter, 3, sent), 10)
    assert dropped and len(sent) == 3


async def test_two_processes_share_the_rate_without_exceeding_the_window() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix)
    first, second = _limiter(prefix), _limiter(prefix)
    sent_first: list[float] = []
    sent_second: list[float] = []
    began = time.monotonic()
    await asyncio.gather(_send(first, 15, sent_first), _send(second, 15, sent_second))
    elapsed = time.monotonic() - began
    both = sent_first + sent_second
    # the server arbitrates: together they never exceed 10 in any 2-s window (a sliding window, as the
    # providers count), and each got its share
    assert _max_in_window(both, 2.0) <= 10
    assert first.global_acquisitions >= 1 and second.global_acquisitions >= 1
    assert elapsed >= (30 - 10) / 5  # not faster than the rate allows


async def test_a_process_that_dies_holding_a_chunk_delays_the_next_by_one_chunk_at_most() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix, chunk_seconds=2.0)
    dead = _limiter(prefix, chunk_seconds=2.0)
    await dead.throttle(["api"])  # took a chunk of 9 (2 s), spends one, then "dies"
    began = time.monotonic()
    sent: list[float] = []
    await _send(_limiter(prefix, chunk_seconds=2.0), 3, sent)
    assert time.monotonic() - began < 2.0 + 1.5  # waited for the dead chunk to decay, nothing more


async def test_a_missing_limit_raises_instead_of_running_unthrottled() -> None:
    limiter = _limiter(f"missing{uuid.uuid4().hex[:8]}")
    with pytest.raises(LimitMissing, match="does not exist"):
        await asyncio.wait_for(limiter.throttle(["api"]), 30)


async def test_without_global_limits_the_local_pace_still_holds() -> None:
    limiter = ProviderLimiter(provider="fake", groups={"api": GROUP}, inflight=5, prefix="unused", use_global=False)
    sent: list[float] = []
    await _send(limiter, 12, sent)
    assert _max_in_window(sent, 2.0) <= 10 and limiter.global_acquisitions == 0


async def test_seconds_until_free_tells_batching_how_long_the_pace_holds_requests_back() -> None:
    limiter = ProviderLimiter(provider="fake", groups={"api": GROUP}, inflight=5, prefix="unused", use_global=False)
    assert limiter.seconds_until_free() == 0.0
    await _send(limiter, 3, [])  # 3 sent 0.2 s apart: the next could go 0.2 s after the last
    assert 0.1 < limiter.seconds_until_free() <= 0.21
    await asyncio.sleep(0.25)
    assert limiter.seconds_until_free() == 0.0


async def test_a_process_configured_with_bigger_chunks_asks_for_what_the_limit_holds() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    await _limits(prefix, chunk_seconds=0.4)  # another process set the limit up with chunks of 2
    limiter = _limiter(prefix, chunk_seconds=2.0)  # this one would take 9
    sent: list[float] = []
    await asyncio.wait_for(_send(limiter, 6, sent), 30)
    assert _max_in_window(sent, 2.0) <= 10 and limiter.global_acquisitions >= 3


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
    assert first.lease_acquisitions + second.lease_acquisitions < 40, (first.lease_acquisitions,
                                                                        second.lease_acquisitions)
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
        await asyncio.wait_for(asyncio.gather(*(_hold(limiter, 0.02 * (n % 3)) for n in range(12))), timeout=20)
        await asyncio.sleep(2.5)
        assert (await _inflight_state(prefix))[0] == 0, burst
    await limiter.aclose()
