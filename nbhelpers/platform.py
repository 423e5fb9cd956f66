"""Where the notebook runs (Kaggle, Colab or a local machine): its paths, its session limit, the setup cell.

The only module (with `rundir`, `quota` and `hub`, which ask it) that knows the platforms' absolute
paths: /kaggle/working, /kaggle/input, /kaggle/temp, /content, /content/drive. Every one of them is
read under `Platform.root`, which is `/` on the real platforms and the folder named by
`NBHELPERS_PLATFORM_ROOT` in a rehearsal: with `NBHELPERS_PLATFORM_ROOT=DIR` and the platform's own
environment variables (Kaggle: KAGGLE_KERNEL_RUN_TYPE=Batch for a saved version, Interactive in the
editor; Colab: COLAB_RELEASE_TAG) a laptop behaves like that platform with its paths under DIR, so a
user can try the whole flow before spending quota and the tests exercise what users get.
Nothing here imports torch or torch_xla.

Facts used (Kaggle's and Colab's documentation, November 2026): a Kaggle session runs at most
12 hours on CPU or GPU and 9 hours on TPU; Kaggle keeps at most 20 GB written under /kaggle/working
and nothing of /kaggle/temp; a free Colab runtime lasts at most about 12 hours and may be ended
earlier, and only Google Drive outlives it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: platform sits below config (config's profiles are named after platforms)
    from .config import TrainConfig

PLATFORMS = ("kaggle", "colab", "local")
ACCELERATORS = ("tpu", "gpu", "cpu")
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

_KAGGLE_ENV = ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "KAGGLE_KERNEL_INTEGRATIONS")
_COLAB_ENV = ("COLAB_RELEASE_TAG", "COLAB_BACKEND_VERSION", "COLAB_GPU", "COLAB_TPU_ADDR", "COLAB_JUPYTER_IP")
_TPU_ENV = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "TPU_WORKER_ID")

DRIVE_WHY = ("Each Colab notebook opened from its badge runs in a runtime of its own, and a runtime's disk "
             "(/content) is gone when it ends: only Google Drive is shared between the six notebooks and "
             "kept between sessions, so the run directory lives there.")


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


# ---------------------------------------------------------------- detection


def platform_root(environ: Mapping[str, str] | None = None) -> Path:
    """The rehearsal root from NBHELPERS_PLATFORM_ROOT, or / on a real platform."""
    env = os.environ if environ is None else environ
    value = env.get(ROOT_ENV, "").strip()
    if not value:
        return Path("/")
    root = Path(value).expanduser()
    if not root.is_absolute():
        raise PlatformError(f"{ROOT_ENV}={value!r}: expected an absolute folder (the rehearsal's stand-in for /)")
    if root.exists() and not root.is_dir():
        raise PlatformError(f"{ROOT_ENV}={value!r} is a file, not a folder")
    return root


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a dotted name whose parent package is absent
        return False


def _accelerator(env: Mapping[str, str], root: Path) -> tuple[str, str]:
    """(tpu | gpu | cpu, why) from environment variables and device files."""
    tpu_var = next((k for k in _TPU_ENV if env.get(k)), None)
    if tpu_var:
        return "tpu", f"{tpu_var} is set"
    if env.get("PJRT_DEVICE", "").upper() == "TPU":
        return "tpu", "PJRT_DEVICE=TPU"
    dev = root / "dev"
    if any(dev.glob("accel*")) or (dev / "vfio" / "0").exists():
        return "tpu", "TPU device files under /dev"  # v4+ chips are /dev/accel*, v5e is reached through VFIO
    if (dev / "nvidia0").exists():
        return "gpu", "/dev/nvidia0 exists"
    if env.get("COLAB_GPU", "") not in ("", "0"):
        return "gpu", "COLAB_GPU is set"
    return "cpu", "no TPU or GPU device found"


def detect(environ: Mapping[str, str] | None = None, root: str | os.PathLike | None = None) -> Platform:
    """Kaggle, Colab or local, and the accelerator, from environment variables and paths.

    `root` defaults to NBHELPERS_PLATFORM_ROOT (a rehearsal) or /; device files are read under / unless
    `root` is given, so a rehearsal on a GPU machine still sees its GPU.
    """
    env = os.environ if environ is None else environ
    base = platform_root(env) if root is None else Path(root)
    dev_root = Path("/") if root is None else base
    kaggle_var = next((k for k in _KAGGLE_ENV if env.get(k)), None)
    colab_var = next((k for k in _COLAB_ENV if env.get(k)), None)
    rehearsal = f" (rehearsal under {base})" if base != Path("/") else ""
    if kaggle_var:
        name, why = "kaggle", f"{kaggle_var} is set"
    elif colab_var:
        name, why = "colab", f"{colab_var} is set"
    elif (base / "kaggle/working").is_dir() and (base / "kaggle/input").is_dir():
        name, why = "kaggle", "/kaggle/working and /kaggle/input exist"
    elif (base / "content").is_dir() and environ is None and _has_module("google.colab"):
        name, why = "colab", "/content exists and google.colab is importable"
    else:
        name, why = "local", "no Kaggle or Colab environment variables or paths"
    # a rehearsal also reads device files under its root, so DIR/dev/nvidia0 and nvidia1 stand in for Kaggle's T4 x2
    dev_roots = [dev_root] + ([base] if root is None and base != Path("/") else [])
    accel, accel_why = _accelerator(env, dev_root)
    for extra in dev_roots[1:]:
        if accel == "cpu":
            accel, accel_why = _accelerator(env, extra)
    gpus = max(gpu_count(d) for d in dev_roots)
    run_type = env.get("KAGGLE_KERNEL_RUN_TYPE", "") if name == "kaggle" else ""
    return Platform(name, accel, f"{why}{rehearsal}; {accel_why}", base, run_type, gpus)


def gpu_count(root: str | os.PathLike = "/") -> int:
    """NVIDIA GPUs whose device files (/dev/nvidia0, /dev/nvidia1, ...) exist under `root`."""
    dev = Path(root) / "dev"
    return sum(1 for p in dev.glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)) if dev.is_dir() else 0


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
        others = sorted(p for p in PROFILE_NAMES if p != choice.profile and (plat.runs_root / p / "config.json").is_file())
        if others and not (plat.runs_root / choice.profile / "config.json").is_file():
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


HEADLESS_ENV = "NBHELPERS_HEADLESS"  # set by `python -m nbhelpers run` for its kernels: no browser, no Drive prompt
DRIVE_FLUSH_MINUTES = 15  # the most a session's end waits for Drive to push its last writes


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


# ---------------------------------------------------------------- session limits


def _process_age_s(proc: Path, pid: int | str, uptime_s: float) -> float | None:
    """Seconds since process `pid` started, from /proc/PID/stat (field 22, clock ticks after boot); None if unreadable."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class SessionClock:
    """Where the session's start is read from and how long ago that was."""

    elapsed_minutes: float
    source: str  # "PID 1 (the container)", "the kernel's parent process (PID n)", "this process (PID n)", "none"

    def describe(self) -> str:
        """One line: the clock and its reading."""
        if self.source == "none":
            return "no /proc to read: the session counts from now"
        return f"{self.elapsed_minutes:.1f} min since {self.source} started"


