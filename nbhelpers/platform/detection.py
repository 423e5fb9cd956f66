"""Which platform this is (Kaggle, Colab or local) and its accelerator, from environment variables and paths."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .facts import ROOT_ENV, Platform, PlatformError

_KAGGLE_ENV = ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE", "KAGGLE_KERNEL_INTEGRATIONS")
_COLAB_ENV = ("COLAB_RELEASE_TAG", "COLAB_BACKEND_VERSION", "COLAB_GPU", "COLAB_TPU_ADDR", "COLAB_JUPYTER_IP")
_TPU_ENV = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "TPU_WORKER_ID")


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
