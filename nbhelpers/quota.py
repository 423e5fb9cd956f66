"""The output quota: Kaggle keeps at most 20 GB of /kaggle/working, Drive's free tier holds 15 GB in all.

Checked before each checkpoint save (`checkpoint.save` asks `output_quota`), so a run learns it will pass
the limit before it does, and how many checkpoints fit. Symlinked inputs cost nothing here: Kaggle's
inputs linked into the working directory are not written again.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import platform as platforms  # `platform` is a parameter name here
from .layout import STATE_FILE, STEP_PREFIX
from .platform import KAGGLE_OUTPUT_LIMIT_BYTES, Platform

# Bytes per parameter of a checkpoint when none exists yet to measure: fp32 weights plus AdamW's two
# fp32 moments (adamw8bit keeps two 1-byte moments instead).
CHECKPOINT_BYTES_PER_PARAM = {"adamw": 12, "adamw8bit": 6}


class OutputQuotaWarning(UserWarning):
    """The next save would take the platform's output folder past its quota."""


def dir_bytes(path: str | os.PathLike) -> int:
    """Bytes of the regular files under `path`, not following symlinks (linked inputs cost nothing)."""
    total = 0
    stack = [Path(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:  # removed while we walked (a pruned checkpoint)
                continue
    return total


def estimate_checkpoint_bytes(n_params: int, optimizer: str = "adamw") -> int:
    """Bytes of one checkpoint before any exists: weights and optimizer moments."""
    if optimizer not in CHECKPOINT_BYTES_PER_PARAM:
        raise ValueError(f"optimizer: expected {' | '.join(CHECKPOINT_BYTES_PER_PARAM)}, got {optimizer!r}")
    return n_params * CHECKPOINT_BYTES_PER_PARAM[optimizer]


def estimate_save_bytes(root: str | os.PathLike, model: Any = None, optimizer: str = "adamw") -> int:
    """Bytes the next checkpoint under `root` will take: the newest one's size, or an estimate from the model."""
    complete = sorted(p for p in Path(root).glob(f"{STEP_PREFIX}*") if (p / STATE_FILE).is_file()) if Path(root).is_dir() else []
    if complete:
        return dir_bytes(complete[-1])
    if model is None:
        return 0
    return estimate_checkpoint_bytes(sum(p.numel() for p in model.parameters()), optimizer)


def max_keep_last(checkpoint_bytes: int, other_bytes: int, limit_bytes: int = KAGGLE_OUTPUT_LIMIT_BYTES) -> int:
    """The largest train.keep_last that fits: a save writes one more checkpoint before pruning the oldest.

    Peak use is (keep_last + 1) * checkpoint_bytes + other_bytes; 0 means not even one checkpoint fits.
    """
    if checkpoint_bytes <= 0:
        raise ValueError(f"checkpoint_bytes must be positive, got {checkpoint_bytes}")
    room = limit_bytes - other_bytes
    return max(0, room // checkpoint_bytes - 1)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent); None when unknown."""
    path = Path(path).resolve()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


@dataclass(frozen=True)
class QuotaCheck:
    """The output folder's use now and after the next save, against its limit and the disk's free space."""

    root: Path | None  # the limited folder, None when there is no limit here
    used_bytes: int
    next_save_bytes: int
    limit_bytes: int | None
    free_bytes: int | None = None  # free space where the save goes (Drive's free tier holds 15 GB in all)

    @property
    def after_bytes(self) -> int:
        return self.used_bytes + self.next_save_bytes

    @property
    def disk_fits(self) -> bool:
        return self.free_bytes is None or self.next_save_bytes <= self.free_bytes

    @property
    def fits(self) -> bool:
        return self.disk_fits and (self.limit_bytes is None or self.after_bytes <= self.limit_bytes)

    def message(self) -> str:
        gb = 1e9
        if not self.disk_fits:
            return (f"the next save needs about {self.next_save_bytes / gb:.2f} GB but only "
                    f"{self.free_bytes / gb:.2f} GB are free where it goes: lower train.keep_last, raise "
                    "train.save_every, free space (on Colab, Drive's free tier holds 15 GB) or use another RUN_DIR.")
        text = (f"{self.root}: {self.used_bytes / gb:.2f} GB used, the next save adds about "
                f"{self.next_save_bytes / gb:.2f} GB -> {self.after_bytes / gb:.2f} GB")
        if self.limit_bytes is None:
            return text + " (no output limit here)"
        if self.fits:
            return text + f" of the {self.limit_bytes / gb:.0f} GB limit"
        keep = max_keep_last(self.next_save_bytes, 0, self.limit_bytes) if self.next_save_bytes else 0
        return (text + f", over Kaggle's {self.limit_bytes / gb:.0f} GB output limit: Kaggle will not keep the "
                f"output. Lower train.keep_last (at most {keep} checkpoints of this size fit in an otherwise empty "
                "folder, and a save briefly needs one more), raise train.save_every, or delete old runs under "
                f"{self.root}.")


def check_output_quota(out_dir: str | os.PathLike, next_save_bytes: int, platform: Platform | None = None,
                       limit_bytes: int | None = None, quota_root: str | os.PathLike | None = None) -> QuotaCheck:
    """Warn (OutputQuotaWarning) when writing `next_save_bytes` under `out_dir` would pass the output limit.

    On Kaggle the limited folder is /kaggle/working; `limit_bytes` and `quota_root` override the
    platform's (tests, or a user's own budget). Elsewhere, without them, nothing is limited.
    """
    check = output_quota(out_dir, next_save_bytes, platform, limit_bytes, quota_root)
    if not check.fits:
        warnings.warn(check.message(), OutputQuotaWarning, stacklevel=2)
    return check


def output_quota(out_dir: str | os.PathLike, next_save_bytes: int, platform: Platform | None = None,
                 limit_bytes: int | None = None, quota_root: str | os.PathLike | None = None) -> QuotaCheck:
    """The QuotaCheck of check_output_quota, without warnings."""
    if limit_bytes is None or quota_root is None:
        plat = platform or platforms.detect()
        limit_bytes = plat.output_limit_bytes if limit_bytes is None else limit_bytes
        quota_root = plat.output_root if quota_root is None else quota_root
    out = Path(out_dir).resolve()
    free = free_bytes(out)
    if limit_bytes is None or quota_root is None or Path(quota_root).resolve() not in (out, *out.parents):
        check = QuotaCheck(None, 0, int(next_save_bytes), None, free)  # no limit here, or saving outside it
    else:
        quota_root = Path(quota_root)
        check = QuotaCheck(quota_root, dir_bytes(quota_root), int(next_save_bytes), int(limit_bytes), free)
    return check




# ---------------------------------------------------------------- the weekly accelerator quota

# Accelerator hours a free account gets a week (Kaggle's documentation, November 2026: 30 GPU hours, "sometimes
# more depending on demand", and 20 TPU hours). Colab publishes no quota and may end a runtime early: the planner
# counts one 12-hour session a day, the most a free runtime lasts.
WEEKLY_QUOTA_HOURS: dict[tuple[str, str], float] = {("kaggle", "gpu"): 30.0, ("kaggle", "tpu"): 20.0,
                                                    ("colab", "gpu"): 7 * 12.0}


def weekly_quota(platform: str, accelerator: str) -> tuple[float | None, str]:
    """(accelerator hours a week, the quota in words) for a platform, (None, why) where there is none."""
    hours = WEEKLY_QUOTA_HOURS.get((platform, accelerator))
    if hours is None:
        return None, "no weekly quota"
    if platform == "colab":
        return hours, "Colab's free tier (no published quota: one 12-hour session a day)"
    return hours, f"Kaggle's {hours:g} {accelerator.upper()} hours a week"
