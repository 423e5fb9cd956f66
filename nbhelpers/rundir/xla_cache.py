"""Carrying torch_xla's compiled programs from an earlier Kaggle version of the run into this one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .. import platform
from ..layout import XLA_CACHE
from .inputs import _same_run, input_runs

if TYPE_CHECKING:
    from .run import RunDir


def carry_xla_cache(run: RunDir, plat: platform.Platform | None = None) -> Path | None:
    """Copy the XLA compilation cache an earlier version of this run left in Kaggle's inputs into `run`.

    A copy, not a link: torch_xla adds entries to the folder, and an input is read-only. Only on a host with
    torch_xla (a CPU or GPU kernel would only add the programs to its 20 GB of output) and only when this run has
    no cache of its own yet; the newest input's (by modification time) when several hold one. Returns the source.
    """
    own = run.root / XLA_CACHE
    if not platform.xla_installed() or own.exists() or own.is_symlink():
        return None
    plat = plat or platform.detect()
    caches = [s / XLA_CACHE for s in input_runs(run.root.name, plat)
              if _same_run(s, run.config) and (s / XLA_CACHE).is_dir()]
    if not caches:
        return None
    source = max(caches, key=lambda c: c.stat().st_mtime)
    partial = run.root / f".tmp-{XLA_CACHE}"
    shutil.rmtree(partial, ignore_errors=True)  # a copy cut short by an earlier session's end
    shutil.copytree(source, partial, symlinks=False)
    partial.rename(own)
    size = sum(f.stat().st_size for f in own.rglob("*") if f.is_file())
    print(f"{XLA_CACHE}: {size / 2**20:,.0f} MiB of compiled programs copied from {source.parent} (not compiled again)")
    return source
