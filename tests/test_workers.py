"""The corpus build's process pool: results in order, errors raised where asked, a dead worker named."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

from nbhelpers.corpus.workers import WorkerError, WorkerPool

CTX = multiprocessing.get_context("fork")


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
