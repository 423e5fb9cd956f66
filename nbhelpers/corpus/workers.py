"""A small process pool for the corpus build: one pipe per worker and no helper threads in the main process.

Why not `multiprocessing.Pool`: its three handler threads cost the main process about 0.3 CPU seconds in a
2-second build on two cores (the worker handler wakes whenever the result cache empties, which a pipeline that
takes results one by one does all the time), CPU the workers need. Here the main process sends a task down
the pipe of the worker with the fewest tasks outstanding and reads a worker's results, in order, only when it
asks for one of them. Tasks are small (a file range, a queue index); results are the cleaned batches.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from typing import Any

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
PIPE_SAFE_BYTES = 16_384  # a task this small always fits a pipe's buffer (64 KiB on Linux, less elsewhere)
PARENT_POLL_S = 1.0  # how often a child checks that its parent is still there


class WorkerError(RuntimeError):
    """A worker process that ended without answering (killed, out of memory)."""


def bind_to_parent(parent: int, from_main_thread: bool) -> None:
    """In a child process: end as soon as `parent` ends, however it ends (SIGKILL, the runner's SIGTERM, OOM).

    A dying notebook kernel runs no cleanup, and a worker blocked on its pipe would wait forever: with fork,
    each child also holds copies of its siblings' pipe ends, so no end-of-file ever comes. A child of a fork
    server (its parent is the server, which ends when `parent` does) watches `parent` by its pid. On Linux the kernel
    sends SIGKILL at the parent's death (PR_SET_PDEATHSIG; it fires when the forking *thread* ends, so only
    when the pool was started from the main thread); everywhere, a daemon thread checks the parent once a
    second. The check right after catches a parent that died before either was in place.
    """
    if os.getppid() != parent and _alive(parent):  # forkserver / spawn: the fork server is the parent
        if sys.platform.startswith("linux"):  # the server ends when `parent` does; its death ends this one
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        exit_when_gone(parent)
        return
    if from_main_thread and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no prctl in this libc: the thread below still works
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    """True while process `pid` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    return True


def exit_when_gone(pid: int, poll_s: float = PARENT_POLL_S) -> None:
    """End this process soon after process `pid` (not necessarily its parent, e.g. the notebook kernel) has ended."""

    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # it exists, owned by someone else
                pass
            time.sleep(poll_s)

    threading.Thread(target=watch, name="kernel-watch", daemon=True).start()


PRELOAD = ["nbhelpers.corpus.mixing"]  # imported once in the fork server, so each worker starts with it imported


def worker_context() -> Any:
    """The start method of the corpus workers: forkserver where there is one (Linux, macOS), else spawn.

    Not fork: the process that starts the workers has threads (a streamed source's reader, torch's and
    datasets' pools, the producer's trainer listener), and a fork copies their locks in whatever state they are
    at that moment, so a worker could wait forever on a lock no thread will release (Python 3.12+ warns at each
    such fork; 3.14 makes forkserver the default). The fork server is a single-threaded process started once;
    workers fork from it with this package already imported (PRELOAD), and get only picklable arguments. As
    with spawn (and Python 3.14's default), a script read from stdin cannot start them: its __main__ has no
    file for the workers to import; run it from a file, with `python -c`, or in a notebook.
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # read when the server starts (the first pool of this process)
    return ctx


def start_child(ctx: Any, target: Callable[..., None], args: tuple = ()) -> Any:
    """Start `target(*args)` in a daemon process of `ctx` that ends when this process ends (see bind_to_parent)."""
    proc = ctx.Process(target=_bound, args=(os.getpid(), threading.current_thread() is threading.main_thread(),
                                            target, args), daemon=True)
    proc.start()
    return proc


def _bound(parent: int, from_main_thread: bool, target: Callable[..., None], args: tuple) -> None:
    bind_to_parent(parent, from_main_thread)
    target(*args)


def _serve(conn: Any, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """Worker process: run tasks from the pipe and send back (ok, result or exception), in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it stops the workers
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the main process closed the pipe
            return
        if task is None:
            return
        fn, args = task
        try:
            out: tuple[bool, Any] = (True, fn(*args))
        except BaseException as err:  # noqa: BLE001 - handed to the main process, which raises it
            out = (False, err)
        try:
            conn.send(out)
        except Exception as err:  # noqa: BLE001 - an exception or result that does not pickle
            conn.send((False, RuntimeError(f"corpus worker: {type(err).__name__}: {err}")))


class Ticket:
    """A task's answer to come: `get()` waits for it and returns it (or raises the worker's exception)."""

    __slots__ = ("pool", "worker", "done", "value")

    def __init__(self, pool: WorkerPool, worker: int) -> None:
        self.pool, self.worker, self.done, self.value = pool, worker, False, None

    def get(self) -> Any:
        """The task's result; the worker's exception is raised here."""
        if not self.done:
            self.pool._collect(self, None)
        ok, value = self.value
        if not ok:
            raise value
        return value

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for the answer without raising; True when it came."""
        try:
            return self.done or self.pool._collect(self, timeout)
        except WorkerError:
            return False


class WorkerPool:
    """`processes` worker processes started from `ctx`, each running `initializer(*initargs)` first."""

    def __init__(self, ctx: Any, processes: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple = ()) -> None:
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        self.outstanding: list[deque[Ticket]] = []
        for _ in range(processes):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = start_child(ctx, _serve, (theirs, initializer, initargs))
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)
            self.outstanding.append(deque())

    def apply_async(self, fn: Callable[..., Any], args: tuple = ()) -> Ticket:
        """Send `fn(*args)` to the least busy worker (ties: the first); `fn` must be importable by name.

        A small task (a file range) fits the pipe's buffer even while the worker is sending an answer. A large one
        (the documents a stream's reader read) would block there while the worker blocks sending its answer, which
        nobody reads yet: the worker's answers are read first, so that it is reading its pipe again.
        """
        w = min(range(len(self.conns)), key=lambda i: len(self.outstanding[i]))
        data = bytes(ForkingPickler.dumps((fn, args)))
        if len(data) > PIPE_SAFE_BYTES and self.outstanding[w]:
            self._collect(self.outstanding[w][-1], None)
        ticket = Ticket(self, w)
        try:
            self.conns[w].send_bytes(data)
        except OSError:  # the worker is gone (its end of the pipe is closed)
            raise self._gone(w) from None
        self.outstanding[w].append(ticket)
        return ticket

    def _gone(self, w: int) -> WorkerError:
        proc = self.procs[w]
        proc.join(timeout=1)
        return WorkerError(f"corpus worker process {proc.pid} ended without answering (exit code {proc.exitcode}); "
                           "was it killed or out of memory?")

    def _collect(self, ticket: Ticket, timeout: float | None) -> bool:
        """Read the worker's answers, in order, up to `ticket`'s; False when `timeout` passed first."""
        conn, queue = self.conns[ticket.worker], self.outstanding[ticket.worker]
        while not ticket.done:
            if timeout is not None and not conn.poll(timeout):
                return False
            try:
                out = conn.recv()
            except (EOFError, OSError):
                raise self._gone(ticket.worker) from None
            head = queue.popleft()
            head.value, head.done = out, True
        return True

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def terminate(self) -> None:
        """Stop every worker now (work in flight is dropped) and close the pipes."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns, self.outstanding = [], [], []
