"""The documented submission limits: 10 per minute (sliding) and 500 per day, with Pixii's headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.errors import QuotaExhausted, RateLimited
from providers.pixii.plugin import PixiiProvider
from providers.pixii.sandbox import PixiiSandbox

from .conftest import KEY, make_sandbox, settings_for

BODY = {"asin": "B0LIMIT001", "country_code": "US", "listing_type": "amazon_main_images"}


@pytest.fixture
def limited() -> Iterator[PixiiSandbox]:
    sb = make_sandbox()  # the default config: the real 10/60 s and 500/day
    assert sb.config.rate_limits == {"submit": (10, 60.0)} and sb.config.daily_limit == 500
    sb.start()
    yield sb
    sb.stop()


def test_the_in_flight_cap_never_binds_before_the_rate_for_jobs_up_to_twice_the_published_time() -> None:
    """A job holds its in-flight slot until a poll sees it done; a cap under the rate's steady state
    (submissions per minute x job minutes, plus a window of jobs done but not yet seen) would pace
    the run below the documented 10 a minute."""
    limits = PixiiProvider.limits
    (submit,) = limits.route_groups
    per_minute = submit.requests * 60 / submit.per_seconds
    published_job_minutes = 2.0  # docs/providers/pixii.md §10: Listing Builder and Scale jobs, ~2 min
    assert limits.max_inflight_jobs >= per_minute * 2 * published_job_minutes + submit.requests


async def test_minute_window(limited, http) -> None:
    url, headers = f"{limited.public_url}/v1/api/listing_builder", {"Authorization": f"Bearer {KEY}"}
    for n in range(10):
        r = await http.post(url, json=BODY, headers=headers)
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit-Minute"] == "10"
        assert r.headers["X-RateLimit-Remaining-Minute"] == str(9 - n)
        assert r.headers["X-RateLimit-Limit-Day"] == "500"
        assert r.headers["X-RateLimit-Remaining-Day"] == str(499 - n)
    r = await http.post(url, json=BODY, headers=headers)
    assert r.status_code == 429
    body = r.json()
    assert body["code"] == "RATE_LIMIT_MINUTE_EXCEEDED" and 0 < body["retry_after"] <= 60
    assert r.headers["Retry-After"] == str(body["retry_after"])
    assert r.headers["X-RateLimit-Remaining-Minute"] == "0"
    assert len(limited.jobs) == 10 and limited.max_requests_in_window("submit", 60) == 10
    # polls and job listings are not limited
    job_id = next(iter(limited.jobs))
    assert (await http.get(f"{limited.public_url}/v1/api/jobs/{job_id}", headers=headers)).status_code == 200
    r = await http.get(f"{limited.public_url}/v1/api/jobs", params={"asin": "B0LIMIT001"}, headers=headers)
    assert r.status_code == 200 and r.json()["total"] == 10
    # the window slides
    limited.clock.advance(61)
    assert (await http.post(url, json=BODY, headers=headers)).status_code == 200


async def test_client_maps_minute_limit(limited, http) -> None:
    provider = PixiiProvider(http, settings_for(limited.public_url))
    for _ in range(10):
        await provider.client.listing_builder(BODY)
    with pytest.raises(RateLimited) as info:
        await provider.client.listing_builder(BODY)
    assert info.value.code == "RATE_LIMIT_MINUTE_EXCEEDED" and 0 < info.value.retry_after <= 60


async def test_daily_cap_is_quota_exhausted(http) -> None:
    sb = make_sandbox(daily_limit=3, rate_limits={"submit": (100, 60.0)})
    sb.start()
    try:
        provider = PixiiProvider(http, settings_for(sb.public_url))
        for _ in range(3):
            await provider.client.listing_builder(BODY)
        with pytest.raises(QuotaExhausted) as info:
            await provider.client.listing_builder(BODY)
        assert info.value.code == "RATE_LIMIT_DAY_EXCEEDED" and 0 < info.value.retry_after <= 86400
        assert len(sb.jobs) == 3
        sb.clock.advance(86400)
        await provider.client.listing_builder(BODY)
    finally:
        sb.stop()
