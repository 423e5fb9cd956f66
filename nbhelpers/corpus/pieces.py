"""Pieces, the unit of reading and of cleaning (one worker task), and the plan of a sliceable source's epoch.

Sliceable sources (plain-text, JSONL and parquet files, the bundled prose, Debian's texts, generated problems)
are planned as slices (`Piece`: a byte range, a run of row groups, one Debian file, numbered problems) that a
worker reads by itself (`read_piece`), so no document crosses a process boundary. The plan of an epoch is a
pure function of the source and the seed, so a resume at piece `seq` plans again and passes over the first
`seq` pieces. With a shuffle, each piece's documents are shuffled, and the pieces in windows of WINDOW (the
first SMALL stay first: they are small and get the first tokens out fast). Streamed sources (the hub, gzipped
files) are read into pieces by a reader thread: reading.py, whose `piece_stream` gives both kinds as one
sequence.
"""


from __future__ import annotations

import dataclasses
import itertools
import random
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import arithmetic
from .. import sources as src_mod
from ..sources import Source

PIECE_PROBLEMS = 512  # generated problems per piece (about 60,000 characters)
FIRST_PIECE_PROBLEMS = 64
WINDOW = 32  # slices of a sliceable source shuffled together (about 6 MB of text), besides each slice's documents
SMALL = 3  # the first slices of a file are small (24, 48, 96 KB) and are not moved by the shuffle


@dataclass(frozen=True)
class Piece:
    """One piece of a source: a slice a worker reads by itself, or documents a reader thread already read."""

    kind: str  # text | jsonl (bytes [start, end) of a file), parquet (row groups), debian (one file),
    # arithmetic (problems [start, end)), docs (a streamed source's documents, already read and shuffled)
    path: str = ""
    start: int = 0
    end: int = 0
    seed: int = 0  # files: shuffle the piece's documents with this seed (0 = file order); arithmetic: generator seed
    field: str = "text"  # jsonl and parquet: the field holding the text
    docs: tuple[str, ...] = ()


def read_piece(piece: Piece) -> list[str]:
    """The documents of one piece (run in a worker process, or in this one)."""
    if piece.kind == "docs":
        return list(piece.docs)
    if piece.kind == "arithmetic":
        return [p.text() for p in arithmetic.problems(piece.seed, n=piece.end - piece.start)]
    if piece.kind == "parquet":
        docs = src_mod.row_group_docs(piece.path, piece.field, piece.start, piece.end)
    elif piece.kind == "debian":
        docs = src_mod.debian_docs(Path(piece.path))
    else:
        docs = src_mod.range_docs(piece.kind, piece.path, piece.start, piece.end, piece.field)
    if piece.seed:
        random.Random(piece.seed).shuffle(docs)
    return docs


def sliceable(src: Source) -> bool:
    """Whether workers can read the source in slices: generated problems, Debian's texts, or files without gzip."""
    if src.kind in ("arithmetic", "debian"):
        return True
    return src.kind in ("files", "bundled") and all(src_mod.file_kind(p) for p in src_mod.paths(src))


def utf8_ok(path: Path, on_bad_utf8: str, skipped: Counter | None, checked: dict[str, bool] | None,
             check: Any = src_mod.utf8_valid) -> bool:
    """With on_bad_utf8="skip", whether a file is whole UTF-8 (decided once: `checked` keeps the verdicts).

    A parquet file is not text (its strings are UTF-8 already): it is always read, as sources.iter_texts does.
    """
    if on_bad_utf8 != "skip" or path.suffix == ".parquet":
        return True
    ok = checked.get(str(path)) if checked is not None else None
    if ok is None:
        ok = check(path)
        if checked is not None:
            checked[str(path)] = ok
        if not ok and skipped is not None:
            skipped[str(path)] += 1
    return ok


def _debian_utf8(path: Path) -> bool:
    try:
        src_mod.decode_utf8(src_mod.read_bytes(path), path)
    except src_mod.BadUTF8:
        return False
    return True


def iter_slices(source: Source | str, seed: int = 0, on_bad_utf8: str = "error", skipped: Counter | None = None,
                checked: dict[str, bool] | None = None) -> Iterator[Piece]:
    """One pass over a sliceable source as pieces, in file order (generated sources are endless).

    With on_bad_utf8="skip" each file is decoded once before its slices are planned; `checked` remembers the
    verdicts across passes (epochs), so a file is read and counted in `skipped` once.
    """
    src = src_mod.resolve(source) if isinstance(source, str) else source
    if src.kind == "arithmetic":
        start, n = 0, FIRST_PIECE_PROBLEMS
        while True:
            # each piece has its own generator seed, so that any worker can make piece k without pieces 0..k-1
            yield Piece("arithmetic", "", start, start + n, (seed * 1_000_003 + start) & 0x7FFFFFFFFFFFFFFF)
            start, n = start + n, min(2 * n, PIECE_PROBLEMS)
    if src.kind == "debian":  # one file a piece: the HTML and troff parsing runs in the workers
        for path in src_mod.require_debian_files():
            if utf8_ok(path, on_bad_utf8, skipped, checked, _debian_utf8):
                yield Piece("debian", str(path))
        return
    for path in src_mod.paths(src):
        kind = src_mod.file_kind(path)
        if kind == "parquet":  # Arrow strings are UTF-8 already
            for start, end in src_mod.row_group_ranges(path, src.text_field):
                yield Piece("parquet", str(path), start, end, 0, src.text_field)
            continue
        if not utf8_ok(path, on_bad_utf8, skipped, checked):  # a file is skipped whole, before any of it is used
            continue
        ends = src_mod.LINE_ENDS if kind == "jsonl" else src_mod.PARAGRAPH_ENDS
        for start, end in src_mod.text_ranges(path, ends=ends):
            yield Piece(kind or "text", str(path), start, end, 0, src.text_field)


def _shuffled(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Seeded shuffle buffer: bounded memory (`size` items), deterministic order."""
    if size <= 1:
        yield from items
        return
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


def epoch_seed(seed: int, epoch: int, name: str) -> int:
    """The seed of one source's epoch: every source and epoch has its own order."""
    return (seed + 1009 * epoch) ^ zlib.crc32(name.encode())


def plan_epoch(src: Source, name: str, seed: int, epoch: int, shuffle: bool, on_bad_utf8: str, skipped: Counter,
             checked: dict[str, bool]) -> Iterator[Piece]:
    """An epoch of a sliceable source in reading order: each slice's documents and the slices shuffled by seed."""
    pieces = iter_slices(src, seed + 1009 * epoch, on_bad_utf8, skipped, checked)
    if not shuffle or src.kind == "arithmetic":  # generated problems are random already
        return pieces
    rng_seed = epoch_seed(seed, epoch, name)
    seeds = random.Random(rng_seed + 1)
    seeded = (dataclasses.replace(p, seed=seeds.getrandbits(62) | 1) for p in pieces)
    head = list(itertools.islice(seeded, SMALL))  # the first, small slices stay first (their documents are shuffled)
    return itertools.chain(head, _shuffled(seeded, WINDOW, random.Random(rng_seed)))
