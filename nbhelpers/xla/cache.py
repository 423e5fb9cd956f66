"""torch_xla's persistent compilation cache: compiled programs on disk, reused by the next session."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..layout import XLA_CACHE
from .counters import _counter
from .runtime import _xla

CACHE_DIR = XLA_CACHE  # under the run directory: compiled programs, reused by the next session (carried on Kaggle)


def cache_dir(run_root: str | os.PathLike) -> Path:
    """Where a run keeps torch_xla's persistent compilation cache: RUN_DIR/xla_cache."""
    return Path(run_root) / CACHE_DIR


def enable_persistent_cache(path: str | os.PathLike) -> Path | None:
    """Write compiled programs to `path` and load them from there instead of compiling again; None if too late.

    torch_xla reads the setting when it creates its computation cache, at the process's first compilation: after
    that it cannot change, and this warns and returns None (the next process picks it up). Entries are keyed by
    a hash of the traced graph (HLO, shapes, dtypes, sharding and devices), so a changed model, batch, precision
    or mesh only adds new entries; entries a newer torch_xla / libtpu cannot read are compiled again (torch_xla
    counts `PersistentCacheDeserializeFailure`). Deleting the folder is always safe.
    """
    torch_xla = _xla()
    import torch_xla.runtime as xr

    path = Path(path).expanduser().resolve()
    current = os.environ.get("XLA_PERSISTENT_CACHE_PATH")
    if torch_xla._XLAC._xla_computation_cache_is_initialized():
        if current and Path(current).resolve() == path:
            return path
        warnings.warn(f"torch_xla compiled graphs before the persistent cache was set up: {path} is used from the "
                      "next session on (enable it before any XLA computation)", RuntimeWarning, stacklevel=2)
        return None
    path.mkdir(parents=True, exist_ok=True)
    xr.initialize_cache(str(path), readonly=False)
    return path


def persistent_cache_counts() -> dict[str, int]:
    """torch_xla's persistent-cache counters in this process: misses (compiled, then written), hits (loaded from
    disk) and deserialize failures (found on disk but unreadable here, compiled again)."""
    return {"misses": _counter("PersistentCacheMiss"), "hits": _counter("PersistentCacheHit"),
            "deserialize_failures": _counter("PersistentCacheDeserializeFailure")}
