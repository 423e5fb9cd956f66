"""A checkpoint's parts: any state (tensors, numpy arrays, plain values) as one safetensors file plus a JSON skeleton.

Nothing is pickled: the skeleton rides in the safetensors header's metadata, and each part's `files` entry in
state.json records its size and a CRC-32 of its content, checked when the part is read.
"""

from __future__ import annotations

import errno
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointIncomplete

_STRUCTURE = "nbhelpers_structure"  # safetensors metadata key holding a part's JSON skeleton


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

