"""Random access to packed blocks: memory-mapped uint16 shards; the built corpus (validation shard, manifest)."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Corpus:
    """A built corpus (02's output): the validation blocks and the manifest (the training stream's start included)."""

    root: Path
    val: BlockReader
    block_len: int
    manifest: dict[str, Any]


def load_corpus(corpus_dir: str | os.PathLike) -> Corpus:
    """Open a built corpus; the training stream is read through `producer.StreamBatches`."""
    root = Path(corpus_dir)
    path = root / MANIFEST
    if not path.exists():
        raise CorpusMissing(f"{root}: no {MANIFEST}; build the corpus first (notebooks/02_corpus)")
    manifest = read_json(path)
    if "train_start" not in manifest:
        raise CorpusMissing(f"{path}: a corpus of an earlier format (session parts); build it again "
                            "(notebooks/02_corpus)")
    block_len = int(manifest["block_len"])
    val = BlockReader(root / manifest["val"]["file"], block_len, manifest["val"]["blocks"])
    return Corpus(root, val, block_len, manifest)


def decode_block(sp: Any, block: np.ndarray, eos_id: int) -> list[str]:
    """The texts of a block between its EOS tokens (the first and last are usually parts of documents)."""
    ids = [int(t) for t in block]
    out, start = [], 0
    for i, t in enumerate(ids + [eos_id]):
        if t == eos_id:
            out.append(sp.decode(ids[start:i]))
            start = i + 1
    return out
