"""Shared fixtures: one running Pixii sandbox per test module, reset between tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from providers.contract import Product, StepContext
from providers.pixii.plugin import PixiiProvider, PixiiSettings
from providers.pixii.sandbox import PixiiSandbox
from providers.retries import HttpRetry

KEY = PixiiProvider.sandbox_key
FAIL_ASIN = "B0FAIL0001"
PARTIAL_ASIN = "B0PART0001"

FAST_RETRY = HttpRetry(base_delay_seconds=0.01, max_delay_seconds=0.2, jitter=0.0)


def make_sandbox(**changes: Any) -> PixiiSandbox:
    config = PixiiSandbox.default_config().model_copy(
        update={
            "job_seconds": 0.2,
            "fail_asins": [FAIL_ASIN],
            "partial_fail_asins": [PARTIAL_ASIN],
            "image_px": 32,
            **changes,
        }
    )
    return PixiiSandbox(config)


@pytest.fixture(scope="module")
def running_sandbox() -> Iterator[PixiiSandbox]:
    # A generous minute window so functional tests do not trip the 10/min limit; the documented
    # limit has its own sandbox in test_limits.py.
    sb = make_sandbox(rate_limits={"submit": (10_000, 60.0)})
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def sandbox(running_sandbox: PixiiSandbox) -> Iterator[PixiiSandbox]:
    """The module's sandbox, put back to its defaults after each test."""
    yield running_sandbox
    sb = running_sandbox
    sb.reconfigure(faults=[], job_seconds=0.2)
    sb.lose_responses = 0
    sb.active_brand = True
    sb.clock.offset = 0.0
    sb.balance = sb.config.starting_credits


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def settings_for(url: str, **kw: Any) -> PixiiSettings:
    values: dict[str, Any] = {
        "base_url": url,
        "api_key": KEY,
        "poll_interval_seconds": 0.03,
        "max_wait_seconds": 10.0,
        "timeout_seconds": 5.0,
        "settle_seconds": 0.05,
        "http_retry": FAST_RETRY,
        **kw,
    }
    return PixiiSettings(_env_file=None, **values)


@pytest.fixture
def make_provider(sandbox: PixiiSandbox, http: httpx.AsyncClient) -> Callable[..., PixiiProvider]:
    def build(**kw: Any) -> PixiiProvider:
        return PixiiProvider(http, settings_for(sandbox.public_url, **kw))

    return build


@pytest.fixture
def provider(make_provider: Callable[..., PixiiProvider]) -> PixiiProvider:
    return make_provider()


def product(asin: str = "B0TEST0001", **kw: Any) -> Product:
    data: dict[str, Any] = {
        "asin": asin,
        "country_code": "US",
        "title": "Steel water bottle",
        "description": "Keeps drinks cold for 24 hours.",
        "image_urls": ["https://img.example.com/a.jpg", "https://img.example.com/b.jpg"],
        **kw,
    }
    return Product.model_validate(data)


def ctx(asin: str = "B0TEST0001", **kw: Any) -> StepContext:
    prod_kw = {k: kw.pop(k) for k in ("image_urls", "variations", "title") if k in kw}
    return StepContext(product=product(asin, **prod_kw), **kw)
