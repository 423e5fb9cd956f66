"""Where the notebook runs (Kaggle, Colab or a local machine) and what follows from it.

Per-platform defaults in one place: the run directory, the session limit that bounds
`train.max_minutes`, Kaggle's 20 GB output quota (checked before each checkpoint save), the
Hugging Face token (Kaggle secrets, Colab userdata or HF_TOKEN, never shown), and the chaining of
Kaggle notebooks through each other's outputs. Nothing here imports torch or torch_xla.

Facts used (Kaggle's and Colab's documentation, November 2026): a Kaggle session runs at most
12 hours on CPU or GPU and 9 hours on TPU; Kaggle keeps at most 20 GB written under
/kaggle/working; a free Colab runtime lasts at most about 12 hours and may be ended earlier.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import TrainConfig

PLATFORMS = ("kaggle", "colab", "local")
ACCELERATORS = ("tpu", "gpu", "cpu")

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

KAGGLE_WORKING = Path("/kaggle/working")
KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_OUTPUT_LIMIT_BYTES = 20 * 10**9  # Kaggle keeps at most 20 GB of /kaggle/working
COLAB_DRIVE = Path("/content/drive")
COLAB_DRIVE_RUNS = COLAB_DRIVE / "MyDrive" / "nbhelpers" / "runs"
COLAB_CONTENT_RUNS = Path("/content/runs")

# Bytes per parameter of a checkpoint when none exists yet to measure: fp32 weights plus AdamW's two
# fp32 moments (adamw8bit keeps two 1-byte moments instead).
CHECKPOINT_BYTES_PER_PARAM = {"adamw": 12, "adamw8bit": 6}

HF_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")

_KAGGLE_ENV = ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "KAGGLE_KERNEL_INTEGRATIONS")
_COLAB_ENV = ("COLAB_RELEASE_TAG", "COLAB_BACKEND_VERSION", "COLAB_GPU", "COLAB_TPU_ADDR", "COLAB_JUPYTER_IP")
_TPU_ENV = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "TPU_WORKER_ID")


class PlatformError(RuntimeError):
    """The environment cannot run the notebooks as they are: the message says what to change."""


class OutputQuotaWarning(UserWarning):
    """The next save would take the platform's output folder past its quota."""


@dataclass(frozen=True)
class Platform:
    """The platform this process runs on and its limits."""

    name: str  # kaggle | colab | local
    accelerator: str  # tpu | gpu | cpu
    reason: str  # what gave it away
    root: Path = Path("/")  # the filesystem root the paths below are read under (tests use a fake one)

    @property
    def session_limit_minutes(self) -> float | None:
        """The platform's session limit, None where there is none."""
        return SESSION_LIMIT_MINUTES.get((self.name, self.accelerator))

    @property
    def output_root(self) -> Path | None:
        """The folder whose size the platform limits (Kaggle's working directory), None elsewhere."""
        return self.root / KAGGLE_WORKING.relative_to("/") if self.name == "kaggle" else None

    @property
    def output_limit_bytes(self) -> int | None:
        """The size limit of `output_root`, None where there is none."""
        return KAGGLE_OUTPUT_LIMIT_BYTES if self.name == "kaggle" else None

    def summary(self) -> dict[str, Any]:
        """Plain dict for tables."""
        return {"platform": self.name, "accelerator": self.accelerator,
                "session_limit_h": None if self.session_limit_minutes is None else self.session_limit_minutes / 60,
                "output_limit_GB": None if self.output_limit_bytes is None else self.output_limit_bytes / 1e9,
                "reason": self.reason}


# ---------------------------------------------------------------- detection


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


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
    dev = _under(root, Path("/dev"))
    if any(dev.glob("accel*")) or (dev / "vfio" / "0").exists():
        return "tpu", "TPU device files under /dev"  # v4+ chips are /dev/accel*, v5e is reached through VFIO
    if (dev / "nvidia0").exists():
        return "gpu", "/dev/nvidia0 exists"
    if env.get("COLAB_GPU", "") not in ("", "0"):
        return "gpu", "COLAB_GPU is set"
    return "cpu", "no TPU or GPU device found"


