"""A training stage's sessions (sessions.jsonl): where each one started and ended, in steps and tokens."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import platform
from ..files import atomic_write_text
from ..layout import CHECKPOINTS, SESSIONS_FILE, STAGE_METRICS, STATE_FILE, STEP_PREFIX, step_dir

if TYPE_CHECKING:
    from .run import RunDir


def _last_step(metrics_file: Path) -> int:
    """The highest step a metrics.jsonl records, -1 when there is none."""
    last = -1
    with contextlib.suppress(OSError):
        for line in metrics_file.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                last = max(last, int(json.loads(line).get("step", -1)))
    return last


_STEP_DIR = re.compile(rf"^{STEP_PREFIX}(\d+)$")  # read here without importing torch (checkpoint does)


def newest_step(checkpoints: Path) -> int | None:
    """The highest step of a committed checkpoint (a step_N folder with its state.json) under `checkpoints`."""
    steps = [int(m.group(1)) for p in (checkpoints.iterdir() if checkpoints.is_dir() else [])
             if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(steps, default=None)


def read_sessions(stage_dir: Path) -> list[dict[str, Any]]:
    """The sessions a stage folder records, oldest first: each start line merged with its end line."""
    merged: dict[int, dict[str, Any]] = {}
    with contextlib.suppress(OSError):
        for line in (stage_dir / SESSIONS_FILE).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                record = json.loads(line)
                merged.setdefault(int(record["session"]), {}).update(record)
    return [merged[k] for k in sorted(merged)]


def _tokens_at(metrics_file: Path, step: int) -> int | None:
    """The tokens a metrics.jsonl records at the last train record up to `step`."""
    tokens = None
    with contextlib.suppress(OSError):
        for line in metrics_file.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
                r = json.loads(line)
                if r.get("kind") == "train" and int(r["step"]) <= step and r.get("tokens") is not None:
                    tokens = int(r["tokens"])
    return tokens


def _append_session(folder: Path, record: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    old = (folder / SESSIONS_FILE).read_text(encoding="utf-8") if (folder / SESSIONS_FILE).is_file() else ""
    atomic_write_text(folder / SESSIONS_FILE, old + json.dumps(record, ensure_ascii=False) + "\n")


def begin_session(run: RunDir, stage: str) -> dict[str, Any]:
    """Record (and print) where this session of `stage` starts: its counter, step and tokens, and from where."""
    folder = run.root / stage
    ckpts = folder / CHECKPOINTS
    step = newest_step(ckpts) or 0
    newest = ckpts / step_dir(step)
    source = str(Path(os.readlink(newest)).parent.parent.parent) if newest.is_symlink() else "this run directory"
    sessions = read_sessions(folder)
    record = {"session": (int(sessions[-1]["session"]) + 1) if sessions else 1, "start_step": step,
              "start_tokens": _tokens_at(folder / STAGE_METRICS, step) or 0, "source": source if step else "",
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "platform": platform.detect().name}
    if not run.read_only:
        _append_session(folder, record)
    where = f"the checkpoint of step {step} in {source}" if step else "step 0 (no checkpoint yet)"
    print(f"{stage}: session {record['session']} starts from {where}")
    return record


def end_session(run: RunDir, stage: str, session: dict[str, Any], step: int, status: str) -> None:
    """Record where this session of `stage` ended (step, tokens, why)."""
    if run.read_only:
        return
    folder = run.root / stage
    _append_session(folder, {"session": session["session"], "end_step": step,
                             "end_tokens": _tokens_at(folder / STAGE_METRICS, step), "status": status,
                             "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
