"""An ASGI app served by uvicorn in a background thread: the sandboxes and the webhook receivers.

A thread, not a process or the caller's event loop: the server must not take over the process's
signal handlers (Prefect owns them in a flow run), and its requests must be handled even while the
caller's loop is busy.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """``start`` returns once the server accepts connections (or raises within ``timeout``)."""

    def __init__(self, app: Any, *, host: str, port: int, name: str) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)
        self.where = f"{host}:{port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} failed to listen on {self.where}")
            time.sleep(0.01)

    def stop(self, timeout: float) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=timeout)
