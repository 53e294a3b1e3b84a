"""The app served by a real uvicorn on a free loopback port, for tests that need real HTTP (the
event stream, the browser)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from inbox_api.app import create_app


@contextmanager
def served_app() -> Iterator[str]:
    """Yield the base URL; the server stops (within a second for open streams) on exit.

    The listening socket is bound here and handed to uvicorn: a port found free and bound again
    later can be taken meanwhile by another xdist worker."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    # Generous: a start-up limit only catches a server that never starts, on a busy machine too.
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
