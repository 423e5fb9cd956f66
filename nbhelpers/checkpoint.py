"""Atomic, resumable training checkpoints that load nothing able to run code, and know when they are whole.

Layout of `<root>/step_00000120/` (written as `<root>/.tmp-step_00000120/` and renamed, so a kill leaves the
previous one whole):

    model.safetensors       weights (fp32 master weights as trained; tied tensors stored once)
    optimizer.safetensors   optimizer.state_dict(): its tensors, and its structure as JSON in the header
    scheduler.safetensors   lr scheduler state (the loop rebuilds the schedule from state.json's plan)
    scaler.safetensors      GradScaler state (fp16 only)
    rng_rank<r>.safetensors python, numpy, torch and CUDA generator states of rank r
    arrays.safetensors      named numpy arrays that travel with the data position (e.g. dedup hashes)
    state.json              step, data position, lr plan, configuration, and `files` (written last), sealed by
                            `state_crc32`, a CRC-32 of its own other content

Nothing is unpickled: every part is safetensors (tensors) plus JSON (numbers, strings, lists, tuples and dicts
in the header's metadata). `state.json` lists every other file with its size and a CRC-32 of its content
(names, dtypes, shapes and bytes of its tensors), and carries a CRC-32 of itself, so no byte of a checkpoint is
unchecked; its `step` must match the folder's name. A checkpoint is complete when state.json parses, its own
CRC holds, and every listed file is there with that size and a safetensors header that spans exactly the
file: `verify` checks this without reading the data (instant on Drive, even for a 9.3 GB checkpoint).
Loading a part reads all of it anyway, so its CRC is checked then, from memory (about 2 GB/s, no second
read); `load` also checks the parts it does not load itself (the arrays, the scheduler, other ranks' RNG
states), so a damaged one falls back like any other. `load_latest` resumes from the newest checkpoint that
loads whole and warns about each newer one it sets aside, naming it and the damage.

Checkpoints written before this format (pickled `.pt` files) are refused with a message; `migrate` converts
them with torch's restricted loader (`weights_only=True`), which refuses anything but tensors, plain values
and numpy arrays.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import quota
from .files import atomic_write_text
from .layout import STATE_FILE as STATE_FILE
from .layout import STEP_PREFIX as PREFIX
from .layout import step_dir

_NAME = re.compile(rf"^{PREFIX}(\d+)$")
FORMAT = 3  # 1 (unnumbered): pickled .pt parts, no file list; 2: state.json without its own CRC (still read)
STATE_CRC = "state_crc32"  # state.json's key holding the CRC-32 of the rest of state.json
ASIDE = "incomplete-"  # prefix of checkpoints set aside by load_latest: kept for inspection, never loaded
_STRUCTURE = "nbhelpers_structure"  # safetensors metadata key holding a part's JSON skeleton
_CHUNK = 1 << 24

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


class CheckpointIncomplete(RuntimeError):
    """A checkpoint with a missing, cut-short or corrupt part; the message names the checkpoint and the part."""


class LegacyCheckpoint(RuntimeError):
    """A checkpoint in the pickled format of earlier versions: not loaded; the message says how to convert it."""


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint file holding something other than tensors and plain values (pickled code): refused."""


class CheckpointWriteError(OSError):
    """A save that failed (a full disk, a quota): the earlier checkpoints are untouched; the message says so."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped or set aside while resuming."""


# Called with (tmp_dir, step) after every file is written and before the rename that commits the
# checkpoint. The loop never sets it; tests set it to stall a save and kill the process there.
before_commit: Callable[[Path, int], None] = lambda tmp, step: None  # noqa: E731


