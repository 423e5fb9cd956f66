"""Random access to packed blocks: memory-mapped uint16 shards; the built corpus (validation shard, manifest).

The corpus artifacts are checked when read: the manifest carries a sha256 of its own content (`sha256`), of the
validation shard (`val.sha256`) and of the duplicate memory at the stream's start (`train_start.dedup_sha256`),
all computed once when 02 writes them. A file is hashed once per process (a shard of a real run is tens of MB,
about 0.1 s). The file names the manifest gives are plain names inside the corpus folder, never paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..files import read_json
from ..layout import MANIFEST as MANIFEST
from ..layout import TOKEN_DTYPE as DTYPE


class CorpusMissing(FileNotFoundError):
    """No complete corpus at the given directory."""


class CorpusCorrupt(ValueError):
    """A corpus file whose bytes differ from the checksum recorded when 02 wrote it, or a name outside the folder."""


SEAL = "sha256"  # the manifest's key holding the sha256 of the rest of the manifest
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 already checked in this process


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(1 << 24):
            digest.update(piece)
    return digest.hexdigest()


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest's content other than its seal, over a canonical JSON form."""
    body = {k: v for k, v in manifest.items() if k != SEAL}
    canonical = json.dumps(json.loads(json.dumps(body)), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its `sha256` (what `load_corpus` checks)."""
    body = {k: v for k, v in manifest.items() if k != SEAL}
    return {**body, SEAL: manifest_sha256(body)}


def corpus_file(root: Path, name: Any, what: str) -> Path:
    """`root / name` for a file name the manifest gives; CorpusCorrupt when it is not a plain name in `root`."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or name.startswith(".") or "\0" in name:
        raise CorpusCorrupt(f"{root / MANIFEST}: {what} is {name!r}, expected a file name inside {root} (the "
                            "manifest names its files, never paths); rebuild the corpus (notebooks/02_corpus)")
    return root / name


def check_file(path: Path, expected: str | None, what: str) -> None:
    """Compare a file's sha256 with the manifest's (once per process and file version); CorpusCorrupt names it."""
    if expected is None:
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if _verified.get(key) == expected:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise CorpusCorrupt(f"{path}: the {what} differs from the sha256 recorded when notebooks/02_corpus wrote it "
                            f"({actual[:12]}… now, {expected[:12]}… then): a damaged copy or disk. Rebuild the "
                            "corpus (delete the corpus folder's manifest.json and run notebooks/02_corpus)")
    _verified[key] = actual


def check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """The manifest's own sha256; a manifest of an earlier nbhelpers (none recorded) is read with a warning."""
    sealed = manifest.get(SEAL)
    if sealed is None:
        warnings.warn(f"{path}: written by an earlier nbhelpers without checksums, so its files are not verified; "
                      "run notebooks/02_corpus again to record them (the corpus is kept)", stacklevel=3)
    elif sealed != manifest_sha256(manifest):
        raise CorpusCorrupt(f"{path}: its content differs from the sha256 recorded when notebooks/02_corpus wrote it "
                            "(a damaged copy, or a hand edit); run notebooks/02_corpus again (--force) to rebuild it")


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
    check_manifest(path, manifest)
    block_len = int(manifest["block_len"])
    val_file = corpus_file(root, manifest["val"]["file"], "val.file")
    val = BlockReader(val_file, block_len, manifest["val"]["blocks"])
    check_file(val_file, manifest["val"].get(SEAL), "validation shard")
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
