"""Random access to packed blocks: memory-mapped uint16 shards, one part or all built parts."""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..files import read_json

MANIFEST = "manifest.json"
DTYPE = np.uint16


class CorpusMissing(FileNotFoundError):
    """No complete corpus at the given directory."""


class BlockReader:
    """Blocks of one shard file: `len(r)`, `r[i]` -> np.ndarray (block_len,) uint16, memory-mapped."""

    def __init__(self, path: str | os.PathLike, block_len: int, blocks: int | None = None) -> None:
        self.path = Path(path)
        self.block_len = block_len
        size = self.path.stat().st_size
        itemsize = np.dtype(DTYPE).itemsize
        if size % (block_len * itemsize):
            raise ValueError(f"{self.path}: {size} bytes is not a whole number of {block_len}-token uint16 blocks")
        n = size // (block_len * itemsize)
        if blocks is not None and blocks != n:
            raise ValueError(f"{self.path}: holds {n} blocks, the manifest says {blocks}; rebuild the corpus")
        self._mm = np.memmap(self.path, dtype=DTYPE, mode="r", shape=(n, block_len)) if n else np.zeros((0, block_len), DTYPE)

    def __len__(self) -> int:
        return self._mm.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"block {i} out of range for {n} blocks ({self.path.name})")
        return np.asarray(self._mm[i])  # (block_len,) uint16, a view of the mapped file

    def __repr__(self) -> str:
        return f"BlockReader({self.path.name}, blocks={len(self)}, block_len={self.block_len})"


class ConcatReader:
    """Several shards read as one sequence of blocks: block i of part 0 is block i overall."""

    def __init__(self, readers: list[BlockReader], block_len: int) -> None:
        self.readers = readers
        self.block_len = block_len
        self._starts = [0]
        for r in readers:
            self._starts.append(self._starts[-1] + len(r))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"block {i} out of range for {n} blocks")
        k = bisect.bisect_right(self._starts, i) - 1
        return self.readers[k][i - self._starts[k]]

    def __repr__(self) -> str:
        return f"ConcatReader(parts={len(self.readers)}, blocks={len(self)}, block_len={self.block_len})"


@dataclass(frozen=True)
class Corpus:
    """A built corpus: train and validation block readers plus the manifest."""

    root: Path
    train: BlockReader | ConcatReader
    val: BlockReader
    block_len: int
    manifest: dict[str, Any]
    parts: tuple[int, ...]  # the part indices `train` holds


def load_corpus(corpus_dir: str | os.PathLike, part: int | str = "all") -> Corpus:
    """Open a built corpus; `part`: "all" (default: every built part, in order), "latest", or a part index.

    The training loop gets "all" by default: building a further part appends blocks at the end, so block i
    stays the same block and a resumed run continues exactly.
    """
    root = Path(corpus_dir)
    path = root / MANIFEST
    if not path.exists():
        raise CorpusMissing(f"{root}: no {MANIFEST}; build the corpus first (notebooks/02_corpus)")
    manifest = read_json(path)
    block_len = int(manifest["block_len"])
    parts = manifest.get("parts", [])
    if not parts:
        raise CorpusMissing(f"{path}: no complete part yet; build the corpus first (notebooks/02_corpus)")
    if part == "all":
        chosen = list(range(len(parts)))
    elif part == "latest":
        chosen = [len(parts) - 1]
    elif isinstance(part, int) and not isinstance(part, bool) and 0 <= part < len(parts):
        chosen = [part]
    else:
        raise ValueError(f"part must be 'all', 'latest' or 0..{len(parts) - 1} (built parts), got {part!r}")
    readers = [BlockReader(root / parts[k]["file"], block_len, parts[k]["blocks"]) for k in chosen]
    train = readers[0] if len(readers) == 1 else ConcatReader(readers, block_len)
    val = BlockReader(root / manifest["val"]["file"], block_len, manifest["val"]["blocks"])
    return Corpus(root, train, val, block_len, manifest, tuple(chosen))


def decode_block(sp: Any, block: np.ndarray, eos_id: int) -> list[str]:
    """The texts of a block between its EOS tokens (the first and last are usually parts of documents)."""
    ids = [int(t) for t in block]
    out, start = [], 0
    for i, t in enumerate(ids + [eos_id]):
        if t == eos_id:
            out.append(sp.decode(ids[start:i]))
            start = i + 1
    return out
