"""The installed torch and torch_xla, and whether they belong together (torch_xla is built against one torch)."""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata


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


def installed() -> tuple[str | None, str | None]:
    """The installed (torch, torch_xla) versions, None for one that is absent."""
    return _version("torch"), _version("torch_xla") or _version("torch-xla")


def check_torch_xla(torch_version: str | None = None, xla_version: str | None = None) -> str | None:
    """None when torch and torch_xla belong together (same major.minor) or torch_xla is absent; else the explanation."""
    torch_here, xla_here = installed()
    torch_version = torch_version or torch_here
    xla_version = xla_version or xla_here
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

