"""Atomic, resumable training checkpoints: CPU tensors only, so they move between CPU, GPU and TPU.

Layout of `<root>/step_00000120/` (a checkpoint is complete when its directory has that name;
it is written as `<root>/.tmp-step_00000120/` and renamed, so a kill leaves the previous one whole):

    model.safetensors   weights (fp32 master weights as trained; tied tensors stored once)
    optimizer.pt        optimizer.state_dict() with every tensor on the CPU
    scheduler.pt        lr scheduler state_dict (the loop rebuilds the schedule from state.json's plan)
    scaler.pt           GradScaler state (fp16 only)
    rng_rank<r>.pt      python, numpy, torch and CUDA generator states of rank r
    state.json          step, data position, lr plan, train and model configuration (written last)
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import quota

PREFIX = "step_"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")
STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.safetensors"

# Model-config keys that do not change the weights' meaning: a checkpoint loads across them.
_CONFIG_IGNORE = {
    "transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype", "use_cache",
    "_attn_implementation", "attn_implementation", "_attn_implementation_autoset", "_commit_hash",
    "output_attentions", "output_hidden_states", "return_dict", "gradient_checkpointing",
    "bos_token_id", "eos_token_id", "pad_token_id", "torchscript", "id2label", "label2id",
    "problem_type", "tokenizer_class", "task_specific_params", "chunk_size_feed_forward",
}


class CheckpointMismatch(ValueError):
    """A checkpoint that belongs to another model configuration; the message names the field."""


# Called with (tmp_dir, step) after every file is written and before the rename that commits the
# checkpoint. The loop never sets it; tests set it to stall a save and kill the process there.
before_commit: Callable[[Path, int], None] = lambda tmp, step: None  # noqa: E731


def checkpoint_dir(root: str | os.PathLike, step: int) -> Path:
    """Directory of the checkpoint after `step` optimizer steps."""
    return Path(root) / f"{PREFIX}{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def clean_incomplete(root: str | os.PathLike) -> list[Path]:
    """Remove checkpoints a killed process left half-written or half-deleted; return what was removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".trash-")) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


# ---------------------------------------------------------------- pieces


def model_config_dict(model: torch.nn.Module) -> dict[str, Any]:
    """The architecture fields of `model.config` that a checkpoint must agree with."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return {}
    data = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    return {k: v for k, v in sorted(data.items()) if k not in _CONFIG_IGNORE and not k.startswith("_")}


def check_model_config(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise CheckpointMismatch naming every architecture field that differs."""
    diff = [k for k in sorted(set(saved) & set(current)) if saved[k] != current[k]]
    if diff:
        parts = ", ".join(f"{k}={saved[k]!r} in the checkpoint but {current[k]!r} in this model" for k in diff)
        raise CheckpointMismatch(
            f"checkpoint {path} was written for another model configuration: {parts}. "
            "Resume with the configuration it was trained with, or use a new output directory."
        )


def _cpu(obj: Any) -> Any:
    """A copy of nested containers with every tensor detached and on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


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
    """Every generator state of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what capture_rng returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torch_save(obj: Any, path: Path) -> None:
    torch.save(obj, path)
    _fsync(path)


# ---------------------------------------------------------------- save and load


