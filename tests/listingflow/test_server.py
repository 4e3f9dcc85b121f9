"""The local Prefect server ``listingflow run`` starts in the background: reused, shown, stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from listingflow.server import (
    _alive,
    ensure_server,
    record_path,
    running_server,
    stop_server,
)

ROOT = Path(__file__).resolve().parents[2]


def _server_cli(command: str, lf_env: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run(
        [sys.executable, "-m", "listingflow.cli", "server", command],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_one_background_server_is_reused_shown_and_ends_with_its_record(lf_env: dict[str, Any]) -> None:
    home = lf_env["home"]
    try:
        first, started = ensure_server(home)
        again, started_again = ensure_server(home)
        assert started and not started_again and again == first
        status = _server_cli("status", lf_env)
        assert status.returncode == 0 and first.url in status.stdout, status.stdout + status.stderr

        time.sleep(2.5)  # `rm -rf .listingflow` (make clean): the server must not linger unknown
        record_path(home).unlink()
        deadline = time.monotonic() + 20
        while _alive(first.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(first.pid), "the server outlived its record"
        status = _server_cli("status", lf_env)
        assert status.returncode == 1 and "not running" in status.stdout
    finally:
        stop_server(home)


def test_server_stop_stops_it(lf_env: dict[str, Any]) -> None:
    home = lf_env["home"]
    try:
        record, _ = ensure_server(home)
        stopped = _server_cli("stop", lf_env)
        assert stopped.returncode == 0 and f"stopped (pid {record.pid})" in stopped.stdout, stopped.stdout
        assert running_server(home) is None and not _alive(record.pid)
        assert "was not running" in _server_cli("stop", lf_env).stdout
    finally:
        stop_server(home)
