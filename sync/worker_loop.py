"""The loop a parse worker process runs (started by `sync.worker_pool`): calls come in on stdin,
results go out on stdout, both pickled, until its input ends. Imports nothing of ours: what a
call needs (the parser) is imported when its function is unpickled."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from typing import IO


def serve() -> None:
    """The worker's loop (run by `_BOOT`): calls in, results out, until its input ends."""
    parent = os.getppid()
    # Results go to a private copy of the pipe; fd 1 becomes stderr, so nothing printed in the
    # worker can corrupt a result or hold the syncing process's own stdout open.
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    calls: IO[bytes] = sys.stdin.buffer
    # Ctrl-C reaches the whole process group: the syncing process decides, and its workers see
    # their input end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(parent,), name="exit-with-parent", daemon=True).start()
    while True:
        try:
            fn, args = pickle.load(calls)
        except EOFError:
            return
        try:
            value = fn(*args)
        except Exception as exc:
            try:
                reply = pickle.dumps((False, exc), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # an exception that does not pickle
                reply = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
            try:
                results.write(reply)
            except BrokenPipeError:
                return
        else:
            try:  # streamed: a batch's results are never held twice
                pickle.dump((True, value), results, protocol=pickle.HIGHEST_PROTOCOL)
            except BrokenPipeError:
                return
        try:
            results.flush()
        except BrokenPipeError:
            return


def _exit_without(parent: int) -> None:
    """A busy worker also stops when the syncing process is gone (reparented), not only when it
    next reads its input."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)
