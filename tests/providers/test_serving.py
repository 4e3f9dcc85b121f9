"""In-process servers (sandboxes, webhook receivers) listen on a port the OS gives them.

A port checked free and bound later can be taken in between by anything else on the host (seen: a
Prefect test server on the webhook receiver's default port 8787). Each test below holds a port that
the old check-then-bind code would have been handed or configured with.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from providers.pixii.sandbox import PixiiSandbox
from providers.serving import ThreadedServer
from providers.webhooks import WebhookInbox


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process holds."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


async def _ok(request: object) -> object:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse("ok")


def test_servers_on_port_0_get_their_own_ports_and_report_them() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = Starlette(routes=[Route("/", _ok)])
    servers = [ThreadedServer(app, host="127.0.0.1", port=0, name=f"test-{n}") for n in range(2)]
    try:
        ports = [server.start() for server in servers]
        assert len(set(ports)) == 2 and all(ports) and [s.port for s in servers] == ports
        assert all(httpx.get(f"http://127.0.0.1:{port}/").text == "ok" for port in ports)
    finally:
        for server in servers:
            server.stop(5)


def test_a_port_in_use_is_one_clear_error(taken_port: int) -> None:
    server = ThreadedServer(lambda *a: None, host="127.0.0.1", port=taken_port, name="test-taken")
    with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{taken_port}"):
        server.start(timeout=5)


def test_a_sandbox_never_listens_on_a_port_checked_earlier(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    """Were the sandbox still to ask for a free port first, it would be handed this one, taken since."""
    monkeypatch.setattr("providers.sandbox.core.free_port", lambda: taken_port, raising=False)
    sandbox = PixiiSandbox(PixiiSandbox.default_config())
    try:
        url = sandbox.start()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(f":{taken_port}")
    finally:
        sandbox.stop()


async def test_a_loopback_webhook_receiver_takes_any_free_port(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    """'auto' (the sandboxes' receiver) derives its URL from the port: the configured default port,
    or one checked earlier, may be in use by another process on the host."""
    monkeypatch.setattr("providers.webhooks.free_port", lambda: taken_port, raising=False)
    for listen in (f"0.0.0.0:{taken_port}", "0.0.0.0:0"):
        inbox = WebhookInbox(
            name="Test",
            path="/hook",
            public_url="auto",
            listen=listen,
            verify=lambda raw, headers: True,
            parse=lambda raw: ("job-1", {}),
        )
        await inbox.start()
        try:
            assert inbox.url.startswith("http://127.0.0.1:") and f":{taken_port}/" not in inbox.url
            async with httpx.AsyncClient() as http:
                assert (await http.post(inbox.url, content=b"{}")).status_code == 200
        finally:
            await inbox.aclose()