def save(
    root: str | os.PathLike,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any = None,
    scaler: Any = None,
    state: dict[str, Any],
    keep_last: int = 2,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    arrays: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of `step` atomically and keep the newest `keep_last`; every rank calls it.

    Rank 0 writes the weights, optimizer, scheduler, scaler and state.json; each rank writes its own
    RNG states; then rank 0 renames the temporary directory into place and prunes older ones.
    """
    root = Path(root)
    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-{final.name}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        _make_room(root, quota.estimate_save_bytes(root, model))
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    _torch_save(capture_rng(), tmp / f"rng_rank{rank}.pt")
    barrier()
    if rank == 0:
        started = time.perf_counter()
        tensors, aliases = _weights(model)
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt", "aliases": json.dumps(aliases)})
        del tensors  # free the host copy of the weights before the optimizer's
        _fsync(tmp / "model.safetensors")
        if optimizer is not None:
            _torch_save(_cpu(optimizer.state_dict()), tmp / "optimizer.pt")
        if scheduler is not None:
            _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            _torch_save(scaler.state_dict(), tmp / "scaler.pt")
        if arrays:  # stand-in until rel's checkpoint arrays land
            from safetensors.numpy import save_file as save_arrays

            save_arrays({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / ARRAYS_FILE))
            _fsync(tmp / ARRAYS_FILE)
        full_state = dict(state, step=step, world_size=world_size, saved_at=time.time(),
                          write_s=round(time.perf_counter() - started, 3))
        (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=2, ensure_ascii=False), encoding="utf-8")
        _fsync(tmp / STATE_FILE)
        before_commit(tmp, step)
        if final.exists():  # the same step saved twice: the new one replaces it
            _discard(final)
        os.rename(tmp, final)
        _fsync(root)
        prune(root, keep_last)
    barrier()
    return final


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
    """Before a save that would pass the output limit (Kaggle's 20 GB): drop the oldest checkpoints early, or warn."""
    # each early removal warns; the newest checkpoint is never removed, and a save that still does not fit warns
    check = quota.output_quota(root, next_save_bytes)
    older = list_checkpoints(root)[:-1]  # oldest first; the newest complete checkpoint always stays
    while not check.fits and check.disk_fits and older:
        old = older.pop(0)
        _discard(old)
        warnings.warn(f"removed {old} before its turn: the next save would pass the output limit",
                      quota.OutputQuotaWarning, stacklevel=3)
        check = quota.output_quota(root, next_save_bytes)
    if not check.fits:
        warnings.warn(check.message(), quota.OutputQuotaWarning, stacklevel=3)


def read_arrays(path: str | os.PathLike) -> dict[str, Any]:
    """The arrays saved with a checkpoint (empty when there are none)."""
    file = Path(path) / ARRAYS_FILE
    if not file.exists():
        return {}
    from safetensors.numpy import load_file as load_arrays

    return load_arrays(str(file))


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """state.json of a checkpoint."""
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))


def load_weights(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Copy the checkpoint's weights into `model` (any device), checking that every tensor fits."""
    path = Path(path)
    tensors = load_file(path / "model.safetensors")
    with open(path / "model.safetensors", "rb") as fh:  # the aliases of tied tensors live in the metadata
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    aliases = json.loads(header.get("__metadata__", {}).get("aliases", "{}"))
    own = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in this model"
           for k, v in tensors.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(tensors) - set(aliases))
    unexpected = sorted(set(tensors) - set(own))
    if bad or missing or unexpected:
        detail = "; ".join(bad[:3] + [f"missing {missing[:3]}"] * bool(missing) + [f"unexpected {unexpected[:3]}"] * bool(unexpected))
        raise CheckpointMismatch(f"checkpoint {path} does not fit this model: {detail}")
    model.load_state_dict(tensors, strict=False)


def load(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    rank: int = 0,
    restore_rng_state: bool = True,
) -> dict[str, Any]:
    """Load weights, optimizer and scaler state (and this rank's RNG) into the given objects; return state.json.

    The model-configuration check comes first, so a checkpoint of another model fails naming the field.
    """
    path = Path(path)
    state = read_state(path)
    check_model_config(path, state.get("model_config", {}), model_config_dict(model))
    load_weights(path, model)
    if optimizer is not None and (path / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    if scaler is not None and (path / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(path / "scaler.pt", map_location="cpu", weights_only=False))
    if restore_rng_state:
        load_rng(path, rank)
    return state


def load_rng(path: str | os.PathLike, rank: int = 0) -> None:
    """Restore this rank's generator states from a checkpoint (rank 0's when the world size changed)."""
    rng = Path(path) / f"rng_rank{rank}.pt"
    if not rng.exists():
        rng = Path(path) / "rng_rank0.pt"
    restore_rng(torch.load(rng, map_location="cpu", weights_only=False))
