"""Shared fixtures: one Prefect test server per session, sandboxes per test, an isolated state dir.

Tests never depend on whatever plugins or settings the machine has: the session has its own
``PREFECT_HOME`` (the user's ``~/.prefect``, its database, storage and profiles, is neither read nor
written), every test gets its own ``LISTINGFLOW_HOME``, archive and limit-name prefix, and provider
settings point at in-process sandboxes. Rate limits are shortened to 2-second windows in both the
sandboxes and listingflow's settings, so limit behaviour is exercised without minute-long tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Prefect reads its home and profiles once, when it is first imported (and creates the folder then), so
# the session's own home is set here, before any test module imports Prefect.
if "prefect" in sys.modules:
    raise RuntimeError(
        "prefect was imported before tests/conftest.py could give the session its own PREFECT_HOME"
    )
SESSION_PREFECT_HOME = tempfile.mkdtemp(prefix="listingflow-tests-prefect-")
os.environ["PREFECT_HOME"] = SESSION_PREFECT_HOME
os.environ.pop("PREFECT_PROFILES_PATH", None)  # profiles come from the session home (none: the defaults)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")

FAST_LIMITS: dict[str, dict[str, tuple[int, float]]] = {
    "pixii": {"submit": (20, 2.0)},
    "listingrva": {"ai": (40, 2.0), "products": (60, 2.0), "global": (100, 2.0)},
    "prodvisual": {"api": (40, 2.0)},
}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Prefect server for the whole session (it takes ~15 s to start), with the server's services
    running (the repossessor frees the leases of runs the tests kill).

    Like ``prefect_test_harness``, but its teardown cannot hang the suite: the harness drains the
    log and event workers with no time bound, and with a session event loop (pytest-asyncio) that
    drain was seen to wait forever after the last test.
    """
    import prefect.context

    from listingflow.local import prefect_server_with_services

    db = tmp_path_factory.mktemp("prefect") / "prefect.db"
    with (
        prefect_server_with_services(f"sqlite+aiosqlite:///{db}", repossess_every=2.0) as api_url,
        prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()),
    ):
        yield api_url
        drain_prefect_workers()


def drain_prefect_workers(timeout: float = 15.0) -> None:
    """Send what Prefect's event and log workers hold, then stop them, within ``timeout``.

    Both are process-wide singletons bound to the API URL current when they started. A test that points
    this process at another server must drain them before that server stops: otherwise the event worker
    keeps sending to the stopped server, and the events of every later run (task runs are recorded from
    events) are lost (seen: a later run's task runs never reached the session server).
    """
    import contextvars
    import threading

    from prefect.utilities.asyncutils import run_coro_as_sync

    from listingflow.local import _drain

    # in this context (the test's temporary PREFECT_API_URL): a thread without it would create a log
    # worker for no API URL, which starts Prefect's ephemeral server (left running after the session)
    context = contextvars.copy_context()
    drain = threading.Thread(target=lambda: context.run(run_coro_as_sync, _drain()), daemon=True)
    drain.start()
    drain.join(timeout=timeout)


_EXIT_STATUS: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Exit as soon as pytest is done. Prefect registers at-exit drains of its event and log workers
    with no time bound; once the session's server is stopped, a drain with events left in it waits
    forever (seen in CI: the summary printed, then the process hung for over an hour)."""
    shutil.rmtree(SESSION_PREFECT_HOME, ignore_errors=True)
    if "status" in _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["status"])


@pytest.fixture
def lf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An isolated listingflow environment: state dir, archive, limit names, fast limits."""
    from flows.settings import reset_settings

    home = tmp_path / "state"
    archive = tmp_path / "archive"
    prefix = f"t{uuid.uuid4().hex[:10]}"
    overrides = {
        p: {g: {"requests": n, "per_seconds": w} for g, (n, w) in groups.items()}
        for p, groups in FAST_LIMITS.items()
    }
    values = {
        "LISTINGFLOW_HOME": str(home),
        "LISTINGFLOW_ARCHIVE": str(archive),
        "LISTINGFLOW_LIMIT_PREFIX": prefix,
        "LISTINGFLOW_RATE_LIMITS": json.dumps(overrides),
        "LISTINGFLOW_RETRY__BASE_DELAY_SECONDS": "0.05",
        "LISTINGFLOW_RETRY__MAX_TOTAL_SECONDS": "30",
        "PIXII_POLL_INTERVAL_SECONDS": "0.1",
        "LISTINGRVA_POLL_INTERVAL_SECONDS": "0.1",
        "PRODVISUAL_POLL_INTERVAL_SECONDS": "0.1",
        "PIXII_HTTP_RETRY__BASE_DELAY_SECONDS": "0.05",
        "LISTINGRVA_HTTP_RETRY__BASE_DELAY_SECONDS": "0.05",
        "PRODVISUAL_HTTP_RETRY__BASE_DELAY_SECONDS": "0.05",
        "PIXII_MAX_WAIT_SECONDS": "20",
        "LISTINGRVA_MAX_WAIT_SECONDS": "20",
        "PRODVISUAL_MAX_WAIT_SECONDS": "20",
        # how long an empty job list / unchanged balance is not believed after a lost answer (10 s real)
        "PIXII_SETTLE_SECONDS": "0.3",
        "LISTINGRVA_SETTLE_SECONDS": "0.3",
        "PRODVISUAL_SETTLE_SECONDS": "0.3",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    yield {"home": home, "archive": archive, "prefix": prefix, "tmp": tmp_path}
    reset_settings()


def sandbox_updates(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sandbox config changes matching FAST_LIMITS, plus per-provider extras."""
    out: dict[str, dict[str, Any]] = {}
    for name, groups in FAST_LIMITS.items():
        out[name] = {"rate_limits": dict(groups), "image_px": 32, **extra.get(name, {})}
    return out


@pytest.fixture
def sandboxes(lf_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The three sandboxes on loopback with short jobs; provider settings point at them."""
    from flows.settings import reset_settings
    from listingflow.local import running_sandboxes
    from providers.registry import load_providers

    registry = load_providers()
    with running_sandboxes(
        dict(registry.providers), job_seconds=0.3, config_updates=sandbox_updates()
    ) as boxes:
        reset_settings()
        yield boxes
    reset_settings()
