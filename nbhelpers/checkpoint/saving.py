"""Saving a checkpoint: atomic (a temporary folder renamed into place), fsynced, room made before, pruned after."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import quota
from .errors import CheckpointWriteError
from .folder import ASIDE, FORMAT, STATE_FILE, checkpoint_dir, latest, list_checkpoints, seal_state
from .parts import _from_numpy, _fsync, _read_tensors, _write_part, _write_tensors, content_crc

# Called with (tmp_dir, step) after every file is written and before the rename that commits the
# checkpoint. The loop never sets it; tests set it to stall a save and kill the process there.
before_commit: Callable[[Path, int], None] = lambda tmp, step: None  # noqa: E731


def _weights(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU state dict with tied tensors stored once, and the alias -> stored-key map."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[int, str] = {}
    for key, value in model.state_dict(keep_vars=True).items():  # keep_vars: tied params are one object
        if id(value) in seen:
            aliases[key] = seen[id(value)]
            continue
        seen[id(value)] = key
        value = value.detach()
        # a device tensor's copy is already private; a CPU one is cloned so no storage is shared with the model
        tensors[key] = (value.cpu() if value.device.type != "cpu" else value.clone()).contiguous()
    return tensors, aliases


def capture_rng() -> dict[str, Any]:
    """Every generator state of this process, as tensors, arrays and plain numbers."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state



