"""The local Prefect server is always one of ours, running the server's services.

Prefect keeps one ``SubprocessASGIServer`` per port in a registry its subclasses share: asking for
"a server" could hand back Prefect's own temporary server, which runs no repossessor, so a killed
run's concurrency lease would never be freed. No server is started here: ``start`` is replaced.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from prefect.server.api.server import SubprocessASGIServer

from listingflow.local import prefect_server_with_services


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[SubprocessASGIServer]:
    """Every server ``start``-ed, none really launched; Prefect's registry is restored afterwards."""
    servers: list[SubprocessASGIServer] = []

    def start(self: SubprocessASGIServer, timeout: int | None = None) -> None:
        self.port, self.running = self.port or 50_000 + len(servers), True
        servers.append(self)

    monkeypatch.setattr(SubprocessASGIServer, "start", start)
    monkeypatch.setattr(SubprocessASGIServer, "_instances", {})
    return servers


def test_prefects_own_temporary_server_is_never_taken_for_ours(started: list[SubprocessASGIServer]) -> None:
    prefects = SubprocessASGIServer()  # Prefect's temporary server for this process, already up
    prefects.port, prefects.running = 8123, True
    with prefect_server_with_services("sqlite+aiosqlite:///unused.db") as url:
        [ours] = started
        assert ours is not prefects and type(ours) is not SubprocessASGIServer
        assert url == ours.api_url != prefects.api_url
    assert SubprocessASGIServer._instances.get(None) is prefects  # stopping ours left Prefect's registered


def test_each_server_is_its_own_and_runs_the_services(
    started: list[SubprocessASGIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[dict[str, Any]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, env, **kw: commands.append(env))
    with prefect_server_with_services("sqlite+aiosqlite:///a.db", repossess_every=3.0) as outer:
        with prefect_server_with_services("sqlite+aiosqlite:///b.db") as inner:
            assert inner != outer
        assert started[0].running and not started[1].running  # the inner one stopped only itself
        started[0]._run_uvicorn_command()
    [env] = commands
    assert "PREFECT__SERVER_EPHEMERAL" not in env  # an ephemeral server runs no services
    assert env["PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS"] == "3.0"
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == "sqlite+aiosqlite:///a.db"


def test_noncompliant_products_are_named_as_each_sandbox_sees_them() -> None:
    """Pixii's requests carry the ASIN; ProdVisual and ListingRVA see only the product's image URL."""
    from listingflow.local import noncompliant_products

    assert noncompliant_products("examples/catalog.csv", ["B0D1LMN8QR"]) == [
        "B0D1LMN8QR",
        "https://m.media-amazon.com/images/I/61charger-main.jpg",
    ]
    assert noncompliant_products("no/such/catalog.csv", ["B0D1LMN8QR"]) == ["B0D1LMN8QR"]
