"""The corpus build's process pool: results in order, errors raised where asked, a dead worker named."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import itertools
import os
import signal

import pytest

from nbhelpers.corpus.workers import WorkerError, WorkerPool, worker_context

CTX = worker_context()


def _square(x: int) -> int:
    return x * x


def _fail(x: int) -> int:
    raise ValueError(f"bad value {x}")


def _pid(_: int) -> int:
    return os.getpid()


def _die(_: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def test_results_come_back_for_their_own_tasks_on_every_worker():
    with WorkerPool(CTX, 2) as pool:
        tickets = [pool.apply_async(_square, (i,)) for i in range(40)]
        assert [t.get() for t in reversed(tickets)] == [i * i for i in reversed(range(40))]
        pids = {pool.apply_async(_pid, (0,)).get() for _ in range(2)}
        assert len({t.worker for t in tickets}) == 2 and os.getpid() not in pids


def test_a_task_error_is_raised_by_get_and_the_worker_goes_on():
    with WorkerPool(CTX, 1) as pool:
        bad = pool.apply_async(_fail, (7,))
        good = pool.apply_async(_square, (3,))
        assert good.get() == 9
        with pytest.raises(ValueError, match="bad value 7"):
            bad.get()


def test_a_killed_worker_is_an_error_not_a_hang():
    with WorkerPool(CTX, 1) as pool:
        ticket = pool.apply_async(_die, (0,))
        assert ticket.wait(timeout=30) is False
        with pytest.raises(WorkerError, match=r"ended without answering \(exit code -9\)"):
            ticket.get()
        with pytest.raises(WorkerError, match=r"exit code -9"):  # sending it more work says the same
            for _ in range(100):  # the first sends may still fit in the closed pipe's buffer
                pool.apply_async(_square, (1,))


# ---------------------------------------------------------------- a dying parent takes its children along

# A corpus build as 01 and 02 run it (a thread reading a gzipped file in pieces, two workers cleaning), started
# from the main thread or from another thread; it prints its children's pids, then waits to be killed.
BUILD = """
import json, multiprocessing, sys, threading, time
from nbhelpers import config, corpus
cfg = config.load("smoke", ['corpus.mixture={"files:%s": 1, "arithmetic": 1}', "corpus.workers=2"])
def build():
    for i, _ in enumerate(corpus.mixed_documents(cfg.corpus, seed=1)):
        if i == 200:
            print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
            time.sleep(600)
if sys.argv[1] == "thread":
    threading.Thread(target=build, daemon=True).start()
    time.sleep(600)
else:
    build()
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
@pytest.mark.parametrize("started_from", ["main", "thread"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_corpus_processes_end_when_their_parent_is_killed(tmp_path, sig, started_from):
    import json
    import subprocess
    import sys

    from proc_state import survivors

    text = tmp_path / "prose.txt.gz"  # gzipped: read front to back by a thread, its pieces sent to the workers
    text.write_bytes(gzip.compress("\n\n".join(f"{i}番目の文書です。春の朝、駅前の桜が咲き始めました。" * 3
                                                for i in range(3000)).encode("utf-8")))
    proc = subprocess.Popen([sys.executable, "-c", BUILD % text, started_from], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    children = []
    try:
        children = json.loads(proc.stdout.readline())
        assert len(children) == 2  # the two workers
        os.kill(proc.pid, sig)  # the kernel dies: no cleanup runs in it
        proc.wait(timeout=30)
        left = survivors(children)
        assert not left, f"{len(left)} of {len(children)} corpus processes outlived their parent"
    finally:
        proc.kill()
        for pid in children:  # on failure, leave nothing behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_corpus_workers_start_without_forking_this_threaded_process(monkeypatch):
    """A fork copies other threads' locks mid-use (Python 3.12+ warns; it can deadlock): the workers come from a
    fork server, with only picklable arguments, and clean what one process cleans."""
    import threading

    from nbhelpers import config, corpus

    def no_fork() -> int:
        raise AssertionError("os.fork() in a process with threads")

    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()  # a reader thread, say
    cfg = config.load("smoke", ['corpus.mixture={"bundled_prose": 1, "arithmetic": 1}']).corpus
    one = list(itertools.islice(corpus.mixed_documents(dataclasses.replace(cfg, workers=1), seed=1), 300))
    monkeypatch.setattr(os, "fork", no_fork)
    two = list(itertools.islice(corpus.mixed_documents(dataclasses.replace(cfg, workers=2), seed=1), 300))
    stop.set()
    assert two == one
    assert CTX.get_start_method() in ("forkserver", "spawn")
