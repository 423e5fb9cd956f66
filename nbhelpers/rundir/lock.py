"""One run per run directory: run.lock names its holder (pid, host, since) and is taken over once the holder is gone."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..layout import LOCK_FILE as LOCK_FILE
from .stages import RunDirBusy

LOCK_BEAT_S = 60.0  # the holder touches its lock this often
LOCK_STALE_S = 600.0  # a lock of another host untouched this long is a run that is gone (a Colab runtime ended)


def _lock_holder(path: Path) -> dict[str, Any]:
    """What a lock file says about its holder ({} when it is unreadable: a holder still writing it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _stale_because(path: Path, holder: dict[str, Any]) -> str | None:
    """Why a lock's holder is gone, or None while it may still run."""
    try:
        idle = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "it was released"
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return None if _pid_alive(holder["pid"]) else f"process {holder['pid']} on this host has ended"
    if idle > LOCK_STALE_S:
        return f"untouched for {idle / 60:.0f} minutes (its holder touches it every {LOCK_BEAT_S:.0f} s)"
    return None


def _take_lock(path: Path) -> None:
    """Create the lock file exclusively; recover it from a holder that is gone; RunDirBusy otherwise."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _lock_holder(path)
            why = _stale_because(path, holder)
            if why is None:
                raise RunDirBusy(
                    f"{path.parent} is in use by another run (process {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')}, since {holder.get('since', '?')}; lock file {path}): one run per run "
                    "directory. Wait for it to finish, or stop it; if it is gone (its machine ended), delete the lock "
                    "file") from None
            print(f"{path}: taking over the lock of process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                  f"({why})")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        return
    raise RunDirBusy(f"{path}: could not take the run directory's lock (another run keeps taking it)")


@contextlib.contextmanager
def hold(path: Path) -> Iterator[Path]:
    """Take the lock at `path`, touch it every LOCK_BEAT_S while held, and release it if it is still ours."""
    _take_lock(path)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(LOCK_BEAT_S):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name="nbhelpers-run-lock", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        holder = _lock_holder(path)
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():  # still ours
            path.unlink(missing_ok=True)
