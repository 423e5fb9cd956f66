"""A live view of a training run (train.report_to = tensorboard | wandb | trackio) beside metrics.jsonl.

A Kaggle saved version cannot be watched while it runs: a tracker shows the loss as it goes. metrics.jsonl
stays the record; the tracker gets a copy of each record the loop writes (`Tracker.log`). Its package is
installed on demand (pip, into this Python), and its key comes from the platform's secret (Kaggle secrets,
Colab userdata) or the environment: WANDB_API_KEY for wandb (none: wandb logs offline, `wandb sync` later),
HF_TOKEN for trackio when TRACKIO_SPACE_ID names a Space to sync to. A tracker that fails while logging
warns once and stops; training goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import REPORT_TO
from .credentials import platform_secret, scrub
from .layout import CONFIG_FILE

# report_to -> (module imported, pip requirement)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard>=2.14"), "wandb": ("wandb", "wandb>=0.17"),
            "trackio": ("trackio", "trackio>=0.2")}
TENSORBOARD_DIR = "tensorboard"  # under the stage folder: pretrain/tensorboard, sft/tensorboard


class TrackerError(RuntimeError):
    """A tracker that cannot start: the message says which package or key is missing and what to do."""


def ensure_package(name: str, install: bool = True) -> None:
    """Import-check the tracker's package; install it with pip when missing (and `install`), else say how."""
    module, requirement = PACKAGES[name]
    if importlib.util.find_spec(module) is not None:
        return
    how = f"pip install '{requirement}' (or pip install 'nbhelpers[{name}]'), or set train.report_to=none"
    if not install:
        raise TrackerError(f"train.report_to={name} needs the {module} package, which is not installed: {how}")
    print(f"train.report_to={name}: installing {requirement} ...", flush=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], capture_output=True, text=True)
    importlib.invalidate_caches()
    if proc.returncode != 0 or importlib.util.find_spec(module) is None:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-4:])
        raise TrackerError(f"train.report_to={name}: installing {requirement} failed (pip exit {proc.returncode}): "
                           f"{tail}\nInstall it yourself ({how}); metrics.jsonl is written either way")


def _scalars(record: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """The record's step and its finite numbers under `kind/field` (eval: `eval/<split>/field`)."""
    kind = record.get("kind", "record")
    prefix = f"eval/{record.get('split', 'val')}" if kind == "eval" else kind
    values = {f"{prefix}/{k}": float(v) for k, v in record.items()
              if k not in ("step", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)}
    return int(record.get("step", 0)), values


class Tracker:
    """The base: `log` takes one metrics.jsonl record; `close` ends the run. Subclasses draw it somewhere."""

    name = "none"

    def __init__(self) -> None:
        self.failed = False

    def log(self, record: Mapping[str, Any]) -> None:
        """Send one record; a failure warns once, disables the tracker and never stops training."""
        if self.failed:
            return
        try:
            self._log(record)
        except Exception as err:  # a tracker is a view: losing it must not lose the run
            self.failed = True
            warnings.warn(f"train.report_to={self.name} stopped logging ({type(err).__name__}: {scrub(str(err))}); "
                          "metrics.jsonl is still written", stacklevel=2)

    def _log(self, record: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and end the tracker's run."""


class TensorBoardTracker(Tracker):
    """Scalars and the samples/events as text, in `out_dir/tensorboard` (tensorboard --logdir there)."""

    name = "tensorboard"

    def __init__(self, out_dir: Path, config: Mapping[str, Any]) -> None:
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = out_dir / TENSORBOARD_DIR
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=1, ensure_ascii=False, default=str)
                             + "\n```", 0)

    def _log(self, record: Mapping[str, Any]) -> None:
        step, values = _scalars(record)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        if record.get("kind") == "samples":
            text = "\n\n".join(f"**{s.get('prompt', '')}** {s.get('text', '')}" for s in record.get("samples", []))
            self.writer.add_text("samples", text, step)
        elif record.get("kind") == "event":
            self.writer.add_text("events", f"{record.get('event')}: {record.get('message', '')}", step)
        self.writer.flush()  # a saved version may be killed at any time: what was logged is on disk

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """Weights & Biases: online with WANDB_API_KEY from the platform's secret, else offline under out_dir."""

    name = "wandb"

    def __init__(self, out_dir: Path, config: Mapping[str, Any], run_name: str, project: str) -> None:
        super().__init__()
        key = platform_secret("WANDB_API_KEY")
        if key is not None:
            os.environ["WANDB_API_KEY"] = key.reveal()  # read by wandb in this process; never written to a file
        mode = os.environ.get("WANDB_MODE") or ("online" if key is not None else "offline")
        if mode == "offline":
            print(f"train.report_to=wandb: no WANDB_API_KEY secret, logging offline in {out_dir / 'wandb'} "
                  "(upload later with `wandb sync` there)", flush=True)
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=project, name=run_name, dir=str(out_dir), config=dict(config), mode=mode,
                              resume="allow")

    def _log(self, record: Mapping[str, Any]) -> None:
        step, values = _scalars(record)
        if values:
            self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker(Tracker):
    """trackio: local-first (its own database); synced to a Space when TRACKIO_SPACE_ID is set (with HF_TOKEN)."""

    name = "trackio"

    def __init__(self, config: Mapping[str, Any], run_name: str, project: str) -> None:
        super().__init__()
        space = os.environ.get("TRACKIO_SPACE_ID") or None
        if space:
            token = platform_secret("HF_TOKEN")
            if token is None:
                raise TrackerError("train.report_to=trackio with TRACKIO_SPACE_ID needs HF_TOKEN (a platform secret "
                                   "or the environment); unset TRACKIO_SPACE_ID to log locally")
            os.environ["HF_TOKEN"] = token.reveal()
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=project, name=run_name, config=dict(config), space_id=space,
                                resume="allow")

    def _log(self, record: Mapping[str, Any]) -> None:
        step, values = _scalars(record)
        if values:
            self.trackio.log(values, step=step)

    def close(self) -> None:
        self.trackio.finish()


def _run_config(out_dir: Path, fallback: Mapping[str, Any]) -> dict[str, Any]:
    path = out_dir.parent / CONFIG_FILE  # a stage folder's parent is the run directory
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else dict(fallback)
    except (OSError, json.JSONDecodeError):
        return dict(fallback)


def open_tracker(report_to: str, out_dir: str | os.PathLike, config: Mapping[str, Any] | None = None,
                 install: bool = True) -> Tracker | None:
    """The tracker `report_to` names for a stage writing to `out_dir`, or None for `none`."""
    if report_to not in REPORT_TO:
        raise TrackerError(f"train.report_to: expected one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to == "none":
        return None
    ensure_package(report_to, install)
    out_dir = Path(out_dir)
    cfg = _run_config(out_dir, config or {})
    run_name = f"{out_dir.parent.name}-{out_dir.name}"  # e.g. smoke-pretrain
    project = os.environ.get("NBHELPERS_TRACKER_PROJECT", "nbhelpers")
    if report_to == "tensorboard":
        return TensorBoardTracker(out_dir, cfg)
    if report_to == "wandb":
        return WandbTracker(out_dir, cfg, run_name, project)
    return TrackioTracker(cfg, run_name, project)
