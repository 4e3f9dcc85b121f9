"""The local Prefect server of ``listingflow run``: started on demand in the background, then reused.

Starting Prefect's server takes 10-20 s (migrations, services), which a rerun that pays nothing should
not wait for every time. So the first run without ``PREFECT_API_URL`` starts one on the SQLite
database under ``.listingflow/``, in a session of its own (the terminal's Ctrl-C never reaches it),
and records it in ``.listingflow/server.json``; later runs find it there and start in seconds.
``listingflow server status|stop`` shows and stops it. ``PREFECT_API_URL``, when set, always wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

STARTUP_TIMEOUT = 180.0


class ServerRecord(BaseModel):
    pid: int
    url: str
    database: str
    log: str
    started_at: float


def prefect_server_args(port: int) -> list[str]:
    """uvicorn's arguments for Prefect's API alone on loopback: its app factory, quiet logs, lifespan."""
    import prefect

    app = [
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
    ]
    return [*app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]


def record_path(home: Path) -> Path:
    return home / "server.json"


def _read(home: Path) -> ServerRecord | None:
    try:
        return ServerRecord.model_validate_json(record_path(home).read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")  # a reused pid is not our server
    return not cmdline.exists() or b"server_process.py" in cmdline.read_bytes()


def _healthy(url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=timeout).is_success
    except httpx.HTTPError:
        return False


def running_server(home: Path, patience: float = 10.0) -> ServerRecord | None:
    """The recorded server, if its process is alive and answers (a live one that is slow to answer, on a
    busy machine, is given ``patience`` s: starting another would end it, under any run using it)."""
    record = _read(home)
    if record is None:
        return None
    deadline = time.monotonic() + patience
    while _alive(record.pid):
        if _healthy(record.url):
            return record
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return None


@contextlib.contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    """One starter at a time: two runs launched together share one server."""
    import fcntl

    with open(home / "server.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_server(home: Path) -> tuple[ServerRecord, bool]:
    """The running server for this state dir, started if needed; and whether it was started now."""
    home.mkdir(parents=True, exist_ok=True)
    record = running_server(home)
    if record is not None:
        return record, False
    with _start_lock(home):
        record = running_server(home)
        if record is not None:
            return record, False
        record = _start(home)
        tmp = record_path(home).with_suffix(".tmp")
        tmp.write_text(record.model_dump_json())
        tmp.replace(record_path(home))
        return record, True


def _start(home: Path) -> ServerRecord:
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    from providers.serving import free_port

    database = f"sqlite+aiosqlite:///{(home / 'prefect.db').resolve()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = home / "server.log"
    updates: dict[Any, Any] = {
        PREFECT_SERVER_DATABASE_CONNECTION_URL: database,
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS: 5.0,
    }
    with temporary_settings(updates=updates):
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_FINAL": "1",
            "LISTINGFLOW_SERVER_RECORD": str(record_path(home).resolve()),
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
    env.pop("PREFECT_API_URL", None)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("server_process.py")),
                *prefect_server_args(port),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not _healthy(url, timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                proc.kill()
            raise RuntimeError(f"the local Prefect server did not start; its log: {log}")
        time.sleep(0.2)
    return ServerRecord(pid=proc.pid, url=url, database=database, log=str(log), started_at=time.time())


def stop_server(home: Path, timeout: float = 10.0) -> ServerRecord | None:
    """Stop the recorded server (SIGTERM: uvicorn shuts down cleanly; SIGKILL after ``timeout``)."""
    record = _read(home)
    if record is None:
        return None
    if _alive(record.pid):
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(record.pid):
            os.kill(record.pid, signal.SIGKILL)
    record_path(home).unlink(missing_ok=True)
    return record


def describe(record: ServerRecord) -> dict[str, Any]:
    described: dict[str, Any] = json.loads(record.model_dump_json())
    return described | {"uptime_seconds": round(time.time() - record.started_at)}
