"""Where the notebook runs (Kaggle, Colab or a local machine): its paths, its session limit, the setup cell.

The only package (with `rundir`, `quota` and `hub`, which ask it) that knows the platforms' absolute
paths: /kaggle/working, /kaggle/input, /kaggle/temp, /content, /content/drive. Every one of them is
read under `Platform.root`, which is `/` on the real platforms and the folder named by
`NBHELPERS_PLATFORM_ROOT` in a rehearsal: with `NBHELPERS_PLATFORM_ROOT=DIR` and the platform's own
environment variables (Kaggle: KAGGLE_KERNEL_RUN_TYPE=Batch for a saved version, Interactive in the
editor; Colab: COLAB_RELEASE_TAG) a laptop behaves like that platform with its paths under DIR, so a
user can try the whole flow before spending quota and the tests exercise what users get.
Nothing here imports torch or torch_xla.

facts (paths, limits, Platform) < detection (detect) and clock (the session's start) and torch_pair (the
torch / torch_xla check). This module holds what follows from the platform for a run: the profile `auto`
picks, Colab's Drive and the scratch space, the loop's time budget and the setup cell. Each of these calls
`detect()` when no Platform is given, and looks it up here, in `nbhelpers.platform`, so that what callers
(and tests) put in its place is what they all see.

Facts used (Kaggle's and Colab's documentation, November 2026): a Kaggle session runs at most
12 hours on CPU or GPU and 9 hours on TPU; Kaggle keeps at most 20 GB written under /kaggle/working
and nothing of /kaggle/temp; a free Colab runtime lasts at most about 12 hours and may be ended
earlier, and only Google Drive outlives it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..layout import CONFIG_FILE
from .clock import SessionClock as SessionClock
from .clock import session_clock as session_clock
from .clock import session_elapsed_minutes as session_elapsed_minutes
from .detection import detect as detect
from .detection import gpu_count as gpu_count
from .detection import platform_root as platform_root
from .facts import COLAB_CONTENT as COLAB_CONTENT
from .facts import COLAB_DRIVE as COLAB_DRIVE
from .facts import COLAB_DRIVE_RUNS as COLAB_DRIVE_RUNS
from .facts import COLAB_SCRATCH as COLAB_SCRATCH
from .facts import DRIVE_FLUSH_MINUTES as DRIVE_FLUSH_MINUTES
from .facts import DRIVE_WHY as DRIVE_WHY
from .facts import HEADLESS_ENV as HEADLESS_ENV
from .facts import KAGGLE_INPUT as KAGGLE_INPUT
from .facts import KAGGLE_OUTPUT_LIMIT_BYTES as KAGGLE_OUTPUT_LIMIT_BYTES
from .facts import KAGGLE_TEMP as KAGGLE_TEMP
from .facts import KAGGLE_WORKING as KAGGLE_WORKING
from .facts import LOCAL_RUNS as LOCAL_RUNS
from .facts import MIN_BUDGET_MINUTES as MIN_BUDGET_MINUTES
from .facts import ROOT_ENV as ROOT_ENV
from .facts import SESSION_LIMIT_MINUTES as SESSION_LIMIT_MINUTES
from .facts import SESSION_MARGIN_MINUTES as SESSION_MARGIN_MINUTES
from .facts import Platform as Platform
from .facts import PlatformError as PlatformError
from .host import cpu_cores as cpu_cores
from .host import host_memory_bytes as host_memory_bytes
from .torch_pair import _version as _version
from .torch_pair import check_torch_xla as check_torch_xla
from .torch_pair import installed as installed
from .torch_pair import xla_installed as xla_installed

if TYPE_CHECKING:  # a type only: platform sits below config (config's profiles are named after platforms)
    from ..config import TrainConfig

# ---------------------------------------------------------------- the profile for this platform

AUTO_PROFILE = "auto"
PROFILE_NAMES = ("smoke", "colab_t4", "kaggle_t4x2", "kaggle_tpu_v5e8")  # config.PROFILES' names (tested equal)


@dataclass(frozen=True)
class ProfileChoice:
    """The profile a run uses and why: asked for by name, or chosen by `auto` from the platform."""

    profile: str
    reason: str

    def __str__(self) -> str:
        return f"profile: {self.profile} ({self.reason})"


def choose_profile(requested: str = AUTO_PROFILE, platform: Platform | None = None) -> ProfileChoice:
    """`requested` when it names a profile; for `auto`: Kaggle's TPU -> kaggle_tpu_v5e8, Kaggle with two GPUs ->
    kaggle_t4x2, Colab or one CUDA GPU -> colab_t4, otherwise smoke."""
    if requested != AUTO_PROFILE:
        return ProfileChoice(requested, "as asked")
    plat = platform or detect()
    where = f"{plat.name}, {plat.accelerator}" + (f", {plat.gpus} GPUs" if plat.gpus > 1 else "")
    if plat.name == "kaggle" and plat.accelerator == "tpu":
        return ProfileChoice("kaggle_tpu_v5e8", f"auto: Kaggle with a TPU ({plat.reason})")
    if plat.name == "kaggle" and plat.accelerator == "gpu" and plat.gpus >= 2:
        return ProfileChoice("kaggle_t4x2", f"auto: Kaggle with {plat.gpus} GPUs ({plat.reason})")
    if plat.name == "colab":
        warn = "" if plat.accelerator == "gpu" else (
            "; no GPU attached: choose a T4 GPU in Runtime -> Change runtime type, or set PROFILE = \"smoke\"")
        return ProfileChoice("colab_t4", f"auto: Colab ({where}; {plat.reason}){warn}")
    if plat.accelerator == "gpu":
        return ProfileChoice("colab_t4", f"auto: one CUDA GPU ({where}; {plat.reason})")
    return ProfileChoice("smoke", f"auto: no Kaggle TPU, Kaggle GPUs, Colab or CUDA GPU here ({where}; "
                         f"{plat.reason}); the smoke profile runs on this CPU")


def resolve_profile(requested: str = AUTO_PROFILE, platform: Platform | None = None) -> str:
    """The profile name for `requested` (see choose_profile); an automatic choice is printed with its reason."""
    plat = platform or detect()
    choice = choose_profile(requested, plat)
    if requested == AUTO_PROFILE:
        print(choice)
        others = sorted(p for p in PROFILE_NAMES if p != choice.profile and (plat.runs_root / p / CONFIG_FILE).is_file())
        if others and not (plat.runs_root / choice.profile / CONFIG_FILE).is_file():
            # an automatic choice must not start a second run quietly beside the one the user has been making
            print(f"note: {plat.runs_root} holds a run of {', '.join(others)} and none of {choice.profile}; with "
                  f"RUN_DIR = \"\" this starts a new run in {plat.runs_root / choice.profile}. To continue the "
                  f"other, set PROFILE = \"{others[0]}\".")
    return choice.profile


# ---------------------------------------------------------------- Colab's Drive, scratch space


def drive_mounted(platform: Platform | None = None) -> bool:
    """True when Google Drive is mounted at /content/drive (its MyDrive folder is visible)."""
    plat = platform or detect()
    return plat.path(COLAB_DRIVE / "MyDrive").is_dir()


def mount_drive(platform: Platform | None = None) -> bool:
    """On Colab, mount Google Drive (Colab asks the user to allow it); True when MyDrive is visible after.

    A refusal or a failed mount prints what to do and returns False; off Colab it says so and returns False.
    """
    plat = platform or detect()
    if plat.name != "colab":
        print("mount_drive: not on Colab; run directories stay on this machine")
        return False
    if drive_mounted(plat):
        return True
    if os.environ.get(HEADLESS_ENV):  # no browser: drive.mount would wait for an approval that cannot come
        raise PlatformError(f"Google Drive is not mounted at {COLAB_DRIVE}. {headless_drive_help()}")
    from google.colab import drive  # only importable on Colab

    mountpoint = plat.path(COLAB_DRIVE)
    print(f"Mounting Google Drive at {COLAB_DRIVE}: {DRIVE_WHY} Colab now asks you to allow access.")
    try:
        drive.mount(str(mountpoint))
    except Exception as err:  # declined (MessageError: credential propagation was unsuccessful) or failed
        print(f"Google Drive was not mounted ({type(err).__name__}: {err}). {drive_help()}")
        return False
    return drive_mounted(plat)



def headless_drive_help(profile: str = "PROFILE") -> str:
    """What to do when `python -m nbhelpers run` on Colab needs Drive and Drive is not mounted."""
    return ("`python -m nbhelpers run` cannot mount Google Drive: Colab asks for the mount in the browser, and "
            "this process has none. In a notebook cell, first run `from google.colab import drive; "
            f"drive.mount(\"{COLAB_DRIVE}\")` (or run any notebook's setup cell), then this command again; or "
            f"pass --run-dir {COLAB_CONTENT}/runs/{profile} (this runtime's disk: lost when it ends).")


def on_drive(path: str | os.PathLike, platform: Platform) -> bool:
    """True when `path` lies on Colab's Drive mount (/content/drive, or under the rehearsal root)."""
    path = Path(path)
    drives = {COLAB_DRIVE, platform.path(COLAB_DRIVE), platform.path(COLAB_DRIVE).resolve()}
    return path.is_absolute() and any(d in (p, *p.parents) for d in drives for p in (path, path.resolve()))


