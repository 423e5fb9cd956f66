"""Test helper: whether processes still run (read from /proc; a zombie has ended)."""

from __future__ import annotations

import time


def alive(pid: int) -> bool:
    """True while `pid` runs (not ended, not a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def survivors(pids: list[int], within: float = 10.0) -> list[int]:
    """The pids still running after waiting up to `within` seconds for all of them to end."""
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]
