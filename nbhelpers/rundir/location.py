"""Where the run directory is: RUN_DIR as given, or the platform's default (Kaggle's working dir, Drive on Colab, runs/)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .. import platform
from .stages import RunDirError

_drive_asked = False  # Colab asks for Drive once per process: the setup cell, or the first RunDir.open


def default_run_dir(profile: str, plat: platform.Platform | None = None) -> Path:
    """The run directory for RUN_DIR = "": Kaggle's working dir, Google Drive on Colab, runs/ locally."""
    return (plat or platform.detect()).runs_root / profile


def _on_drive(path: Path, plat: platform.Platform) -> bool:
    drives = {platform.COLAB_DRIVE, plat.path(platform.COLAB_DRIVE)}
    return path.is_absolute() and any(d in (path, *path.parents) for d in drives)


def resolve_run_dir(run_dir: str | os.PathLike, profile: str, plat: platform.Platform | None = None) -> Path:
    """RUN_DIR as given, or the platform default for ""; on Colab a run dir on Drive needs Drive mounted.

    Colab's default is on Drive because each notebook opened from its badge gets a runtime of its own
    and only Drive is shared between them: without Drive the error says what to do instead.
    """
    global _drive_asked
    plat = plat or platform.detect()
    path = default_run_dir(profile, plat) if not str(run_dir) else Path(run_dir).expanduser()
    if plat.name == "colab" and _on_drive(path, plat) and not platform.drive_mounted(plat):
        if not _drive_asked:
            _drive_asked = True
            platform.mount_drive(plat)
        if not platform.drive_mounted(plat):
            raise RunDirError(f"RUN_DIR {path} is on Google Drive, which is not mounted. {platform.DRIVE_WHY} "
                              + platform.drive_help(profile))
    return path


def _prepare(root: Path) -> bool:
    """Create `root` when missing; True when it is writable. One clear RunDirError for what cannot work."""
    if root.exists() and not root.is_dir():
        raise RunDirError(f"RUN_DIR {root} is a file, not a folder: choose another RUN_DIR or move the file away")
    blocker = next((p for p in root.parents if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        raise RunDirError(f"RUN_DIR {root} lies under {blocker}, which is a file: no folder can be made there; "
                          "choose another RUN_DIR")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = "read-only file system" if err.errno == errno.EROFS else (err.strerror or str(err))
        raise RunDirError(f"RUN_DIR {root} cannot be created ({why} at {err.filename or blocker}): choose a "
                          "writable RUN_DIR") from None
    return os.access(root, os.W_OK)  # False on a read-only mount, also for root
