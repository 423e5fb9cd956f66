"""The run directory: where each stage reads the previous stage's artifacts and writes its own."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import platform
from .config import RunConfig

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


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so a reader sees the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """Parse a JSON file, naming it when it is broken."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


@dataclass(frozen=True)
class RunDir:
    """Paths and bookkeeping of one run directory."""

    root: Path
    config: RunConfig

    @classmethod
    def open(cls, root: str | os.PathLike, config: RunConfig) -> RunDir:
        """Create the directory if needed and record the resolved configuration."""
        plat = platform.detect()
        root = platform.resolve_run_dir(root, config.profile, plat)  # "": Kaggle working dir, Drive, /content, runs/
        run = cls(root.resolve(), config)
        run.root.mkdir(parents=True, exist_ok=True)
        if plat.name == "kaggle":
            platform.link_inputs(run.root, config.profile, plat)  # earlier notebooks' outputs (kernel_sources)
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
        """Fail with the notebook to run first when `stage` has not produced its artifacts."""
        notebook, _, files = STAGES[stage]
        missing = [f for f in files if not (self.root / f).exists()]
        if missing or stage not in self.metrics():
            what = ", ".join(missing) if missing else f"the {stage} entry of metrics.json"
            raise StageMissing(f"{self.root}: {what} not found; run notebooks/{notebook} first")