def checkpoint_dir(root: str | os.PathLike, step: int) -> Path:
    """Directory of the checkpoint after `step` optimizer steps."""
    return Path(root) / step_dir(step)


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Committed checkpoints under `root` (those with a state.json), oldest first; `verify` says which are whole."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def _step_dirs(root: Path) -> list[Path]:
    """Every step_* directory under `root`, committed or not (a copy may have lost its state.json), oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(root: str | os.PathLike) -> Path | None:
    """The newest committed checkpoint under `root`, or None."""
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


# ---------------------------------------------------------------- model configuration


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


# ---------------------------------------------------------------- parts: tensors + JSON, no pickle


def _tensor(value: torch.Tensor) -> torch.Tensor:
    """A CPU tensor safetensors can write: detached, contiguous, owning exactly its bytes."""
    value = value.detach()
    if value.device.type != "cpu":
        return value.cpu().contiguous()  # a device tensor's copy is already private
    if not value.is_contiguous() or value.untyped_storage().nbytes() != value.numel() * value.element_size():
        return value.contiguous().clone()  # a view: safetensors refuses tensors that share storage
    return value


def _pack(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """JSON skeleton of `obj`; its tensors and arrays go to `tensors` under their path."""
    if isinstance(obj, torch.Tensor):
        tensors[where] = _tensor(obj)
        return {"@tensor": where}
    if isinstance(obj, np.ndarray):
        tensors[where] = _from_numpy(obj, where)
        return {"@array": where}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"@tuple": [_pack(v, tensors, f"{where}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, tensors, f"{where}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("@") for k in obj):
            return {k: _pack(v, tensors, f"{where}/{k}") for k, v in obj.items()}
        return {"@items": [[_pack(k, tensors, f"{where}/key{i}"), _pack(v, tensors, f"{where}/{i}")]
                           for i, (k, v) in enumerate(obj.items())]}
    raise TypeError(f"{where or 'the value'}: a {type(obj).__name__} cannot be stored in a checkpoint "
                    "(tensors, numpy arrays, numbers, strings, None, lists, tuples and dicts only)")


def _from_numpy(array: np.ndarray, where: str) -> torch.Tensor:
    """A tensor over the array's bytes (a copy only when it is not contiguous or is read-only)."""
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        array = array.copy()
    try:
        return torch.from_numpy(array)
    except TypeError:
        raise TypeError(f"{where}: numpy arrays of dtype {array.dtype} cannot be stored in a checkpoint "
                        "(numbers and booleans only)") from None


