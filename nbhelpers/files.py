"""Atomic file writes and JSON reads: a reader sees the old content or the new, never half of either.

This module imports nothing else of nbhelpers, so every other module (and a notebook cell) can use it.
Files get the permissions any other file of the user gets (0666 less the umask): `tempfile.mkstemp`
alone would leave them 0600, unreadable to a colleague or to another container user sharing the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def current_umask() -> int:
    """The process's umask: Linux shows it in /proc/self/status; elsewhere it is set and put back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # POSIX has no plain getter; another thread could see 022 for this instant
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write that appears at `path`, fsynced, only when the block ends without an error.

    The temporary file sits in the same folder as `.NAME.XXXX.tmp` (a killed writer's leftovers end in .tmp,
    which the corpus folders' cleaning removes); an error deletes it and leaves `path` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # what open() would have given; mkstemp gives 0600
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, fsynced, then renamed into place."""
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a UTF-8 text file atomically (see atomic_write_bytes)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write `text` atomically unless the file already holds exactly it; True when it wrote.

    A file that is already right is not touched, so a read-only folder that holds it is no obstacle.
    """
    path = Path(path)
    try:
        if path.read_bytes() == text.encode("utf-8"):
            return False
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        pass
    atomic_write_text(path, text)
    return True


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file, naming it when it is broken."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
