"""What each platform is: its absolute paths, session and output limits, and the Platform record detection returns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT_ENV = "NBHELPERS_PLATFORM_ROOT"  # the rehearsal root: the platforms' absolute paths are read under it

# Session limits in minutes; None = no limit (a local machine).
SESSION_LIMIT_MINUTES: dict[tuple[str, str], float | None] = {
    ("kaggle", "tpu"): 9 * 60.0,
    ("kaggle", "gpu"): 12 * 60.0,
    ("kaggle", "cpu"): 12 * 60.0,
    ("colab", "tpu"): 12 * 60.0,
    ("colab", "gpu"): 12 * 60.0,  # the free tier's maximum; Colab may end a runtime earlier
    ("colab", "cpu"): 12 * 60.0,
}
# Left unused at the end of a session: the final save_pretrained, the metrics cell and (on Kaggle)
# copying /kaggle/working into the notebook's output all happen after the loop stops.
SESSION_MARGIN_MINUTES = 30.0
MIN_BUDGET_MINUTES = 5.0  # never hand the loop a budget of 0, which would mean "no budget"

KAGGLE_WORKING = Path("/kaggle/working")  # kept as the version's output (20 GB at most)
KAGGLE_INPUT = Path("/kaggle/input")  # datasets, models and earlier notebooks' outputs, read-only
KAGGLE_TEMP = Path("/kaggle/temp")  # scratch on the same disk, not kept
KAGGLE_OUTPUT_LIMIT_BYTES = 20 * 10**9
COLAB_CONTENT = Path("/content")  # the runtime's local disk, gone with the runtime
COLAB_DRIVE = Path("/content/drive")
COLAB_DRIVE_RUNS = COLAB_DRIVE / "MyDrive" / "nbhelpers" / "runs"
COLAB_SCRATCH = COLAB_CONTENT / "nbhelpers-scratch"
LOCAL_RUNS = Path("runs")

DRIVE_WHY = ("Each Colab notebook opened from its badge runs in a runtime of its own, and a runtime's disk "
             "(/content) is gone when it ends: only Google Drive is shared between the six notebooks and "
             "kept between sessions, so the run directory lives there.")

HEADLESS_ENV = "NBHELPERS_HEADLESS"  # set by `python -m nbhelpers run` for its kernels: no browser, no Drive prompt
DRIVE_FLUSH_MINUTES = 15  # the most a session's end waits for Drive to push its last writes

class PlatformError(RuntimeError):
    """The environment cannot run the notebooks as they are: the message says what to change."""


@dataclass(frozen=True)
class Platform:
    """The platform this process runs on and its limits."""

    name: str  # kaggle | colab | local
    accelerator: str  # tpu | gpu | cpu
    reason: str  # what gave it away
    root: Path = Path("/")  # the filesystem root the platform's paths are read under (a rehearsal's DIR)
    run_type: str = ""  # Kaggle: Batch (a saved version) | Interactive (the editor); "" elsewhere
    gpus: int = 0  # NVIDIA GPUs this machine shows (/dev/nvidiaN)

    def path(self, absolute: str | os.PathLike) -> Path:
        """A platform path such as /kaggle/working, read under this platform's root."""
        return Path(self.root) / Path(absolute).relative_to("/")

    @property
    def session_limit_minutes(self) -> float | None:
        """The platform's session limit, None where there is none."""
        return SESSION_LIMIT_MINUTES.get((self.name, self.accelerator))

    @property
    def output_root(self) -> Path | None:
        """The folder whose size the platform limits (Kaggle's working directory), None elsewhere."""
        return self.path(KAGGLE_WORKING) if self.name == "kaggle" else None

    @property
    def output_limit_bytes(self) -> int | None:
        """The size limit of `output_root`, None where there is none."""
        return KAGGLE_OUTPUT_LIMIT_BYTES if self.name == "kaggle" else None

    @property
    def inputs(self) -> Path | None:
        """Kaggle's read-only input folder (earlier outputs, datasets), None elsewhere."""
        return self.path(KAGGLE_INPUT) if self.name == "kaggle" else None

    @property
    def runs_root(self) -> Path:
        """Where run directories live by default: Kaggle's working dir, Drive on Colab, ./runs locally."""
        if self.name == "kaggle":
            return self.path(KAGGLE_WORKING) / "runs"
        if self.name == "colab":
            return self.path(COLAB_DRIVE_RUNS)
        return LOCAL_RUNS

    def summary(self) -> dict[str, Any]:
        """Plain dict for tables."""
        return {"platform": self.name, "accelerator": self.accelerator,
                "session_limit_h": None if self.session_limit_minutes is None else self.session_limit_minutes / 60,
                "output_limit_GB": None if self.output_limit_bytes is None else self.output_limit_bytes / 1e9,
                "reason": self.reason}