def detect(environ: Mapping[str, str] | None = None, root: str | os.PathLike = "/") -> Platform:
    """Kaggle, Colab or local, and the accelerator, from environment variables and paths."""
    env = os.environ if environ is None else environ
    root = Path(root)
    kaggle_var = next((k for k in _KAGGLE_ENV if env.get(k)), None)
    colab_var = next((k for k in _COLAB_ENV if env.get(k)), None)
    if kaggle_var:
        name, why = "kaggle", f"{kaggle_var} is set"
    elif colab_var:
        name, why = "colab", f"{colab_var} is set"
    elif _under(root, KAGGLE_WORKING).is_dir() and _under(root, KAGGLE_INPUT).is_dir():
        name, why = "kaggle", "/kaggle/working and /kaggle/input exist"
    elif _under(root, Path("/content")).is_dir() and environ is None and _has_module("google.colab"):
        name, why = "colab", "/content exists and google.colab is importable"
    else:
        name, why = "local", "no Kaggle or Colab environment variables or paths"
    accel, accel_why = _accelerator(env, root)
    return Platform(name, accel, f"{why}; {accel_why}", root)


# ---------------------------------------------------------------- run directory


def drive_mounted(root: str | os.PathLike = "/") -> bool:
    """True when Google Drive is mounted at /content/drive (its MyDrive folder is visible)."""
    return _under(Path(root), COLAB_DRIVE / "MyDrive").is_dir()


def mount_drive(mountpoint: str = str(COLAB_DRIVE)) -> bool:
    """On Colab, mount Google Drive so checkpoints outlive the runtime; False (and a message) elsewhere."""
    if detect().name != "colab":
        print("mount_drive: not on Colab; run directories stay on this machine")
        return False
    from google.colab import drive  # only importable on Colab

    drive.mount(mountpoint)
    return Path(mountpoint, "MyDrive").is_dir()


def default_run_dir(profile: str, platform: Platform | None = None) -> Path:
    """The run directory for RUN_DIR = "": Kaggle's working dir, Drive (when mounted) or /content on Colab, runs/ locally."""
    plat = platform or detect()
    if plat.name == "kaggle":
        return _under(plat.root, KAGGLE_WORKING) / "runs" / profile
    if plat.name == "colab":
        if drive_mounted(plat.root):
            return _under(plat.root, COLAB_DRIVE_RUNS) / profile
        return _under(plat.root, COLAB_CONTENT_RUNS) / profile
    return Path("runs") / profile


def resolve_run_dir(run_dir: str | os.PathLike, profile: str, platform: Platform | None = None) -> Path:
    """RUN_DIR as given, or the platform default for ""; on Colab a path on Drive mounts Drive first."""
    plat = platform or detect()
    if not str(run_dir):
        return default_run_dir(profile, plat)
    path = Path(run_dir).expanduser()
    on_drive = plat.name == "colab" and path.is_absolute() and COLAB_DRIVE in (path, *path.parents)
    if on_drive and not drive_mounted(plat.root):
        mount_drive()  # asks for permission once per runtime
    return path


# ---------------------------------------------------------------- chaining Kaggle notebooks


def kaggle_input_runs(profile: str, platform: Platform | None = None) -> list[Path]:
    """Run directories of `profile` that earlier notebooks left in their outputs (/kaggle/input/**/runs/PROFILE)."""
    plat = platform or detect()
    inputs = _under(plat.root, KAGGLE_INPUT)
    if plat.name != "kaggle" or not inputs.is_dir():
        return []
    found = set()
    for depth in ("*", "*/*", "*/*/*", "*/*/*/*"):  # kernel outputs are mounted a few levels down
        found.update(p.parent for p in inputs.glob(f"{depth}/runs/{profile}/metrics.json"))
    return sorted(found)


