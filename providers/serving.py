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
    """A port that was free a moment ago, for a server in *another* process (``prefect server start``,
    PostgreSQL), which cannot be handed a socket. Another process may take it before that server
    binds it: in-process servers bind port 0 instead (``ThreadedServer``) and report the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThreadedServer:
    """``start`` binds (port 0: a port the OS picks, free by construction, not one checked earlier
    that another process can take meanwhile), serves, and returns the port once the server accepts
    connections (or raises within ``timeout``)."""

    def __init__(self, app: Any, *, host: str, port: int = 0, name: str) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.host, self.port = host, port

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> int:
        self._socket = _bind(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} failed to listen on {self.where}")
            time.sleep(0.01)
        return self.port

    def _serve(self) -> None:
        self._server.run(sockets=[self._socket] if self._socket is not None else None)

    def stop(self, timeout: float) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=timeout)


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port``, as uvicorn binds one (``SO_REUSEADDR``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
