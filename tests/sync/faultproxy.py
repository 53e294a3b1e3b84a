"""A small TCP proxy for fault tests: it stands between the sync and the test's Dovecot (plain
IMAP) and misbehaves on cue. Line-oriented on purpose: IMAP commands and status responses are
lines, so a rule matches a whole line (literals pass through as lines too).

* `rewrite`: (pattern, replacement) applied to every line the server sends (another server's
  dialect, e.g. `* SEARCH (MODSEQ 1)` for an empty result);
* `cut_when`: a pattern on the lines the client sends; a match closes both sides before the line
  reaches the server (a crash on that command, a cut during LOGIN);
* `stall_when`: a pattern on client lines; after a match the server's answer is held back and
  trickled (`trickle` bytes every `trickle_every` seconds) or held forever (`trickle` 0).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Rules:
    rewrite: list[tuple[bytes, bytes]] = field(default_factory=list)
    cut_when: bytes | Callable[[bytes], bool] | None = None
    cut_times: int = 1_000_000  # how many connections to cut before letting the line through
    stall_when: bytes | None = None
    trickle: int = 0
    trickle_every: float = 1.0
    cut_at_byte: int | None = None  # cut the next connection after this many server bytes


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rules = Rules()
        self.connections = 0
        self.cuts = 0
        self.client_lines: list[bytes] = []  # what the client sent (commands and literals)
        # When a line matching `stall_when` first arrived (time.monotonic()): a test times what
        # follows from there, not from before a connection and login a busy machine may slow.
        self.stalled_at: float | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="faultproxy").start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for sock in (client, server):  # line by line: without it, Nagle meets delayed ACKs
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
            state = {"stalled": False}
            threading.Thread(target=self._pump_client, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._pump_server, args=(server, client, state), daemon=True).start()

    @staticmethod
    def _matches(rule: bytes | Callable[[bytes], bool] | None, line: bytes) -> bool:
        if rule is None:
            return False
        if callable(rule):
            return rule(line)
        return re.search(rule, line) is not None

    def _cut(self, a: socket.socket, b: socket.socket) -> None:
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _pump_client(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        reader = client.makefile("rb")
        try:
            for line in reader:
                rules = self.rules
                self.client_lines.append(line)
                if self._matches(rules.cut_when, line) and self.cuts < rules.cut_times:
                    self.cuts += 1
                    self._cut(client, server)
                    return
                if rules.stall_when is not None and re.search(rules.stall_when, line):
                    state["stalled"] = True
                    if self.stalled_at is None:
                        self.stalled_at = time.monotonic()
                server.sendall(line)
        except OSError:
            pass
        self._cut(client, server)

    def _pump_server(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        reader = server.makefile("rb")
        sent = 0
        try:
            for line in reader:
                cut_at = self.rules.cut_at_byte
                if cut_at is not None and sent + len(line) > cut_at:
                    self.rules.cut_at_byte = None  # once
                    self.cuts += 1
                    client.sendall(line[: max(cut_at - sent, 0)])
                    break
                sent += len(line)
                for pattern, replacement in self.rules.rewrite:
                    line = re.sub(pattern, replacement, line)
                if state["stalled"]:
                    self._trickle(client, line)
                else:
                    client.sendall(line)
        except OSError:
            pass
        self._cut(client, server)

    def _trickle(self, client: socket.socket, line: bytes) -> None:
        step = self.rules.trickle
        while line and not self._closed.is_set():
            if step <= 0:
                time.sleep(0.2)
                continue
            time.sleep(self.rules.trickle_every)
            client.sendall(line[:step])
            line = line[step:]
