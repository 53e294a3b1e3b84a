"""Worker processes for the parse pool, each a plain child interpreter talking over its own pipes.

Why not `concurrent.futures.ProcessPoolExecutor`: on a non-fork start method (fork is unsafe in
the threaded syncing process, and a forked worker would count the whole parent in its RSS) it
runs two helper interpreters besides the workers, the forkserver and multiprocessing's resource
tracker, ~27 MiB of a 200 MB budget for the whole process tree; and it pickles a whole batch
into one bytes object before sending it (up to `sync_batch_max_bytes` more on each side). Here a
worker is `python -c ...` with a pipe each way: the batch is pickled straight into the pipe and
read straight out of it, and a worker learns that the syncing process is gone from the end of
its input (or, while busy, from its parent pid), even after a kill -9.

The part of `ProcessPoolExecutor`'s interface that `sync.pipeline.ParsePool` uses is kept:
`submit` returns a `Future`; a worker that dies breaks the pool, failing the call it was running
and every queued one with `BrokenProcessPool` (as does `submit` afterwards); `shutdown`.
"""

from __future__ import annotations

import contextlib
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

# Runs in the child before anything of ours can be imported: the parent's sys.path comes first
# down the pipe (a worktree, PYTHONPATH or an editable install resolve as in the parent). The
# loop lives in its own module so that a worker does not import this one's concurrent.futures
# and multiprocessing.
_BOOT = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "import sync.worker_loop as loop; loop.serve()"
)

_Item = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...]]


class _Worker:
    """One child process and the thread that hands it calls, one at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
        )
        self.pid = self.process.pid
        assert self.process.stdin is not None
        try:
            pickle.dump(sys.path, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
        except OSError:
            pass  # died at once: the first call on it breaks the pool

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
        """(True, result) or (False, the exception the call raised); raises (OSError, EOFError,
        an unpickling error...) when the worker is gone."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        pickle.dump((fn, args), stdin, protocol=pickle.HIGHEST_PROTOCOL)
        stdin.flush()
        ok, value = pickle.load(stdout)
        return bool(ok), value

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()

    def join(self, timeout: float | None = None) -> None:
        self.process.wait(timeout)

    def close(self) -> None:
        """End of input: the worker finishes its loop and exits."""
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class WorkerPool:
    """`max_workers` child processes, started at once; calls run in submission order."""

    def __init__(self, max_workers: int) -> None:
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._broken = False
        self._shut = False
        # pid -> worker, as ProcessPoolExecutor's `_processes` (tests kill workers through it).
        self._processes: dict[int, _Worker] = {}
        self._threads: list[threading.Thread] = []
        for _ in range(max_workers):
            worker = _Worker()
            self._processes[worker.pid] = worker
            # Daemon: a pool never shut down must not keep the interpreter from exiting (its
            # workers then see their input end and exit too).
            thread = threading.Thread(target=self._run, args=(worker,), name="parse-worker", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        with self._lock:
            if self._broken:
                raise BrokenProcessPool("a worker process died")
            if self._shut:
                raise RuntimeError("cannot submit after shutdown")
            future: Future[Any] = Future()
            self._queue.put((future, fn, args))
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut = True
        if cancel_futures:
            self._drain(None)
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _run(self, worker: _Worker) -> None:
        try:
            while (item := self._queue.get()) is not None:
                future, fn, args = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    ok, value = worker.call(fn, args)
                except BaseException:  # the worker is gone, or the stream between us is broken
                    self._break(future)
                    return
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        finally:
            worker.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.join(timeout=10)

    def _break(self, running: Future[Any]) -> None:
        """A worker died: this call, every queued one and every later submit fail, the other
        workers are stopped (ProcessPoolExecutor's behaviour, which ParsePool recovers from)."""
        error = BrokenProcessPool("a parse worker process died")
        with self._lock:
            self._broken = True
        running.set_exception(error)
        self._drain(error)
        for worker in self._processes.values():
            worker.kill()
        for _ in self._threads:
            self._queue.put(None)

    def _drain(self, error: BaseException | None) -> None:
        """Take every queued call off the queue: failed with `error`, or cancelled."""
        kept = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                kept += 1
                continue
            future = item[0]
            if error is None:
                future.cancel()
            elif future.set_running_or_notify_cancel():
                future.set_exception(error)
        for _ in range(kept):
            self._queue.put(None)
