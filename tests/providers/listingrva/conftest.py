"""Fixtures: one running ListingRVA sandbox per test module, fast jobs, generous limits.

The documented (strict) rate limits are exercised by their own sandbox in ``test_sandbox.py``; the
module sandbox raises them so that many tests in a row do not trip the 30/min ``ai`` bucket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from providers.contract import Product
from providers.listingrva.client import ListingRVAClient
from providers.listingrva.plugin import ListingRVAProvider, ListingRVASettings
from providers.listingrva.sandbox import ListingRVASandbox
from providers.retries import HttpRetry

KEY = ListingRVAProvider.sandbox_key

FAST_RETRY = HttpRetry(base_delay_seconds=0.01, max_delay_seconds=0.2, jitter=0.0)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ListingRVASandbox]:
    config = ListingRVASandbox.default_config().model_copy(
        update={
            "job_seconds": 0.2,
            "rate_limits": {g: (100_000, 60.0) for g in ("ai", "products", "global")},
        }
    )
    sb = ListingRVASandbox(config)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_settings(sandbox: ListingRVASandbox, **kw: object) -> ListingRVASettings:
    values = {
        "base_url": sandbox.api_url,
        "api_key": KEY,
        "poll_interval_seconds": 0.02,
        "max_wait_seconds": 5.0,
        "http_retry": FAST_RETRY,
    }
    return ListingRVASettings(**{**values, **kw})


@pytest.fixture
def provider(sandbox: ListingRVASandbox, http: httpx.AsyncClient) -> ListingRVAProvider:
    return ListingRVAProvider(http, make_settings(sandbox))


@pytest.fixture
def client(provider: ListingRVAProvider) -> ListingRVAClient:
    return provider.client


def product(asin: str = "B0TEST0001", title: str = "Organic Green Tea 100g", **kw: object) -> Product:
    values = {
        "asin": asin,
        "country_code": "US",
        "title": title,
        "category": "Food & Beverage",
        "image_urls": [f"https://images.example.com/{asin}.jpg"],
    }
    return Product(**{**values, **kw})
