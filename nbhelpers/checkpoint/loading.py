"""Loading a checkpoint into a model, optimizer and scaler, and resuming past a damaged newest one."""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointIncomplete, CheckpointMismatch, CheckpointWarning
from .folder import ASIDE, _step_dirs
from .parts import _read_part, _read_tensors
from .verify import verify

# Model-config keys that do not change the weights' meaning: a checkpoint loads across them.
_CONFIG_IGNORE = {
    "transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype", "use_cache",
    "_attn_implementation", "attn_implementation", "_attn_implementation_autoset", "_commit_hash",
    "output_attentions", "output_hidden_states", "return_dict", "gradient_checkpointing",
    "bos_token_id", "eos_token_id", "pad_token_id", "torchscript", "id2label", "label2id",
    "problem_type", "tokenizer_class", "task_specific_params", "chunk_size_feed_forward",
}



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



def restore_rng(state: dict[str, Any]) -> None:
    """Put back what capture_rng returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])



def load_weights(path: str | os.PathLike, model: torch.nn.Module, state: dict[str, Any] | None = None) -> None:
    """Copy the checkpoint's weights into `model` (any device), checking that every tensor fits."""
    path = Path(path)
    state = state if state is not None else verify(path)
    tensors, metadata = _read_tensors(path / "model.safetensors", state["files"]["model.safetensors"])
    aliases = json.loads(metadata.get("aliases", "{}"))
    own = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in this model"
           for k, v in tensors.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(tensors) - set(aliases))
    unexpected = sorted(set(tensors) - set(own))
    if bad or missing or unexpected:
        detail = "; ".join(bad[:3] + [f"missing {missing[:3]}"] * bool(missing) + [f"unexpected {unexpected[:3]}"] * bool(unexpected))
        raise CheckpointMismatch(f"checkpoint {path} does not fit this model: {detail}")
    model.load_state_dict(tensors, strict=False)


def _rng_file(path: Path, state: dict[str, Any], rank: int) -> str:
    """This rank's RNG part, or rank 0's when the world size changed."""
    name = f"rng_rank{rank}.safetensors"
    return name if name in state["files"] else "rng_rank0.safetensors"


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

    The checkpoint is verified first (every part there, whole), then the model configuration is compared, so
    a cut-short part or another model fails before anything changes; each part's CRC is checked as it is read,
    and the parts not loaded here (arrays, scheduler, other ranks' RNG states) are read once to check theirs.
    A part the caller asks for but the checkpoint lacks (optimizer, scaler) is an error, never a fresh start.
    """
    path = Path(path)
    state = verify(path)
    check_model_config(path, state.get("model_config", {}), model_config_dict(model))
    files = state["files"]
    for wanted, name in ((optimizer, "optimizer.safetensors"), (scaler, "scaler.safetensors")):
        if wanted is not None and name not in files:
            raise CheckpointIncomplete(f"checkpoint {path}: {name} is missing (state.json does not list it); "
                                       "resuming without it would silently restart that state")
    loaded = {"model.safetensors", _rng_file(path, state, rank)}
    loaded |= {name for wanted, name in ((optimizer, "optimizer.safetensors"), (scaler, "scaler.safetensors"))
               if wanted is not None}
    for name in sorted(set(files) - loaded):  # read elsewhere (arrays) or never here: damage must fall back too
        _read_tensors(path / name, files[name])
    rng = _read_part(path / _rng_file(path, state, rank), files.get(_rng_file(path, state, rank)))
    load_weights(path, model, state)
    if optimizer is not None:
        optimizer.load_state_dict(_read_part(path / "optimizer.safetensors", files["optimizer.safetensors"]))
    if scaler is not None:
        scaler.load_state_dict(_read_part(path / "scaler.safetensors", files["scaler.safetensors"]))
    if restore_rng_state:
        restore_rng(rng)
    return state


def load_rng(path: str | os.PathLike, rank: int = 0) -> None:
    """Restore this rank's generator states from a checkpoint (rank 0's when the world size changed)."""
    path = Path(path)
    state = verify(path)
    name = _rng_file(path, state, rank)
    if name not in state["files"]:
        raise CheckpointIncomplete(f"checkpoint {path}: {name} is missing")
    restore_rng(_read_part(path / name, state["files"][name]))


def read_part(path: str | os.PathLike, part: str) -> Any:
    """One part of a checkpoint as saved ("optimizer", "scheduler", "scaler", "rng_rank0"), checked whole."""
    path = Path(path)
    state = verify(path)
    name = f"{part}.safetensors"
    if name not in state["files"]:
        raise CheckpointIncomplete(f"checkpoint {path} has no {name}; it has {', '.join(state['files'])}")
    return _read_part(path / name, state["files"][name])


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The numpy arrays `save(..., arrays=...)` stored with a checkpoint ({} when it stored none)."""
    path = Path(path)
    state = verify(path)
    entry = state["files"].get("arrays.safetensors")
    if entry is None:
        return {}
    tensors, _ = _read_tensors(path / "arrays.safetensors", entry)
    return {k: v.numpy() for k, v in tensors.items()}


def load_latest(
    root: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    rank: int = 0,
    restore_rng_state: bool = True,
    set_aside: bool = True,
) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest checkpoint under `root` that is whole: (its path, state.json), or None when there is none.

    Each newer one with a missing, cut-short or corrupt part is skipped with a CheckpointWarning naming the
    part, and (with `set_aside`, the main rank) renamed to `incomplete-step_…` so that it is never loaded or
    pruned in place of a good one. When checkpoints exist but none is whole, CheckpointIncomplete: starting
    afresh then is the user's decision. A checkpoint of another model or of the old pickled format raises.
    """
    root = Path(root)
    skipped: list[tuple[Path, str]] = []
    for path in reversed(_step_dirs(root)):
        try:
            state = load(path, model=model, optimizer=optimizer, scaler=scaler, rank=rank,
                         restore_rng_state=restore_rng_state)
        except CheckpointIncomplete as err:
            skipped.append((path, str(err)))
            continue
        for bad, why in skipped:
            aside = _set_aside(bad) if set_aside else bad
            warnings.warn(f"{why}. Resuming from the earlier complete checkpoint {path} instead; the incomplete "
                          f"one is kept as {aside}", CheckpointWarning, stacklevel=2)
        return path, state
    if skipped:
        detail = "; ".join(why for _, why in skipped)
        raise CheckpointIncomplete(f"no complete checkpoint under {root}: {detail}. Move them away to start this "
                                   "stage afresh, or restore a whole copy")
    return None


def _set_aside(path: Path) -> Path:
    aside = path.parent / f"{ASIDE}{path.name}"
    try:
        if aside.exists():
            shutil.rmtree(aside)
        os.rename(path, aside)
    except OSError:  # a read-only input (an earlier Kaggle version): leave it where it is
        return path
    return aside

