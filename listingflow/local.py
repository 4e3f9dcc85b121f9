"""Local conveniences for ``listingflow run`` and the demo: a Prefect server and the sandboxes.

Without ``PREFECT_API_URL``, Prefect would start an ephemeral server per process and print shutdown
errors on success (see the Prefect facts note). Instead ``listingflow run`` uses one server on a SQLite
database under ``.listingflow/`` (so cached submissions, limits and run history persist between local
runs), started in the background on first use and reused (``listingflow.server``), and drains the log
and event workers before the command ends.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from providers.contract import Provider
from providers.sandbox.core import Sandbox


@contextmanager
def local_prefect_server(home: Path) -> Iterator[str]:
    """Yield an API URL: the configured one, or the local background server (started if needed)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if configured_api_url():
        yield str(PREFECT_API_URL.value() or os.environ["PREFECT_API_URL"])
        return

    from prefect.utilities.asyncutils import run_coro_as_sync

    from listingflow.server import ensure_server

    record, _ = ensure_server(home)
    with temporary_settings(updates={PREFECT_API_URL: record.url}):
        yield record.url
        run_coro_as_sync(_drain())


def configured_api_url() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value())


@contextmanager
def prefect_server_with_services(database_url: str, *, repossess_every: float = 5.0) -> Iterator[str]:
    """A Prefect server in a subprocess, on ``database_url``, that runs the server's services.

    Prefect's ``SubprocessASGIServer`` marks its server *ephemeral*, and an ephemeral server does not run
    the repossessor: the in-flight lease of a run that was killed would never be revoked, and every
    later run would wait on that slot forever (seen: a rerun after SIGKILL hung). This server runs the
    services a ``prefect server start`` runs, with the repossessor checking every ``repossess_every`` s.
    """
    import prefect.settings

    settings = prefect.settings
    with settings.temporary_settings(
        updates={
            settings.PREFECT_SERVER_DATABASE_CONNECTION_URL: database_url,
            settings.PREFECT_SERVER_ANALYTICS_ENABLED: False,
            settings.PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS: repossess_every,
        }
    ):
        server = _server_with_services()()
        try:
            server.start(timeout=180)
            with settings.temporary_settings(updates={settings.PREFECT_API_URL: server.api_url}):
                yield server.api_url
        finally:
            process = server.server_process
            server.stop()
            _SERVERS.discard(process)


