"""Whether a checkpoint is whole, checked from state.json and the safetensors headers without reading the data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import CheckpointIncomplete, LegacyCheckpoint, UnsafeCheckpoint
from .folder import STATE_FILE, _check_state, read_state
from .parts import _header_span, _read_tensors


def _legacy_message(path: Path) -> str:
    return (f"checkpoint {path} is in a pickled format (.pt files, no file list). It is not loaded: unpickling a "
            "file can run any code. Move it away to start this stage afresh")


def verify(path: str | os.PathLike, *, full: bool = False) -> dict[str, Any]:
    """state.json when the checkpoint is whole; CheckpointIncomplete (or LegacyCheckpoint) naming the part otherwise.

    Without reading data: state.json parses and lists every part, each is there with its recorded size and a
    safetensors header spanning exactly the file. `full=True` also reads every part and checks its CRC-32.
    """
    path = Path(path)
    state = read_state(path)
    files = state.get("files")
    if not isinstance(files, dict):
        if any(path.glob("*.pt")):
            raise LegacyCheckpoint(_legacy_message(path))
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} lists no files")
    _check_state(path, state)
    if "model.safetensors" not in files:
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} lists no model.safetensors")
    for name, entry in files.items():
        file = path / name
        if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".safetensors"):
            raise UnsafeCheckpoint(f"checkpoint {path}: {STATE_FILE} lists {name!r}; nbhelpers reads only "
                                   ".safetensors parts inside the checkpoint and never unpickles a file")
        if not file.is_file():
            raise CheckpointIncomplete(f"checkpoint {path}: {name} is missing")
        size = file.stat().st_size
        if size != entry.get("bytes"):
            raise CheckpointIncomplete(f"checkpoint {path}: {name} has {size:,} bytes but {entry.get('bytes'):,} were "
                                       "written (cut short: an interrupted copy or sync, or a full disk)")
        try:
            span = _header_span(file)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointIncomplete(f"checkpoint {path}: {name} has a broken safetensors header ({err})") from None
        if span != size:
            raise CheckpointIncomplete(f"checkpoint {path}: {name} is {size:,} bytes but its header describes {span:,}")
        if full:
            _read_tensors(file, entry)
    return state

