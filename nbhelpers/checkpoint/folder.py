"""The checkpoint folder format: step_NNNNNNNN/ names, listing, the newest one, and state.json sealed by its CRC-32.

A checkpoint is committed when its folder holds state.json (written last); `verify` says whether it is whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import Any

from ..layout import STATE_FILE as STATE_FILE
from ..layout import STEP_PREFIX as PREFIX
from ..layout import step_dir
from .errors import CheckpointIncomplete

_NAME = re.compile(rf"^{PREFIX}(\d+)$")
FORMAT = 3  # 1 (unnumbered): pickled .pt parts, no file list; 2: state.json without its own CRC (still read)
STATE_CRC = "state_crc32"  # state.json's key holding the CRC-32 of the rest of state.json
ASIDE = "incomplete-"  # prefix of checkpoints set aside by load_latest: kept for inspection, never loaded


def checkpoint_dir(root: str | os.PathLike, step: int) -> Path:
    """Directory of the checkpoint after `step` optimizer steps."""
    return Path(root) / step_dir(step)


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Committed checkpoints under `root` (those with a state.json), oldest first; `verify` says which are whole."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def _step_dirs(root: Path) -> list[Path]:
    """Every step_* directory under `root`, committed or not (a copy may have lost its state.json), oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(root: str | os.PathLike) -> Path | None:
    """The newest committed checkpoint under `root`, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def clean_incomplete(root: str | os.PathLike) -> list[Path]:
    """Remove checkpoints a killed process left half-written or half-deleted; return what was removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".trash-")) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed



def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """state.json of a checkpoint; CheckpointIncomplete when it is missing or not a JSON object."""
    file = Path(path) / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} is missing") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} is not valid JSON ({err})") from None
    if not isinstance(state, dict):
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} is not a JSON object")
    return state


def state_crc(state: dict[str, Any]) -> str:
    """CRC-32 of state.json's content other than its seal, over a canonical JSON form (key order, tuples, int keys)."""
    body = {k: v for k, v in state.items() if k != STATE_CRC}
    # through JSON once: what the CRC covers is what state.json holds when it is read back
    canonical = json.dumps(json.loads(json.dumps(body, allow_nan=True)), sort_keys=True, ensure_ascii=False,
                           allow_nan=True)
    return f"{zlib.crc32(canonical.encode('utf-8')):08x}"


def seal_state(state: dict[str, Any]) -> dict[str, Any]:
    """`state` with its `state_crc32` (what `verify` checks, so a changed byte of state.json is seen)."""
    body = {k: v for k, v in state.items() if k != STATE_CRC}
    return {**body, STATE_CRC: state_crc(body)}


def _check_state(path: Path, state: dict[str, Any]) -> None:
    """state.json's own CRC and its step against the folder's name; CheckpointIncomplete names what differs."""
    sealed = state.get(STATE_CRC)
    if sealed is None and int(state.get("format") or 0) >= 3:
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} has no {STATE_CRC} (format {state.get('format')} "
                                   "records one): it was rewritten by hand or by another tool")
    if sealed is not None and sealed != state_crc(state):
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} is corrupt: its content differs from the CRC-32 "
                                   "recorded when it was saved (a damaged copy, or a hand edit)")
    named = _NAME.match(path.name)
    if named and state.get("step") != int(named.group(1)):
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} says step {state.get('step')!r} but the folder "
                                   f"is {path.name} (step {int(named.group(1))}): the two must agree")

