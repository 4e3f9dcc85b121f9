"""Shared fixtures: one fast ProdVisual sandbox per test module, and a provider bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from providers.contract import ImageOptions, Product, StepContext
from providers.prodvisual.plugin import ProdVisualProvider, ProdVisualSettings
from providers.prodvisual.sandbox import ProdVisualSandbox
from providers.retries import HttpRetry

KEY = ProdVisualProvider.sandbox_key

FAST_RETRY = HttpRetry(base_delay_seconds=0.01, max_delay_seconds=0.2, jitter=0.0)


def fast_config(**changes: object):
    """Short jobs and a generous window, so tests are quick and only the rate-limit tests hit 429."""
    base = {"job_seconds": 0.2, "rate_limits": {"api": (10_000, 60.0)}}
    return ProdVisualSandbox.default_config().model_copy(update={**base, **changes})


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ProdVisualSandbox]:
    sb = ProdVisualSandbox(fast_config())
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def clean(sandbox: ProdVisualSandbox) -> Iterator[ProdVisualSandbox]:
    """The sandbox, with faults, failing ASINs and durations restored after the test."""
    saved = sandbox.config.model_copy()
    sync_limit = sandbox.sync_limit_seconds
    yield sandbox
    sandbox.reconfigure(
        **{
            k: getattr(saved, k)
            for k in ("faults", "fail_asins", "partial_fail_asins", "job_seconds", "job_seconds_by_kind")
        }
    )
    sandbox.sync_limit_seconds = sync_limit


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_settings(base_url: str, **kw: object) -> ProdVisualSettings:
    values = {
        "base_url": base_url,
        "api_key": SecretStr(KEY),
        "poll_interval_seconds": 0.05,
        "max_wait_seconds": 10,
        "http_retry": FAST_RETRY,
    }
    return ProdVisualSettings(**{**values, **kw})


@pytest.fixture
def provider(http: httpx.AsyncClient, sandbox: ProdVisualSandbox) -> ProdVisualProvider:
    return ProdVisualProvider(http, make_settings(sandbox.public_url))


def product(asin: str = "B0TESTAAA1", *, images: list[str] | None = None) -> Product:
    urls = images if images is not None else [f"https://img.example.com/{asin}/main.jpg"]
    return Product(asin=asin, country_code="US", title="Steel water bottle", image_urls=urls)


def ctx(
    asin: str = "B0TESTAAA1",
    styles: list[str] | None = None,
    platform: str = "amazon",
    size: int = 1500,
    images: list[str] | None = None,
) -> StepContext:
    options = ImageOptions(styles=styles or [], platform=platform, size=size)
    return StepContext(product=product(asin, images=images), image_options=options)


def count(sandbox: ProdVisualSandbox, route: str | None = None) -> int:
    return sum(1 for r in sandbox.requests if route is None or r.route == route)
