"""The local Prefect server's process: uvicorn, ending when the process that started it is gone.

Started in a session of its own, so the terminal's Ctrl-C (sent to the whole foreground process group)
never stops the server under a run that is still winding down. ``listingflow run``'s background server
(``listingflow.server``) outlives the command and lives as long as its record names it; a server
started for one command only (``prefect_server_with_services``: the test suite's) watches its parent
instead and shuts down (uvicorn's graceful SIGTERM) once it is gone, so a parent killed with SIGKILL
cannot orphan it. Run as a script (no package import needed): ``python server_process.py <uvicorn
arguments>``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _watch_record(record: str, startup: float = 200.0) -> None:
    """The background server lives as long as its record (``.listingflow/server.json``) names it: a
    record removed (``rm -rf .listingflow``, ``make clean``) or naming another server ends it, so it
    cannot linger unknown to every later run."""
    path = Path(record)
    deadline = time.monotonic() + startup
    while not _names_me(path):  # written once the server answers
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    while _names_me(path):
        time.sleep(2.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _names_me(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("pid") == os.getpid())
    except (OSError, ValueError, AttributeError):
        return False


def main() -> None:
    record = os.environ.get("LISTINGFLOW_SERVER_RECORD")
    if record:  # the background server outlives its starter, not its record
        threading.Thread(target=_watch_record, args=(record,), daemon=True, name="record-watch").start()
    else:
        threading.Thread(target=_watch, args=(os.getppid(),), daemon=True, name="parent-watch").start()
    from uvicorn.main import main as uvicorn_main

    uvicorn_main(args=sys.argv[1:], prog_name="uvicorn")


if __name__ == "__main__":
    main()