def session_clock(root: str | os.PathLike = "/", limit_minutes: float | None = None,
                  pids: tuple[int, int] | None = None) -> SessionClock:
    """The session's start: PID 1's (the container's), unless PID 1 is older than the session limit.

    A Kaggle GPU/CPU session or a Colab runtime is a fresh container, so PID 1 started with it. A TPU VM's PID 1
    may have started long before this session (the VM outlives sessions): a PID 1 older than the limit cannot be
    this session's start, and the budget would always be the minimum. Then the kernel's parent process (the
    notebook server, started with the session) is used when it is younger than the limit, else this process.
    `pids` is (parent, self), defaulting to this process's.
    """
    proc = Path(root) / "proc"
    try:
        uptime_s = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return SessionClock(0.0, "none")
    parent, me = pids or (os.getppid(), os.getpid())
    candidates = [(1, "PID 1 (the container)")]
    if parent not in (0, 1):
        candidates.append((parent, f"the kernel's parent process (PID {parent})"))
    candidates.append((me, f"this process (PID {me})"))
    readings = [(age / 60.0, what) for pid, what in candidates
                if (age := _process_age_s(proc, pid, uptime_s)) is not None]
    if not readings:
        return SessionClock(0.0, "none")
    for minutes, what in readings:  # the oldest start that can still be this session's
        if limit_minutes is None or minutes <= limit_minutes:
            return SessionClock(minutes, what)
    return SessionClock(*readings[-1])  # every one is older than the limit: the youngest


def session_elapsed_minutes(root: str | os.PathLike = "/", limit_minutes: float | None = None) -> float:
    """Minutes since the session started (see `session_clock`)."""
    return session_clock(root, limit_minutes).elapsed_minutes


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


# ---------------------------------------------------------------- torch / torch_xla pair and the setup cell


def xla_installed() -> bool:
    """True when torch_xla can be imported (Kaggle's TPU image), checked without importing it."""
    return importlib.util.find_spec("torch_xla") is not None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '2.9.0+cu126' or '2.9.0.dev20250101'."""
    parts = re.match(r"(\d+)\.(\d+)", version)
    if not parts:
        raise ValueError(f"cannot read a version from {version!r}")
    return int(parts.group(1)), int(parts.group(2))


def check_torch_xla(torch_version: str | None = None, xla_version: str | None = None) -> str | None:
    """None when torch and torch_xla belong together (same major.minor) or torch_xla is absent; else the explanation."""
    torch_version = torch_version or _version("torch")
    xla_version = xla_version or _version("torch_xla") or _version("torch-xla")
    if xla_version is None:
        return None
    if torch_version is None:
        return f"torch_xla {xla_version} is installed but torch is not: reinstall the image's torch {xla_version}"
    if _release(torch_version) == _release(xla_version):
        return None
    return (f"torch {torch_version} with torch_xla {xla_version}: torch_xla is built against one torch release "
            f"(torch_xla {xla_version} needs torch {'.'.join(map(str, _release(xla_version)))}.x), so importing it "
            "fails or crashes. Something replaced the image's torch (a `pip install` that upgraded it). Restart "
            "the session with a fresh image (Kaggle: Run -> Factory reset; Colab: Runtime -> Disconnect and delete "
            "runtime) and install nothing that upgrades torch: the setup cell pins the installed torch.")


def setup(platform: Platform | None = None, strict: bool = True) -> Platform:
    """What the setup cell calls after installing: show the platform, mount Drive on Colab, check torch / torch_xla."""
    plat = platform or detect()
    problem = check_torch_xla()
    torch_v, xla_v = _version("torch"), _version("torch_xla") or _version("torch-xla")
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


def pip_constraints(dists: Iterable[str] = ("torch", "torch_xla")) -> list[str]:
    """`name==version` lines pinning the installed builds of `dists` (what the setup cell passes to pip -c)."""
    return [f"{d}=={v}" for d in dists if (v := _version(d))]