def link_inputs(run_root: Path, profile: str, platform: Platform | None = None) -> list[str]:
    """Link the stage folders of earlier notebooks' outputs into `run_root` and merge their metrics entries.

    Symlinks, not copies: a 776M model's checkpoints would otherwise count twice against the 20 GB
    output limit. Returns the stage names it linked. Stages already present are left alone.
    """
    from .rundir import STAGES, atomic_write_text, read_json

    linked: list[str] = []
    metrics_path = run_root / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    for source in kaggle_input_runs(profile, platform):
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


# ---------------------------------------------------------------- session limits


def session_elapsed_minutes(root: str | os.PathLike = "/") -> float:
    """Minutes since this container started (its PID 1), the closest measure of the session's start."""
    proc = Path(root) / "proc"
    try:
        uptime_s = float((proc / "uptime").read_text().split()[0])
        stat = (proc / "1" / "stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: start time after boot, in clock ticks
        return max(0.0, (uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")) / 60.0)
    except (OSError, ValueError, IndexError):
        return 0.0


def default_max_minutes(platform: Platform | None = None, elapsed_minutes: float | None = None,
                        margin_minutes: float = SESSION_MARGIN_MINUTES) -> float:
    """The loop's time budget: the session limit less the margin and the time the session has already run; 0 = none."""
    plat = platform or detect()
    limit = plat.session_limit_minutes
    if limit is None:
        return 0.0
    elapsed = session_elapsed_minutes(plat.root) if elapsed_minutes is None else elapsed_minutes
    return round(max(MIN_BUDGET_MINUTES, limit - margin_minutes - elapsed), 1)


def apply_session_limit(train_cfg: TrainConfig, platform: Platform | None = None,
                        elapsed_minutes: float | None = None) -> TrainConfig:
    """`train_cfg` with max_minutes set from the platform when it is 0; an explicit budget is kept.

    Applied to the TrainConfig handed to the loop, not to the run's config, so the stage's config
    fingerprint does not change with the time of day.
    """
    if train_cfg.max_minutes > 0:
        return train_cfg
    budget = default_max_minutes(platform, elapsed_minutes)
    return dataclasses.replace(train_cfg, max_minutes=budget) if budget > 0 else train_cfg


# ---------------------------------------------------------------- output quota


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
    complete = sorted(p for p in Path(root).glob("step_*") if (p / "state.json").is_file()) if Path(root).is_dir() else []
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
        plat = platform or detect()
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


# ---------------------------------------------------------------- secrets


class Secret:
    """A secret string whose repr and str never show it; `reveal()` hands it to the one call that needs it."""

    __slots__ = ("_value", "source", "name")

    def __init__(self, value: str, source: str, name: str = "HF_TOKEN") -> None:
        self._value = value
        self.source = source  # kaggle_secrets | colab_userdata | environment
        self.name = name

    def reveal(self) -> str:
        """The secret itself: pass it straight to the library call, never to print or log."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name} from {self.source}, {len(self._value)} characters, value hidden)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self):
        raise TypeError("a Secret is not pickled: it would end up in a file")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def _from_kaggle(name: str) -> str | None:
    try:
        from kaggle_secrets import UserSecretsClient  # only importable on Kaggle
    except ImportError:
        return None
    try:
        return UserSecretsClient().get_secret(name) or None
    except Exception:  # not attached to this notebook (Add-ons -> Secrets), or the service is down
        return None


def _from_colab(name: str) -> str | None:
    try:
        from google.colab import userdata  # only importable on Colab
    except ImportError:
        return None
    try:
        return userdata.get(name) or None
    except Exception:  # absent, or the notebook was not granted access to it (key icon in the sidebar)
        return None


def hf_token(name: str = "HF_TOKEN", platform: Platform | None = None,
             environ: Mapping[str, str] | None = None) -> Secret | None:
    """The Hugging Face token from Kaggle secrets, Colab userdata or the environment, or None."""
    plat = platform or detect()
    env = os.environ if environ is None else environ
    readers = {"kaggle": [("kaggle_secrets", _from_kaggle)], "colab": [("colab_userdata", _from_colab)]}
    for source, read in readers.get(plat.name, []):
        value = read(name)
        if value:
            return Secret(value.strip(), source, name)
    value = env.get(name, "").strip()
    return Secret(value, "environment", name) if value else None


def scrub(text: str, *secrets: Secret | None) -> str:
    """`text` with every given secret and anything shaped like a Hugging Face token replaced."""
    for s in secrets:
        if s is not None and s.reveal():
            text = text.replace(s.reveal(), "***")
    return HF_TOKEN_PATTERN.sub("hf_***", text)


def push_to_hub(folder: str | os.PathLike, repo_id: str, token: Secret | None = None, private: bool = True,
                message: str = "Upload from nbhelpers") -> str:
    """Upload a saved model folder (weights, config and tokenizer files) to the Hugging Face Hub; return its URL."""
    folder = Path(folder)
    missing = [f for f in ("config.json", "tokenizer_config.json") if not (folder / f).is_file()]
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("pytorch_model*.bin"))
    if missing or not weights:
        what = ", ".join(missing + ([] if weights else ["*.safetensors"]))
        raise FileNotFoundError(f"{folder}: {what} not found; push a final/ folder written by the loop "
                                "(it holds the model and the tokenizer)")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ValueError(f"repo_id: expected 'user/name', got {repo_id!r}")
    token = token if token is not None else hf_token()
    if token is None:
        raise PlatformError("no Hugging Face token: add HF_TOKEN in Kaggle (Add-ons -> Secrets) or Colab "
                            "(the key icon, with notebook access), or set the HF_TOKEN environment variable")
    from huggingface_hub import HfApi

    api = HfApi(token=token.reveal())
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=message,
                          ignore_patterns=["checkpoints/*", ".*"])
    except Exception as err:  # re-raised without anything that could quote the token
        raise PlatformError(f"push_to_hub({repo_id!r}) failed: {scrub(str(err), token)}") from None
    return f"https://huggingface.co/{repo_id}"


def find_secrets(notebook: str | os.PathLike, *secrets: Secret | str) -> list[str]:
    """Places in an executed notebook where a token-like string (or one of `secrets`) appears: 'cell N source|output'."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    literal = [s.reveal() if isinstance(s, Secret) else s for s in secrets if s]
    hits = []
    for i, cell in enumerate(nb.get("cells", [])):
        parts = {"source": cell.get("source", ""), "outputs": json.dumps(cell.get("outputs", []), ensure_ascii=False)}
        for where, text in parts.items():
            text = "".join(text) if isinstance(text, list) else text
            if HF_TOKEN_PATTERN.search(text) or any(s in text for s in literal):
                hits.append(f"{Path(notebook).name}: cell {i} {where}")
    meta = json.dumps(nb.get("metadata", {}), ensure_ascii=False)
    if HF_TOKEN_PATTERN.search(meta) or any(s in meta for s in literal):
        hits.append(f"{Path(notebook).name}: metadata")
    return hits


# ---------------------------------------------------------------- torch / torch_xla pair and the setup cell


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
    """What the setup cell calls after installing: show the platform, check torch / torch_xla on a TPU image."""
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
    print(f"RUN_DIR = \"\" means {default_run_dir('PROFILE', plat)}" + {
        "kaggle": " (Kaggle keeps up to 20 GB of /kaggle/working as the notebook's output)",
        "colab": "" if drive_mounted(plat.root) else (" (lost when the runtime ends; RUN_DIR = "
                                                      f"\"{COLAB_DRIVE_RUNS}/PROFILE\" keeps runs on Google Drive)"),
    }.get(plat.name, ""))
    if problem:
        if strict and plat.accelerator == "tpu":
            raise PlatformError(problem)
        print("warning:", problem)
    return plat


def pip_constraints(dists: Iterable[str] = ("torch", "torch_xla")) -> list[str]:
    """`name==version` lines pinning the installed builds of `dists` (what the setup cell passes to pip -c)."""
    return [f"{d}=={v}" for d in dists if (v := _version(d))]