def flush_drive(path: str | os.PathLike, platform: Platform | None = None,
                minutes: float = DRIVE_FLUSH_MINUTES) -> bool:
    """At the end of a session on Colab: push what was written to Drive under `path`; True when it was pushed.

    Drive uploads in the background, and a runtime recycled minutes after the last checkpoint loses what was
    not uploaded yet. colabtools has one call that waits for the uploads, `drive.flush_and_unmount()`, and it
    unmounts Drive: so it runs only after a session's last save (a notebook's last cell, and the end of
    `python -m nbhelpers run`, whose kernels leave it to the runner); a later cell mounts Drive again. Off
    Colab, or where `path` is not on Drive, it does nothing.
    """
    plat = platform or detect()
    if plat.name != "colab" or not on_drive(path, plat) or not drive_mounted(plat):
        return False
    os.sync()  # this process's writes reach the Drive mount before the push
    if os.environ.get(HEADLESS_ENV):
        return False  # a kernel of `python -m nbhelpers run`: the runner pushes once, after the last notebook
    try:
        from google.colab import drive  # only importable on Colab
    except ImportError:
        return False
    print(f"Pushing the last writes to Google Drive before the session ends (up to {minutes:g} min); Drive is "
          "unmounted after it (run the setup cell again to use it in this runtime)")
    try:
        drive.flush_and_unmount(timeout_ms=int(minutes * 60_000))
    except Exception as err:  # noqa: BLE001 - the push failed or timed out: say so, the files may be incomplete
        print(f"warning: Google Drive did not confirm the upload ({type(err).__name__}: {err}); check that "
              f"{path} is complete in drive.google.com before the runtime ends")
        return False
    return True


