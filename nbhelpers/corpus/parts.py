"""The training stream on disk: numbered parts of whole blocks, each knowing the stream position it starts from.

One place for parts. A parts folder (`producer.parts_dir`: scratch on Kaggle and Colab, the run's corpus/
folder elsewhere) holds

    part-00012.bin    uint16 blocks of `block_len` tokens: the stream in order (readers shuffle within a part)
    part-00012.json   written last, so a part is complete when it exists: blocks, documents, tokens by source,
                      and the stream state at the part's start and end (per source, and the duplicate count)
    dedup.u64         the duplicate memory's hashes in the order they were added: a state's `dedup` count is
                      a prefix of it
    error-<run>.json  the producer's error, for the training processes to raise

Every part holds `part_blocks` blocks except the last of a stream that ends (`corpus.on_exhausted="stop"`),
which says `"last": true`. A part ends at its last full block; the rest of the document crossing it is dropped,
so every part starts with a whole document and its start state is a plain stream position. The stream of
parts is a pure function of the corpus settings, the tokenizer and the sources: a part written by another
session (or by 02, ahead) is the same part, and is used as it is when its start state is the one expected.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_file, atomic_write_text, read_json
from .mixing import Mixer
from .packing import DTYPE, BlockWriter

DEDUP_FILE = "dedup.u64"


def fill(writer: BlockWriter, mixer: Mixer, bar: Any = None) -> bool:
    """Pack runs of documents until the shard is full; False when the stream ended first."""
    add, take = writer.add, mixer.take
    pending = 0  # tokens not yet shown: the bar moves in steps of 64k, not per run
    while not writer.full:
        got = take(writer.target - writer.tokens)  # the run's last document is the one that fills the shard
        if got is None:
            break
        name, tokens, docs = got
        pending += add(tokens, name, docs)
        if bar is not None and pending >= 65536:
            bar.update(pending)
            pending = 0
    if bar is not None:
        bar.update(pending)
    return writer.full


def write_shard(path: Path, block_len: int, blocks: int, mixer: Mixer, bar: Any = None) -> tuple[BlockWriter, bool, int]:
    """Write one shard atomically (files.atomic_file); returns the writer, whether it filled, and its block count."""
    with atomic_file(path) as fh:
        writer = BlockWriter(fh, block_len, blocks)
        filled = fill(writer, mixer, bar)
        n = writer.finish()
    return writer, filled, n


def read_complete(path: str | os.PathLike) -> Any:
    """A JSON file written atomically, or None when it is not there (or broken: what was writing it died)."""
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return None


def stream_state(mixer: Mixer) -> dict[str, Any]:
    """Where the mixer's stream stands: per source, and how many hashes the duplicate memory holds."""
    return {"sources": mixer.state(), "dedup": mixer.dedup_count}