def _unpack(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_unpack(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "@tensor" in node:
        return tensors[node["@tensor"]]
    if "@array" in node:
        return tensors[node["@array"]].numpy()
    if "@tuple" in node:
        return tuple(_unpack(v, tensors) for v in node["@tuple"])
    if "@items" in node:
        return {_unpack(k, tensors): _unpack(v, tensors) for k, v in node["@items"]}
    return {k: _unpack(v, tensors) for k, v in node.items()}


def content_crc(tensors: dict[str, torch.Tensor]) -> str:
    """CRC-32 of the names, dtypes, shapes and bytes of `tensors` (what a part holds), from memory."""
    crc = 0
    for key in sorted(tensors):
        t = tensors[key]
        crc = zlib.crc32(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode(), crc)
        if t.numel():
            crc = zlib.crc32(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    """Write one safetensors part and fsync it; return its `files` entry (size and content CRC)."""
    try:
        save_file(tensors, path, metadata=metadata)
    except SafetensorError as err:  # its I/O errors (a full disk) are not OSErrors: make them one
        code = re.search(r"os error (\d+)", str(err))
        num = int(code.group(1)) if code else errno.EIO
        raise OSError(num, os.strerror(num), str(path)) from err
    _fsync(path)
    return {"bytes": path.stat().st_size, "crc32": content_crc(tensors)}


def _write_part(path: Path, obj: Any) -> dict[str, Any]:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(obj, tensors, "")
    return _write_tensors(path, tensors, {_STRUCTURE: json.dumps(skeleton, allow_nan=True)})


def _read_tensors(path: Path, entry: dict[str, Any] | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A part's tensors and metadata, its CRC checked against `entry`; CheckpointIncomplete names what is wrong."""
    where = f"checkpoint {path.parent}: {path.name}"
    try:
        with safe_open(path, "pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except FileNotFoundError:
        raise CheckpointIncomplete(f"{where} is missing") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointIncomplete(f"{where} cannot be read ({err})") from None
    if entry is not None and content_crc(tensors) != entry.get("crc32"):
        raise CheckpointIncomplete(f"{where} is corrupt: its content differs from the CRC-32 recorded when it was "
                                   "saved (a damaged copy or disk)")
    return tensors, metadata


def _read_part(path: Path, entry: dict[str, Any] | None) -> Any:
    tensors, metadata = _read_tensors(path, entry)
    try:
        return _unpack(json.loads(metadata[_STRUCTURE]), tensors)
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointIncomplete(f"checkpoint {path.parent}: {path.name} has no readable structure ({err})") from None


# ---------------------------------------------------------------- weights and generator states


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


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what capture_rng returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- save


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


# ---------------------------------------------------------------- completeness


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """state.json of a checkpoint; CheckpointIncomplete when it is missing or not a JSON object."""
    file = Path(path) / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} is missing") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} is not valid JSON ({err})") from None
    if not isinstance(state, dict):
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} is not a JSON object")
    return state


def state_crc(state: dict[str, Any]) -> str:
    """CRC-32 of state.json's content other than its seal, over a canonical JSON form (key order, tuples, int keys)."""
    body = {k: v for k, v in state.items() if k != STATE_CRC}
    # through JSON once: what the CRC covers is what state.json holds when it is read back
    canonical = json.dumps(json.loads(json.dumps(body, allow_nan=True)), sort_keys=True, ensure_ascii=False,
                           allow_nan=True)
    return f"{zlib.crc32(canonical.encode('utf-8')):08x}"


def seal_state(state: dict[str, Any]) -> dict[str, Any]:
    """`state` with its `state_crc32` (what `verify` checks, so a changed byte of state.json is seen)."""
    body = {k: v for k, v in state.items() if k != STATE_CRC}
    return {**body, STATE_CRC: state_crc(body)}


def _check_state(path: Path, state: dict[str, Any]) -> None:
    """state.json's own CRC and its step against the folder's name; CheckpointIncomplete names what differs."""
    sealed = state.get(STATE_CRC)
    if sealed is None and int(state.get("format") or 0) >= 3:
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} has no {STATE_CRC} (format {state.get('format')} "
                                   "records one): it was rewritten by hand or by another tool")
    if sealed is not None and sealed != state_crc(state):
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} is corrupt: its content differs from the CRC-32 "
                                   "recorded when it was saved (a damaged copy, or a hand edit)")
    named = _NAME.match(path.name)
    if named and state.get("step") != int(named.group(1)):
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} says step {state.get('step')!r} but the folder "
                                   f"is {path.name} (step {int(named.group(1))}): the two must agree")


def _legacy_message(path: Path) -> str:
    return (f"checkpoint {path} was written by an earlier nbhelpers (pickled .pt files, no file list). It is not "
            "loaded: unpickling a file can run any code. If it is your own, convert it once with "
            f"`python -c \"import nbhelpers.checkpoint as c; c.migrate('{path}')\"` (torch's restricted loader: "
            "tensors, plain values and numpy arrays only); or move it away to start this stage afresh")


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a safetensors file without reading its data (missing, cut short), or None."""
    path = Path(path)
    try:
        size = path.stat().st_size
        span = _header_span(path)
    except FileNotFoundError:
        return f"{path} is missing"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{path} has a broken safetensors header ({err})"
    return None if span == size else f"{path} is {size:,} bytes but its header describes {span:,} (cut short?)"


def _header_span(path: Path) -> int:
    """The size a safetensors file must have according to its own header (8 + header + data)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if n > 100_000_000:
            raise ValueError("not a safetensors file")
        header = json.loads(fh.read(n))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + n + max(ends, default=0)


