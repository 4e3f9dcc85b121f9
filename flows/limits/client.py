"""``prefect_client``: Prefect's API client for the limits' calls, cheap to open outside a flow run.

Prefect builds a TLS context for every client it creates (the CA bundle loaded: ~18 ms of CPU each,
measured with cProfile), even for an ``http://`` server. Inside a flow run ``get_client`` hands back
the run's own client; outside one (a CLI run's pre-flight and first leases, while Prefect creates the
flow run) each lease call opened a new one, ~0.2 s of the event loop at a run's start. Outside a
flow run the context is built once, the way Prefect builds it, and passed in.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import cache

import certifi
from prefect.client.orchestration import PrefectClient, get_client
from prefect.context import AsyncClientContext
from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY


def prefect_client() -> PrefectClient:
    """The flow run's client inside one; else a new client with the process's TLS context."""
    if AsyncClientContext.get() is not None:
        return get_client()
    return get_client(httpx_settings={"verify": _tls(*_tls_settings())})


async def warm_prefect_tls() -> None:
    """Build that context in a thread (loading the CA bundle lets go of the GIL), before the first
    lease call needs it on the event loop; inside a flow run its own client is used instead."""
    if AsyncClientContext.get() is None:
        await asyncio.to_thread(_tls, *_tls_settings())


def _tls_settings() -> tuple[bool, str | None]:
    return bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()), PREFECT_API_SSL_CERT_FILE.value()


@cache
def _tls(skip_verify: bool, cert_file: str | None) -> ssl.SSLContext:
    """As ``PrefectClient.__init__`` builds it for these settings."""
    if skip_verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=cert_file or certifi.where())