def save(
    root: str | os.PathLike,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any = None,
    scaler: Any = None,
    state: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
    keep_last: int = 2,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Write the checkpoint of `step` atomically and keep the newest `keep_last`; every rank calls it.

    Rank 0 writes the weights, optimizer, scheduler, scaler, `arrays` (numpy arrays by name, read back with
    `read_arrays`) and last state.json with the list of files; each rank writes its own RNG states; then
    rank 0 renames the temporary directory into place and prunes older ones. A failed write (a full disk)
    removes the temporary directory and raises CheckpointWriteError; earlier checkpoints stay as they were.
    """
    root = Path(root)
    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-{final.name}"
    try:
        if rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            _make_room(root, quota.estimate_save_bytes(root, model))
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        barrier()
        _write_part(tmp / f"rng_rank{rank}.safetensors", capture_rng())
        barrier()
        if rank == 0:
            _write_rank0(tmp, step, model, optimizer, scheduler, scaler, state, arrays, world_size)
            before_commit(tmp, step)
            if final.exists():  # the same step saved twice: the new one replaces it
                _discard(final)
            os.rename(tmp, final)
            _fsync(root)
            prune(root, keep_last)
    except CheckpointWriteError:  # no room (_make_room): nothing was written
        raise
    except OSError as err:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(root, step, err) from err
    barrier()
    return final


def _write_rank0(tmp: Path, step: int, model: torch.nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
                 state: dict[str, Any], arrays: dict[str, np.ndarray] | None, world_size: int) -> None:
    started = time.perf_counter()
    files: dict[str, dict[str, Any]] = {}
    tensors, aliases = _weights(model)
    files["model.safetensors"] = _write_tensors(tmp / "model.safetensors", tensors,
                                                {"format": "pt", "aliases": json.dumps(aliases)})
    del tensors  # free the host copy of the weights before the optimizer's
    if optimizer is not None:
        files["optimizer.safetensors"] = _write_part(tmp / "optimizer.safetensors", optimizer.state_dict())
    if scheduler is not None:
        files["scheduler.safetensors"] = _write_part(tmp / "scheduler.safetensors", scheduler.state_dict())
    if scaler is not None:
        files["scaler.safetensors"] = _write_part(tmp / "scaler.safetensors", scaler.state_dict())
    if arrays:
        bad = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
        if bad:
            raise TypeError(f"checkpoint arrays must be numpy arrays; {bad} are not")
        files["arrays.safetensors"] = _write_tensors(
            tmp / "arrays.safetensors", {k: _from_numpy(v, f"arrays[{k!r}]") for k, v in arrays.items()},
            {"format": "np"})
    for r in range(world_size):  # every rank's generator states (written before the barrier)
        name = f"rng_rank{r}.safetensors"
        if (tmp / name).exists():
            files[name] = {"bytes": (tmp / name).stat().st_size, "crc32": content_crc(_read_tensors(tmp / name, None)[0])}
    full_state = seal_state(dict(state, format=FORMAT, step=step, world_size=world_size, saved_at=time.time(),
                                 write_s=round(time.perf_counter() - started, 3), files=files))
    (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=2, ensure_ascii=False), encoding="utf-8")
    _fsync(tmp / STATE_FILE)


def _write_error(root: Path, step: int, err: OSError) -> CheckpointWriteError:
    try:
        free = f"{shutil.disk_usage(root).free / 2**30:.2f} GiB free"
    except OSError:
        free = "free space unknown"
    previous = latest(root)
    kept = f"the newest earlier checkpoint, {previous}, is untouched" if previous else "no earlier checkpoint exists"
    hint = (" Free space there (or lower train.keep_last), then run again: it resumes from the newest checkpoint."
            if err.errno in (errno.ENOSPC, errno.EDQUOT) else "")
    return CheckpointWriteError(err.errno, f"could not write checkpoint {checkpoint_dir(root, step).name} under {root} "
                                f"({err.strerror or err}; {free}); its partial files were removed and {kept}.{hint}")


def prune(root: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints (renamed first, so never half-seen)."""
    if keep_last <= 0:
        return
    for old in list_checkpoints(root)[:-keep_last]:
        _discard(old)


def _discard(path: Path) -> None:
    """Delete a checkpoint folder, renamed first so that no reader ever sees half of one."""
    trash = path.parent / f".trash-{path.name}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _make_room(root: Path, next_save_bytes: int) -> None:
    """Before a save: drop the oldest checkpoints early when the next one would pass the output limit (Kaggle's
    20 GB) or the free space (Drive's 15 GB), never the newest; a save that still cannot fit on the disk stops here,
    before writing anything, with CheckpointWriteError (the newest checkpoint stays whole)."""
    for leftover in root.glob(".trash-*"):  # a deletion a killed process did not finish: space to take back
        shutil.rmtree(leftover, ignore_errors=True)
    check = quota.output_quota(root, next_save_bytes)
    older = list_checkpoints(root)[:-1]  # oldest first; the newest complete checkpoint always stays
    while not check.fits and older:
        old = older.pop(0)
        _discard(old)
        warnings.warn(f"removed {old} before its turn: the next save would pass the "
                      f"{'output limit' if check.disk_fits else 'free space'}", quota.OutputQuotaWarning, stacklevel=3)
        check = quota.output_quota(root, next_save_bytes)
    if not check.disk_fits:
        raise _no_room(root, check)
    if not check.fits:
        warnings.warn(check.message(), quota.OutputQuotaWarning, stacklevel=3)


def _no_room(root: Path, check: quota.QuotaCheck) -> CheckpointWriteError:
    """The error of a save that cannot fit: the free space, what is kept, and the largest things to delete."""
    gb = 1e9
    newest = latest(root)
    kept = f"{newest} is whole and a rerun resumes from it" if newest else "there is no earlier checkpoint"
    run = root.parent.parent  # <run>/<stage>/checkpoints
    candidates = list(root.glob(f"{ASIDE}*"))  # damaged checkpoints set aside for inspection
    candidates += [p for p in run.parent.iterdir() if p.is_dir() and p != run] if run.parent.is_dir() else []
    sized = sorted(((quota.dir_bytes(p), p) for p in candidates), reverse=True)[:4]
    listed = ", ".join(f"{p} ({n / gb:.2f} GB)" for n, p in sized if n > 0)
    return CheckpointWriteError(errno.ENOSPC, (
        f"no room for the next checkpoint under {root}: it needs about {check.next_save_bytes / gb:.2f} GB and "
        f"{check.free_bytes / gb:.2f} GB are free; nothing was written and {kept}. Delete "
        + (f"what you no longer need, e.g. {listed}" if listed else "files you no longer need on that disk")
        + " (on Colab, files deleted from Drive count until Drive's trash is emptied: drive.google.com/drive/trash),"
        " or use a smaller model, then run again."))

