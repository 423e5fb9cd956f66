"""Kaggle's inputs: earlier notebooks' outputs found at any depth under /kaggle/input, linked into this run as whole stages."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config as config_mod
from .. import platform
from ..config import RunConfig
from ..files import atomic_write_text, read_json
from ..layout import CONFIG_FILE, RUN_METRICS
from .stages import IDENTITY, STAGES, config_diff

if TYPE_CHECKING:
    from .run import RunDir


INPUT_DEPTH = 6  # /kaggle/input/notebooks/OWNER/SLUG/runs/NAME is 5 levels down; a dataset may add one


def walk_dirs(top: Path, depth: int) -> Iterator[Path]:
    """Folders under `top`, at most `depth` levels down, without following symlinks or entering hidden ones."""
    level = [top]
    for _ in range(depth):
        nxt = []
        for folder in level:
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                        nxt.append(Path(entry.path))
        yield from sorted(nxt)
        level = [p for p in nxt if not is_run(p)]  # a run's own folders hold no other run


def is_run(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / RUN_METRICS).is_file()


def input_runs(name: str, plat: platform.Platform | None = None) -> list[Path]:
    """Run directories called `name` (config.json or metrics.json inside) among Kaggle's inputs, in path order."""
    plat = plat or platform.detect()
    inputs = plat.inputs
    if inputs is None or not inputs.is_dir():
        return []
    return [p for p in walk_dirs(inputs, INPUT_DEPTH) if p.name == name and is_run(p)]


def _same_run(source: Path, config: RunConfig) -> bool:
    """True when the run in `source` was made with this run's tokenizer, corpus and model configuration."""
    try:
        theirs = config_mod.from_dict(read_json(source / CONFIG_FILE))
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return theirs.fingerprint(*IDENTITY) == config.fingerprint(*IDENTITY)


def link_inputs(run: RunDir, plat: platform.Platform | None = None) -> list[str]:
    """Link the stage folders that earlier notebooks finished in their outputs into `run`, and merge their metrics entries.

    Symlinks, not copies: a 776M model's checkpoints would otherwise count twice against the 20 GB
    output limit. Returns the stage names it linked. Stages already present are left alone.
    """
    linked: list[str] = []
    metrics = run.metrics()
    ours = run.config.to_dict()
    for source in input_runs(run.root.name, plat):
        theirs = read_json(source / RUN_METRICS) if (source / RUN_METRICS).is_file() else {}
        their_config = _input_config(source)
        for stage, (notebook, sections, files) in STAGES.items():
            if stage in metrics or stage not in theirs:
                continue
            folders = {Path(f).parts[0] for f in files}
            if not folders or not all((source / f).exists() for f in files):
                continue
            if any((run.root / f).exists() and not (run.root / f).is_symlink() for f in folders):
                continue  # this run has its own (partial) folder: never mix the two
            # linked, a stage of other settings would be redone here, inside the read-only input (EROFS): check first
            differ = config_diff(their_config, ours, sections) if their_config is not None else []
            made_with = theirs[stage].get("config_fingerprint") if isinstance(theirs[stage], dict) else None
            if not differ and made_with and made_with != run.config.fingerprint(*sections):
                differ = [f"its metrics.json records configuration {made_with} for {stage}, this run's is "
                          f"{run.config.fingerprint(*sections)} (settings of another nbhelpers version?)"]
            if differ:
                print(f"{stage}: not linked from {source}: that run of the same name was made with other settings "
                      f"({'; '.join(differ[:6])}{' …' if len(differ) > 6 else ''}). {notebook} makes it here "
                      "instead. To reuse the input's, run with its settings (--set / OVERRIDES); to keep both, "
                      "give this run another name (RUN_DIR)")
                continue
            for folder in folders:
                target = run.root / folder
                if not target.exists() and not target.is_symlink():
                    target.symlink_to(source / folder, target_is_directory=True)
            metrics[stage] = theirs[stage]
            linked.append(stage)
    if linked:
        atomic_write_text(run.metrics_path, json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    return linked


def _input_config(source: Path) -> dict[str, Any] | None:
    """The configuration an input run recorded (config.json), defaults filled in, or None when it has none that reads."""
    try:
        data = read_json(source / CONFIG_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:  # a field added since then counts with its default, as it does for the fingerprints
        return config_mod.from_dict(data).to_dict()
    except (ValueError, TypeError, KeyError):
        return data  # a field since removed or renamed: compared as written