@functools.cache
def _server_with_services() -> type[Any]:
    """``SubprocessASGIServer`` without its ephemeral marker, and a new instance per call.

    Prefect keeps one instance per port in ``SubprocessASGIServer._instances``, which subclasses share:
    without our own ``__new__`` and registry, "a new server" could be Prefect's temporary server for
    this process (already running, so ``start`` does nothing: no services), or another caller's
    server, which our ``stop`` would then stop (imported here: Prefect's server modules are heavy)."""
    import subprocess
    import sys

    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class ServerWithServices(SubprocessASGIServer):
        # never registered: stop unregisters nothing. Not a ClassVar: prefect's base declares it without one
        _instances: dict[int | None, SubprocessASGIServer] = {}  # noqa: RUF012

        def __new__(cls, *args: Any, **kwargs: Any) -> ServerWithServices:
            return object.__new__(cls)

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # SubprocessASGIServer's own command, without its PREFECT__SERVER_EPHEMERAL marker, in a
            # session of its own (Ctrl-C reaches the run, not the server) and watching its parent
            proc = subprocess.Popen(
                args=[
                    sys.executable,
                    str(Path(__file__).with_name("server_process.py")),
                    "--app-dir",
                    str(prefect.__module_path__.parent),
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env={
                    **os.environ,
                    "PREFECT_UI_ENABLED": "0",
                    "PREFECT__SERVER_FINAL": "1",
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                },
                start_new_session=True,
            )
            _SERVERS.add(proc)
            return proc

    return ServerWithServices


_SERVERS: set[Any] = set()
"""Server processes this process started and has not stopped yet."""


def kill_local_servers() -> None:
    """Kill the Prefect servers this process started, at once (the CLI's second Ctrl-C: there is no
    time to stop them cleanly, and in their own sessions they would not die with this process)."""
    for proc in list(_SERVERS):
        with contextlib.suppress(OSError):
            proc.kill()


async def _drain() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    try:
        result = APILogWorker.instance().drain()
        if inspect.isawaitable(result):
            await result
    except RuntimeError:
        pass
    events = EventsWorker.drain_all()
    if inspect.isawaitable(events):
        await events


def sandbox_class(provider: type[Provider]) -> type[Sandbox]:
    if not provider.sandbox:
        raise ValueError(f"provider {provider.name} ships no sandbox")
    module, _, name = provider.sandbox.partition(":")
    sandbox: type[Sandbox] = getattr(importlib.import_module(module), name)
    return sandbox


def noncompliant_products(
    catalog_uri: str, asins: list[str], *, s3_endpoint_url: str | None = None
) -> list[str]:
    """What identifies these products on each sandbox's wire, for ``SandboxConfig.noncompliant_asins``:
    the ASIN (Pixii's requests carry it) and the product's main image URL (all ProdVisual and ListingRVA
    see of it). A catalog that does not load leaves the ASINs alone (the run reports the catalog's error)."""
    from flows.catalog import CatalogError, load_catalog

    try:
        products = load_catalog(catalog_uri, s3_endpoint_url=s3_endpoint_url).products
    except (CatalogError, OSError):
        return list(asins)
    urls = [p.image_urls[0] for p in products if p.asin in asins and p.image_urls]
    return list(dict.fromkeys([*asins, *urls]))


@contextmanager
def running_sandboxes(
    providers: dict[str, type[Provider]],
    *,
    job_seconds: float | None = None,
    ports: dict[str, int] | None = None,
    config_updates: dict[str, dict[str, Any]] | None = None,
    set_env: bool = True,
) -> Iterator[dict[str, Sandbox]]:
    """Start each provider's sandbox on loopback and point the provider settings at it, with a new
    ``LISTINGFLOW_SANDBOX_INSTANCE``: runs against these sandboxes keep their state apart."""
    started: dict[str, Sandbox] = {}
    saved = dict(os.environ)
    try:
        for name, provider in providers.items():
            cls = sandbox_class(provider)
            config = cls.default_config()
            updates = dict((config_updates or {}).get(name, {}))
            if job_seconds is not None:
                updates.setdefault("job_seconds", job_seconds)
                updates.setdefault("job_seconds_by_kind", {})
            if updates:
                config = config.model_copy(update=updates)
            sandbox = cls(config)
            sandbox.start(port=(ports or {}).get(name, 0))
            started[name] = sandbox
            if set_env:
                prefix = provider.settings_class.model_config.get("env_prefix", f"{name.upper()}_")
                os.environ[f"{prefix}BASE_URL"] = sandbox_base_url(provider, sandbox)
                os.environ[f"{prefix}API_KEY"] = provider.sandbox_key
        if set_env:
            os.environ["LISTINGFLOW_SANDBOX_MODE"] = "true"
            os.environ["LISTINGFLOW_SANDBOX_INSTANCE"] = new_sandbox_instance()
        yield started
    finally:
        for sandbox in started.values():
            sandbox.stop()
        if set_env:
            os.environ.clear()
            os.environ.update(saved)


def sandbox_base_url(provider: type[Provider], sandbox: Sandbox) -> str:
    """The provider's base URL with the sandbox's scheme and host (keeps any path such as ``/api``)."""
    from urllib.parse import urlsplit

    default = provider.settings_class.model_fields["base_url"].default or ""
    path = urlsplit(default).path.rstrip("/")
    return sandbox.public_url + path


def new_sandbox_instance() -> str:
    """An id for one start of the sandboxes (their jobs live as long as they do)."""
    import uuid

    return uuid.uuid4().hex[:12]


def discard_sandbox_state(sandbox_dir: Path | None) -> None:
    """Remove the cached submissions and locks of runs against sandboxes that have stopped (their jobs
    are gone with them); outputs still spooled for an unreachable archive are kept."""
    import shutil

    if sandbox_dir is None or not sandbox_dir.is_dir():
        return
    for part in ("results", "locks"):
        shutil.rmtree(sandbox_dir / part, ignore_errors=True)
    spool = sandbox_dir / "spool"
    if spool.is_dir() and not any(p.is_file() for p in spool.rglob("*")):
        shutil.rmtree(spool, ignore_errors=True)
    with contextlib.suppress(OSError):
        sandbox_dir.rmdir()