def same_state(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two stream states are the same position (statistics included: they follow from it)."""
    return a is not None and b is not None and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class PartStore:
    """A parts folder of one corpus fingerprint: part files, their metadata, the duplicate log."""

    def __init__(self, root: str | os.PathLike, fingerprint: str, block_len: int, part_blocks: int) -> None:
        if part_blocks < 1:
            raise ValueError(f"a part must hold at least one block, got part_blocks={part_blocks}")
        self.root = Path(root)
        self.fingerprint, self.block_len, self.part_blocks = fingerprint, int(block_len), int(part_blocks)

    def path(self, k: int) -> Path:
        return self.root / f"part-{k:05d}.bin"

    def meta_path(self, k: int) -> Path:
        return self.root / f"part-{k:05d}.json"

    def meta(self, k: int) -> dict[str, Any] | None:
        """Part k's metadata when it is complete (and of this corpus), else None."""
        meta = read_complete(self.meta_path(k))
        return meta if meta is not None and meta.get("fingerprint") == self.fingerprint else None

    def blocks(self, k: int, meta: dict[str, Any]) -> np.ndarray:
        """Part k's blocks, (n, block_len) uint16, memory-mapped (n may be 0 at the end of a stream)."""
        n = int(meta["blocks"])
        if not n:
            return np.zeros((0, self.block_len), DTYPE)
        path = self.path(k)
        if path.stat().st_size != n * self.block_len * np.dtype(DTYPE).itemsize:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, but its metadata says {n} blocks of "
                             f"{self.block_len} tokens; delete the folder {self.root} and run again")
        return np.memmap(path, dtype=DTYPE, mode="r", shape=(n, self.block_len))

    def complete(self) -> list[int]:
        """Indices of the complete parts in the folder."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.glob("part-*.json"):
            try:
                found.append(int(p.stem.split("-")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(found)

    def remove(self, keep: Any) -> list[int]:
        """Delete the parts whose index `keep(k)` rejects (metadata first: a part without it is incomplete)."""
        gone = [k for k in self.complete() if not keep(k)]
        for k in gone:
            self.meta_path(k).unlink(missing_ok=True)
            self.path(k).unlink(missing_ok=True)
        return gone

    def clean(self) -> None:
        """Remove what a killed producer left half written, and part files without metadata."""
        if not self.root.is_dir():
            return
        complete = set(self.complete())
        for f in self.root.iterdir():
            if f.suffix == ".tmp" or (f.name.startswith("part-") and f.suffix == ".bin"
                                      and int(f.stem.split("-")[1]) not in complete):
                f.unlink(missing_ok=True)

    def disk_bytes(self, pattern: str = "*") -> int:
        """Bytes the folder's files (matching `pattern`) hold now."""
        total = 0
        for f in self.root.glob(pattern):
            with contextlib.suppress(FileNotFoundError):  # the producer deletes parts as they are read
                total += f.stat().st_size
        return total

    # ------------------------------------------------------------ the duplicate log

    @property
    def dedup_path(self) -> Path:
        return self.root / DEDUP_FILE

    def dedup_count(self) -> int:
        """Hashes in the log file."""
        path = self.dedup_path
        return path.stat().st_size // 8 if path.exists() else 0

    def read_dedup(self, count: int) -> np.ndarray:
        """The first `count` hashes of the log (a copy)."""
        if count == 0:
            return np.zeros(0, np.uint64)
        have = self.dedup_count()
        if have < count:
            raise ValueError(f"{self.dedup_path}: {have} hashes, the stream position needs {count}; delete the folder "
                             f"{self.root} and run again")
        return np.array(np.memmap(self.dedup_path, dtype=np.uint64, mode="r", shape=(count,)))

    def ensure_dedup(self, hashes: np.ndarray, dedup: bool = True) -> None:
        """Make the log start with `hashes` (a longer log of the same stream, from parts ahead, is kept)."""
        if not dedup:
            return
        n = len(hashes)
        if self.dedup_count() < n or not np.array_equal(self.read_dedup(n), hashes):
            self.write_dedup(hashes)

    def write_dedup(self, hashes: np.ndarray) -> None:
        """Replace the log with `hashes` (atomically)."""
        with atomic_file(self.dedup_path) as fh:
            np.asarray(hashes, dtype=np.uint64).tofile(fh)

    def append_dedup(self, hashes: np.ndarray, at: int) -> None:
        """Write `hashes` as log entries `at`, `at + 1`, ... (what a killed producer appended after `at` is cut)."""
        with open(self.dedup_path, "r+b" if self.dedup_path.exists() else "wb") as fh:
            fh.truncate(at * 8)
            fh.seek(at * 8)
            np.asarray(hashes, dtype=np.uint64).tofile(fh)
            fh.flush()
            os.fsync(fh.fileno())

    # ------------------------------------------------------------ writing a part

    def write(self, k: int, mixer: Mixer, bar: Any = None) -> dict[str, Any]:
        """Write part k from the mixer's stream (which stands at the part's start); returns its metadata."""
        self.root.mkdir(parents=True, exist_ok=True)
        start = stream_state(mixer)
        writer, filled, n = write_shard(self.path(k), self.block_len, self.part_blocks, mixer, bar)
        end = stream_state(mixer)
        if mixer.dedup is not None:
            self.append_dedup(mixer.dedup.array(start["dedup"]), start["dedup"])
        meta = {"fingerprint": self.fingerprint, "index": k, "file": self.path(k).name, "blocks": n,
                "tokens": n * self.block_len, "documents": writer.documents, "tail_tokens_dropped": writer.tail_dropped,
                "tokens_by_source": dict(writer.tokens_by_source), "last": not filled, "stopped": mixer.stopped,
                "start": start, "end": end}
        atomic_write_text(self.meta_path(k), json.dumps(meta, ensure_ascii=False))
        return meta
