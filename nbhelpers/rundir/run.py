"""The RunDir object: a run directory's stage paths, its metrics.json, config.json and a stage's stop record."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import (
    platform,
    provenance,  # below rundir: it imports RunDir only for annotations
)
from ..config import RunConfig
from ..files import atomic_write_text, read_json
from ..layout import (
    CHECKPOINTS,
    CONFIG_FILE,
    CORPUS,
    EVAL,
    PRETRAIN,
    RUN_METRICS,
    RUN_NOTEBOOKS,
    SFT,
    STEP_PREFIX,
    STOP_FILE,
    TOKENIZER,
)
from . import location
from .config_file import check_config_file, check_profile, write_config
from .inputs import link_inputs
from .location import _prepare, resolve_run_dir
from .lock import LOCK_FILE, hold
from .resume import link_checkpoints
from .stages import STAGES, TRAINING_STAGES, RunDirError, StageMissing, continue_hint
from .xla_cache import carry_xla_cache


@dataclass(frozen=True)
class RunDir:
    """Paths and bookkeeping of one run directory."""

    root: Path
    config: RunConfig
    read_only: bool = False  # opened to read a finished run where nothing can be written (05 works there)

    @classmethod
    def open(cls, root: str | os.PathLike, config: RunConfig) -> RunDir:
        """Create the directory if needed; on Kaggle join the inputs; record the configuration of a new run.

        config.json is written when the run has none; afterwards a stage that completes records the
        configuration it was made with (`record`). So a failed invocation never changes it, a file that is
        already right is never rewritten, and a read-only finished run opens for reading.
        """
        plat = platform.detect()
        path = resolve_run_dir(root, config.profile, plat)  # "": Kaggle working dir, Drive, runs/
        writable = _prepare(path)
        run = cls(path.resolve(), config, read_only=not writable)
        check_profile(run.root, config.profile)
        if run.read_only:
            print(f"{run.root} is read-only: its artifacts are read, nothing is written there")
            return run
        if plat.name == "kaggle":
            link_inputs(run, plat)  # earlier notebooks' outputs (kernel_sources)
            link_checkpoints(run, plat)  # earlier versions of a training notebook stopped by the time budget
            carry_xla_cache(run, plat)  # and the programs they compiled on the TPU
        if not (run.root / CONFIG_FILE).exists():
            write_config(run.root, config)
        else:
            check_config_file(run.root, config)
        return run

    @contextlib.contextmanager
    def lock(self) -> Iterator[Path]:
        """Hold the run directory for this process (one run per run dir): RunDirBusy names the holder otherwise.

        The lock file names its holder's pid and host; it is recovered when the holder is gone (a dead pid on this
        host, or a lock of another host untouched for LOCK_STALE_S: the holder touches it every LOCK_BEAT_S).
        """
        if self.read_only:
            yield self.root / LOCK_FILE
            return
        with hold(self.root / LOCK_FILE) as path:
            yield path

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER

    @property
    def corpus(self) -> Path:
        return self.root / CORPUS

    @property
    def pretrain(self) -> Path:
        return self.root / PRETRAIN

    @property
    def sft(self) -> Path:
        return self.root / SFT

    @property
    def eval(self) -> Path:
        return self.root / EVAL

    @property
    def notebooks(self) -> Path:
        return self.root / RUN_NOTEBOOKS

    @property
    def metrics_path(self) -> Path:
        return self.root / RUN_METRICS

    def metrics(self) -> dict[str, Any]:
        """All stages' headline figures so far."""
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def require_writable(self, stage: str) -> None:
        """Fail before any work when `stage` would have to write into a read-only run directory."""
        if self.read_only:
            notebook = STAGES[stage][0]
            raise RunDirError(f"{notebook} writes {self.root / stage} and metrics.json, but {self.root} is "
                              f"read-only: copy the run to a writable folder (cp -r {self.root} NEW) and set "
                              "RUN_DIR to it (on Kaggle, RUN_DIR = \"\" links a finished run from the inputs into "
                              "/kaggle/working)")

    def record(self, stage: str, figures: dict[str, Any]) -> dict[str, Any]:
        """Store a stage's headline figures in metrics.json, mark the stage complete, record its configuration."""
        if stage not in STAGES:
            raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
        sections = STAGES[stage][1]
        entry = {**figures, "config_fingerprint": self.config.fingerprint(*sections)}
        if self.read_only:
            if STAGES[stage][2]:  # a stage with artifacts cannot have made them here
                self.require_writable(stage)
            print(f"{stage}: figures shown, not recorded ({self.root} is read-only)")
            return entry
        data = self.metrics()
        data[stage] = entry
        atomic_write_text(self.metrics_path, json.dumps(data, indent=2, ensure_ascii=False, default=str))
        write_config(self.root, self.config)  # the configuration the run's newest finished stage was made with
        if stage in TRAINING_STAGES:
            self.clear_stop(stage)
            self.unlink_inputs(stage)
        self._end_session()
        return data[stage]

    def _end_session(self) -> None:
        """After a notebook's last write: on Colab, wait until Drive holds it (it unmounts; a later open remounts)."""
        if platform.flush_drive(self.root):
            location._drive_asked = False

    # ------------------------------------------------------------ a stage stopped by its time budget

    def stop(self, stage: str, step: int, total_steps: int, reason: str = "time budget") -> str:
        """Record that `stage` stopped at `step` of `total_steps` (its checkpoint saved); return what to do next.

        The notebook's cells succeed (papermill exits 0); `python -m nbhelpers run` reads this record and
        exits with EXIT_STOPPED instead of running the later notebooks.
        """
        plat = platform.detect()
        notebook = STAGES[stage][0]
        message = (f"{notebook}: stopped at step {step} of {total_steps} ({reason}; checkpoint saved): "
                   f"{continue_hint(plat)}")
        if not self.read_only:
            self.unlink_inputs(stage)
            atomic_write_text(self.root / stage / STOP_FILE, json.dumps(
                {"stage": stage, "step": step, "total_steps": total_steps, "reason": reason, "message": message},
                indent=1, ensure_ascii=False))
            self._end_session()  # the checkpoint of the session's last minutes, on Drive before the runtime ends
        return message

    def clear_stop(self, stage: str) -> None:
        """Forget an earlier session's stop of `stage` (not in a finished stage linked read-only from an input)."""
        if not (self.root / stage).is_symlink():
            (self.root / stage / STOP_FILE).unlink(missing_ok=True)

    def stopped(self, stage: str) -> dict[str, Any] | None:
        """The stop record of `stage` (see `stop`), or None when it did not stop early."""
        path = self.root / stage / STOP_FILE
        return read_json(path) if path.is_file() else None

    def unlink_inputs(self, stage: str) -> list[str]:
        """Remove links to an input's checkpoints once this run has a newer checkpoint of its own.

        The version's output then holds only what it wrote (whatever Kaggle does with symlinks when it
        saves an output), and the next version links this version's checkpoints instead.
        """
        own = self.root / stage / CHECKPOINTS
        if not own.is_dir() or (self.root / stage).is_symlink():
            return []
        from .. import checkpoint

        mine = [p for p in checkpoint.list_checkpoints(own) if not p.is_symlink()]
        if not mine:
            return []
        removed = []
        for link in sorted(own.iterdir()):
            if link.is_symlink() and (not link.name.startswith(STEP_PREFIX) or link.name < mine[-1].name):
                link.unlink()  # the link only: the input itself is read-only and never touched
                removed.append(link.name)
        return removed

    def is_complete(self, stage: str) -> bool:
        """True when the stage recorded its figures for this configuration and its files exist."""
        notebook, sections, files = STAGES[stage]
        entry = self.metrics().get(stage)
        if not entry or entry.get("config_fingerprint") != self.config.fingerprint(*sections):
            return False
        return all((self.root / f).exists() for f in files)

    def require(self, stage: str) -> None:
        """Fail with the notebook to run first when `stage` has not produced its artifacts, or made them from
        other inputs than the run holds now (provenance.check: tokenizer, corpus settings, model)."""
        notebook, _, files = STAGES[stage]
        missing = [f for f in files if not (self.root / f).exists()]
        if missing or stage not in self.metrics():
            what = ", ".join(missing) if missing else f"the {stage} entry of metrics.json"
            raise StageMissing(f"{self.root}: {what} not found; run notebooks/{notebook} first")
        provenance.check(self, stage)
