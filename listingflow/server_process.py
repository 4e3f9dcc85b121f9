"""The local Prefect server's process: uvicorn, ending when the process that started it is gone.

Started in a session of its own, so the terminal's Ctrl-C (sent to the whole foreground process group)
never stops the server under a run that is still winding down. ``listingflow run``'s background server
(``listingflow.server``) is meant to outlive the command; a server started for one command only
(``prefect_server_with_services``: the test suite's) watches its parent instead and shuts down
(uvicorn's graceful SIGTERM) once it is gone, so a parent killed with SIGKILL cannot orphan it. Run as a script (no
package import needed): ``python server_process.py <uvicorn arguments>``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    if not os.environ.get("LISTINGFLOW_SERVER_DETACHED"):  # the background server outlives its starter
        threading.Thread(target=_watch, args=(os.getppid(),), daemon=True, name="parent-watch").start()
    from uvicorn.main import main as uvicorn_main

    uvicorn_main(args=sys.argv[1:], prog_name="uvicorn")


if __name__ == "__main__":
    main()
