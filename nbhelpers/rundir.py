"""The run directory: where each stage reads the previous stage's artifacts and writes its own.

Also where a run directory is when RUN_DIR is empty (the platform's default) and, on Kaggle, how the
earlier notebooks' outputs (attached as inputs, read-only) join this version's run directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import platform
from .config import RunConfig
from .files import atomic_write_text, read_json

# Stage name -> (notebook, config sections its output depends on, files that must exist when done).
STAGES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "tokenizer": ("01_tokenizer", ("tokenizer", "corpus"), ("tokenizer/tokenizer.json", "tokenizer/spm.model")),
    "corpus": ("02_corpus", ("tokenizer", "corpus", "model"), ("corpus/manifest.json",)),
    "pretrain": ("03_pretrain", ("tokenizer", "corpus", "model", "train"), ("pretrain/final/config.json",)),
    "sft": ("04_instruction_tuning", ("tokenizer", "corpus", "model", "train", "sft"), ("sft/final/config.json",)),
    "chat": ("05_chat", ("tokenizer", "corpus", "model", "train", "sft"), ()),
    "eval": ("06_eval", ("tokenizer", "corpus", "model", "train", "sft", "eval"), ("eval/results.json",)),
}


class StageMissing(RuntimeError):
    """A stage's input is absent: the message names the notebook to run first."""


# ---------------------------------------------------------------- where the run directory is


def default_run_dir(profile: str, plat: platform.Platform | None = None) -> Path:
    """The run directory for RUN_DIR = "": Kaggle's working dir, Drive (when mounted) or /content on Colab, runs/ locally."""
    plat = plat or platform.detect()
    if plat.name == "colab" and not platform.drive_mounted(plat):
        return plat.path(platform.COLAB_CONTENT) / "runs" / profile
    return plat.runs_root / profile


def resolve_run_dir(run_dir: str | os.PathLike, profile: str, plat: platform.Platform | None = None) -> Path:
    """RUN_DIR as given, or the platform default for ""; on Colab a path on Drive mounts Drive first."""
    plat = plat or platform.detect()
    if not str(run_dir):
        return default_run_dir(profile, plat)
    path = Path(run_dir).expanduser()
    drive = platform.COLAB_DRIVE
    on_drive = plat.name == "colab" and path.is_absolute() and drive in (path, *path.parents)
    if on_drive and not platform.drive_mounted(plat):
        platform.mount_drive(plat)  # asks for permission once per runtime
    return path


# ---------------------------------------------------------------- chaining Kaggle notebooks


def kaggle_input_runs(profile: str, plat: platform.Platform | None = None) -> list[Path]:
    """Run directories of `profile` that earlier notebooks left in their outputs (/kaggle/input/**/runs/PROFILE)."""
    plat = plat or platform.detect()
    inputs = plat.inputs
    if inputs is None or not inputs.is_dir():
        return []
    found = set()
    for depth in ("*", "*/*", "*/*/*", "*/*/*/*"):  # kernel outputs are mounted a few levels down
        found.update(p.parent for p in inputs.glob(f"{depth}/runs/{profile}/metrics.json"))
    return sorted(found)


def link_inputs(run_root: Path, profile: str, plat: platform.Platform | None = None) -> list[str]:
    """Link the stage folders of earlier notebooks' outputs into `run_root` and merge their metrics entries.

    Symlinks, not copies: a 776M model's checkpoints would otherwise count twice against the 20 GB
    output limit. Returns the stage names it linked. Stages already present are left alone.
    """
    linked: list[str] = []
    metrics_path = run_root / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    for source in kaggle_input_runs(profile, plat):
        theirs = read_json(source / "metrics.json")
        for stage, (_, _, files) in STAGES.items():
            if stage in metrics or stage not in theirs:
                continue
            folders = {Path(f).parts[0] for f in files}
            if not folders or not all((source / f).exists() for f in files):
                continue
            for folder in folders:
                target = run_root / folder
                if not target.exists() and not target.is_symlink():
                    target.symlink_to(source / folder, target_is_directory=True)
            metrics[stage] = theirs[stage]
            linked.append(stage)
    if linked:
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    return linked


# ---------------------------------------------------------------- the run directory


@dataclass(frozen=True)
class RunDir:
    """Paths and bookkeeping of one run directory."""

    root: Path
    config: RunConfig

    @classmethod
    def open(cls, root: str | os.PathLike, config: RunConfig) -> RunDir:
        """Create the directory if needed and record the resolved configuration."""
        plat = platform.detect()
        root = resolve_run_dir(root, config.profile, plat)  # "": Kaggle working dir, Drive, /content, runs/
        run = cls(root.resolve(), config)
        run.root.mkdir(parents=True, exist_ok=True)
        if plat.name == "kaggle":
            link_inputs(run.root, config.profile, plat)  # earlier notebooks' outputs (kernel_sources)
        atomic_write_text(run.root / "config.json", json.dumps(config.to_dict(), indent=2, ensure_ascii=False))
        return run

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    def metrics(self) -> dict[str, Any]:
        """All stages' headline figures so far."""
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def record(self, stage: str, figures: dict[str, Any]) -> dict[str, Any]:
        """Store a stage's headline figures in metrics.json and mark the stage complete."""
        if stage not in STAGES:
            raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
        data = self.metrics()
        sections = STAGES[stage][1]
        data[stage] = {**figures, "config_fingerprint": self.config.fingerprint(*sections)}
        atomic_write_text(self.metrics_path, json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return data[stage]

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
        from . import provenance  # here: it reads tokenizers, which the runner process never needs

        provenance.check(self, stage)