def drive_help(profile: str = "PROFILE") -> str:
    """What to do when Drive is not mounted on Colab."""
    return ("Run the setup cell again and allow access to Google Drive, or set RUN_DIR in the parameters cell "
            f"to a folder of this runtime, e.g. RUN_DIR = \"{COLAB_CONTENT}/runs/{profile}\": then run all six "
            "notebooks in this one runtime (File -> Open notebook), because a notebook opened from its badge "
            "gets a runtime of its own that cannot see this one's disk, and everything is lost when it ends.")


def scratch_dir(name: str = "", platform: Platform | None = None) -> Path | None:
    """A local folder for bulky temporary data that is not kept; None where the run directory should be used.

    Kaggle: /kaggle/temp/nbhelpers (not part of the 20 GB output). Colab: the runtime's own disk under
    /content, never Drive (slow, and counted against the user's Drive quota). Elsewhere: None. The
    folder (and `name` under it) is created.
    """
    plat = platform or detect()
    if plat.name == "kaggle":
        base = plat.path(KAGGLE_TEMP) / "nbhelpers"
    elif plat.name == "colab":
        base = plat.path(COLAB_SCRATCH)
    else:
        return None
    path = base / name if name else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_max_minutes(platform: Platform | None = None, elapsed_minutes: float | None = None,
                        margin_minutes: float = SESSION_MARGIN_MINUTES) -> float:
    """The loop's time budget: the session limit less the margin and the time the session has already run; 0 = none."""
    plat = platform or detect()
    limit = plat.session_limit_minutes
    if limit is None:
        return 0.0
    if elapsed_minutes is None:  # a rehearsal reads DIR/proc: without one, its session starts now
        elapsed_minutes = session_elapsed_minutes(plat.root, limit)
    return round(max(MIN_BUDGET_MINUTES, limit - margin_minutes - elapsed_minutes), 1)


def apply_session_limit(train_cfg: TrainConfig, platform: Platform | None = None,
                        elapsed_minutes: float | None = None) -> TrainConfig:
    """`train_cfg` with max_minutes set from the platform when it is 0; an explicit budget is kept.

    Applied to the TrainConfig handed to the loop, not to the run's config, so the stage's config
    fingerprint does not change with the time of day.
    """
    if train_cfg.max_minutes > 0:
        return train_cfg
    plat = platform or detect()
    if elapsed_minutes is None and plat.session_limit_minutes is not None:
        clock = session_clock(plat.root, plat.session_limit_minutes)
        elapsed_minutes = clock.elapsed_minutes
        print(f"time budget: the {plat.session_limit_minutes / 60:g} h session limit less {SESSION_MARGIN_MINUTES:g} "
              f"min margin less the session so far (clock: {clock.describe()})")
    budget = default_max_minutes(plat, elapsed_minutes)
    return dataclasses.replace(train_cfg, max_minutes=budget) if budget > 0 else train_cfg


def setup(platform: Platform | None = None, strict: bool = True) -> Platform:
    """What the setup cell calls after installing: show the platform, mount Drive on Colab, check torch / torch_xla."""
    plat = platform or detect()
    problem = check_torch_xla()
    torch_v, xla_v = installed()
    parts = [f"platform: {plat.name} ({plat.accelerator}; {plat.reason})", f"torch {torch_v or 'absent'}"]
    if xla_v:
        parts.append(f"torch_xla {xla_v}")
    limit = plat.session_limit_minutes
    if limit:
        parts.append(f"session limit {limit / 60:g} h")
    print(", ".join(parts))
    if plat.name == "colab" and not os.environ.get(HEADLESS_ENV):  # headless: the runner checked Drive already
        mount_drive(plat)
    note = {"kaggle": " (Kaggle keeps up to 20 GB of /kaggle/working as the version's output; a saved "
                      "version resumes from the previous version's output attached as an input)",
            "colab": "" if drive_mounted(plat) else " (Google Drive is not mounted: set RUN_DIR, see above)"}
    print(f"RUN_DIR = \"\" means {plat.runs_root / 'PROFILE'}{note.get(plat.name, '')}")
    if problem:
        if strict and plat.accelerator == "tpu":
            raise PlatformError(problem)
        print("warning:", problem)
    return plat

