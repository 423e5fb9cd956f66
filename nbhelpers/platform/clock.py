"""The session's clock: how long ago this session started, read from /proc (the container's or the kernel's start)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _process_age_s(proc: Path, pid: int | str, uptime_s: float) -> float | None:
    """Seconds since process `pid` started, from /proc/PID/stat (field 22, clock ticks after boot); None if unreadable."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class SessionClock:
    """Where the session's start is read from and how long ago that was."""

    elapsed_minutes: float
    source: str  # "PID 1 (the container)", "the kernel's parent process (PID n)", "this process (PID n)", "none"

    def describe(self) -> str:
        """One line: the clock and its reading."""
        if self.source == "none":
            return "no /proc to read: the session counts from now"
        return f"{self.elapsed_minutes:.1f} min since {self.source} started"


def session_clock(root: str | os.PathLike = "/", limit_minutes: float | None = None,
                  pids: tuple[int, int] | None = None) -> SessionClock:
    """The session's start: PID 1's (the container's), unless PID 1 is older than the session limit.

    A Kaggle GPU/CPU session or a Colab runtime is a fresh container, so PID 1 started with it. A TPU VM's PID 1
    may have started long before this session (the VM outlives sessions): a PID 1 older than the limit cannot be
    this session's start, and the budget would always be the minimum. Then the kernel's parent process (the
    notebook server, started with the session) is used when it is younger than the limit, else this process.
    `pids` is (parent, self), defaulting to this process's.
    """
    proc = Path(root) / "proc"
    try:
        uptime_s = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return SessionClock(0.0, "none")
    parent, me = pids or (os.getppid(), os.getpid())
    candidates = [(1, "PID 1 (the container)")]
    if parent not in (0, 1):
        candidates.append((parent, f"the kernel's parent process (PID {parent})"))
    candidates.append((me, f"this process (PID {me})"))
    readings = [(age / 60.0, what) for pid, what in candidates
                if (age := _process_age_s(proc, pid, uptime_s)) is not None]
    if not readings:
        return SessionClock(0.0, "none")
    for minutes, what in readings:  # the oldest start that can still be this session's
        if limit_minutes is None or minutes <= limit_minutes:
            return SessionClock(minutes, what)
    return SessionClock(*readings[-1])  # every one is older than the limit: the youngest


def session_elapsed_minutes(root: str | os.PathLike = "/", limit_minutes: float | None = None) -> float:
    """Minutes since the session started (see `session_clock`)."""
    return session_clock(root, limit_minutes).elapsed_minutes