def verify(path: str | os.PathLike, *, full: bool = False) -> dict[str, Any]:
    """state.json when the checkpoint is whole; CheckpointIncomplete (or LegacyCheckpoint) naming the part otherwise.

    Without reading data: state.json parses and lists every part, each is there with its recorded size and a
    safetensors header spanning exactly the file. `full=True` also reads every part and checks its CRC-32.
    """
    path = Path(path)
    state = read_state(path)
    files = state.get("files")
    if not isinstance(files, dict):
        if any(path.glob("*.pt")):
            raise LegacyCheckpoint(_legacy_message(path))
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} lists no files")
    _check_state(path, state)
    if "model.safetensors" not in files:
        raise CheckpointIncomplete(f"checkpoint {path}: {STATE_FILE} lists no model.safetensors")
    for name, entry in files.items():
        file = path / name
        if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".safetensors"):
            raise UnsafeCheckpoint(f"checkpoint {path}: {STATE_FILE} lists {name!r}; nbhelpers reads only "
                                   ".safetensors parts inside the checkpoint and never unpickles a file")
        if not file.is_file():
            raise CheckpointIncomplete(f"checkpoint {path}: {name} is missing")
        size = file.stat().st_size
        if size != entry.get("bytes"):
            raise CheckpointIncomplete(f"checkpoint {path}: {name} has {size:,} bytes but {entry.get('bytes'):,} were "
                                       "written (cut short: an interrupted copy or sync, or a full disk)")
        try:
            span = _header_span(file)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointIncomplete(f"checkpoint {path}: {name} has a broken safetensors header ({err})") from None
        if span != size:
            raise CheckpointIncomplete(f"checkpoint {path}: {name} is {size:,} bytes but its header describes {span:,}")
        if full:
            _read_tensors(file, entry)
    return state


# ---------------------------------------------------------------- load


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


# ---------------------------------------------------------------- the old pickled format


_NUMPY_GLOBALS = {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
                  "numpy.dtype"}


def _legacy_load(file: Path) -> Any:
    """A `.pt` file of the old format through torch's restricted loader: tensors, plain values and numpy arrays."""
    import torch.serialization as ts

    unsafe = set(ts.get_unsafe_globals_in_checkpoint(file))
    refused = sorted(g for g in unsafe if g not in _NUMPY_GLOBALS and not g.startswith("numpy.dtypes."))
    if refused:
        raise UnsafeCheckpoint(f"{file} holds pickled references to {', '.join(refused)}: not tensors or plain "
                               "values. It is refused (loading it could run code); this checkpoint cannot be "
                               "converted, use an earlier one or start afresh")
    allowed = [np.ndarray, np.dtype, *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType"))]
    core = getattr(np, "_core", None) or np.core
    allowed.append(core.multiarray._reconstruct)
    with ts.safe_globals(allowed):
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # the restricted unpickler's refusal, or a damaged file
            raise UnsafeCheckpoint(f"{file} cannot be read by torch's restricted loader: {str(err)[:300]}") from None


def migrate(path: str | os.PathLike) -> list[Path]:
    """Convert old-format checkpoints (one, or every one under a checkpoints folder) in place; return those converted.

    Each pickled part is read by `_legacy_load` and rewritten as safetensors; state.json, replaced last, then
    lists them, and only then are the .pt files removed: an interrupted or refused conversion changes nothing.
    """
    path = Path(path)
    targets = [path] if (path / STATE_FILE).exists() else list_checkpoints(path)
    done = []
    for ckpt in targets:
        state = read_state(ckpt)
        if isinstance(state.get("files"), dict):
            continue  # already in this format
        olds = sorted(ckpt.glob("*.pt"))
        files = {"model.safetensors": {"bytes": (ckpt / "model.safetensors").stat().st_size,
                                       "crc32": content_crc(_read_tensors(ckpt / "model.safetensors", None)[0])}}
        try:
            for old in olds:
                files[old.with_suffix(".safetensors").name] = _write_part(old.with_suffix(".safetensors"),
                                                                          _legacy_load(old))
        except BaseException:
            for old in olds:
                old.with_suffix(".safetensors").unlink(missing_ok=True)
            raise
        state.update(format=FORMAT, files=files)
        state = seal_state(state)
        atomic_write_text(ckpt / STATE_FILE, json.dumps(state, indent=2, ensure_ascii=False))
        for old in olds:
            old.unlink()
        done.append(ckpt)
    return done
