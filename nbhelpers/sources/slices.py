"""Slices of a local file (byte ranges cut at paragraph or line ends, runs of parquet row groups) and their documents.

corpus/pieces.py plans a source's slices; a worker reads each one by itself with range_docs / row_group_docs, which
give the same documents, and name errors the same way, as reading the whole file (local.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..registry import SourceError
from .encoding import BOM, BadUTF8, check_not_utf16, file_hint
from .local import json_text, parquet_errors, parquet_file, split_paragraphs

RANGE_BYTES = 192_000  # a slice of a plain-text or JSONL file: about 64,000 Japanese characters (3 bytes each)
FIRST_RANGE_BYTES = 24_000  # the first slices of a file are smaller (sizes double): the first tokens come out at once
PARAGRAPH_ENDS = (b"\n\n", b"\n\r\n", b"\r\r")  # blank lines a plain-text file is cut at (LF, CRLF, CR line ends)
LINE_ENDS = (b"\n",)  # a JSONL file is cut at line ends


def file_kind(path: Path) -> str | None:
    """How a file can be read in slices: "jsonl" / "text" (byte ranges), "parquet" (row groups); None for gzip."""
    if path.name.endswith(".gz"):
        return None
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix, "text")


def _next_break(fh: Any, pos: int, size: int, ends: tuple[bytes, ...] = PARAGRAPH_ENDS) -> int:
    """Offset just after the first of `ends` at or after `pos`, or `size` when there is none.

    Cutting a plain-text file there gives the same documents as splitting the whole text: the left side ends
    with a paragraph break, and the right side's leading whitespace is stripped from its first document.
    """
    fh.seek(pos)
    base, carry = pos, b""
    keep = max(map(len, ends)) - 1  # a break may straddle two reads
    while True:
        block = fh.read(1 << 16)
        if not block:
            return size
        data = carry + block
        hits = [(k, len(e)) for e in ends if (k := data.find(e)) >= 0]
        if hits:
            k, n = min(hits)
            return base + k + n
        carry = data[len(data) - keep:] if keep else b""
        base += len(data) - len(carry)


def text_ranges(path: Path, first: int | None = None, size: int | None = None,
                ends: tuple[bytes, ...] = PARAGRAPH_ENDS) -> Iterator[tuple[int, int]]:
    """Byte ranges of a file, each ending just after one of `ends`; sizes double from `first` to `size`."""
    first, size = first or FIRST_RANGE_BYTES, size or RANGE_BYTES
    total = path.stat().st_size
    start, step = 0, first
    with open(path, "rb") as fh:
        while start < total:
            end = _next_break(fh, start + step, total, ends) if start + step < total else total
            yield start, end
            start, step = end, min(2 * step, size)


def _line_at(path: str, offset: int) -> tuple[int, int]:
    """(line number, the line's first byte) of a byte offset in a file: only for error messages."""
    lineno, line_start, pos = 1, 0, 0
    with open(path, "rb") as fh:
        while pos < offset:
            block = fh.read(min(1 << 20, offset - pos))
            if not block:
                break
            n = block.count(b"\n")
            if n:
                lineno += n
                line_start = pos + block.rfind(b"\n") + 1
            pos += len(block)
    return lineno, line_start


def row_group_ranges(path: Path, field: str, first: int | None = None,
                     size: int | None = None) -> Iterator[tuple[int, int]]:
    """Runs of a parquet file's row groups holding about `size` bytes of the text column (`first` for the first)."""
    first, size = first or FIRST_RANGE_BYTES, size or RANGE_BYTES
    meta = parquet_file(path, field).metadata
    column = [meta.schema.column(i).path for i in range(meta.num_columns)].index(field)
    start, got, want = 0, 0, first
    for i in range(meta.num_row_groups):
        got += meta.row_group(i).column(column).total_uncompressed_size
        if got >= want:
            yield start, i + 1
            start, got, want = i + 1, 0, min(2 * want, size)
    if start < meta.num_row_groups:
        yield start, meta.num_row_groups


def row_group_docs(path: str, field: str, start: int, end: int) -> list[str]:
    """The texts of row groups [start, end) of a parquet file (nulls skipped, as the streaming reader does)."""
    table = parquet_file(path, field)
    with parquet_errors(path, f" (row groups {start} to {end - 1})"):
        column = table.read_row_groups(range(start, end), columns=[field])
    return [t for t in column.column(0).to_pylist() if isinstance(t, str)]


def range_docs(kind: str, path: str, start: int, end: int, field: str = "text") -> list[str]:
    """The paragraphs ("text") or JSON lines' texts ("jsonl") of bytes [start, end), errors named as when streaming."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        at = start + err.start
        if kind == "jsonl":  # the line, and the offset in it
            lineno, line_start = _line_at(path, at)
            raise BadUTF8(f"{path} line {lineno} (file offset {line_start}): not UTF-8 at byte offset "
                          f"{at - line_start} ({err.reason}){file_hint(path)}") from None
        raise BadUTF8(f"{path}: not UTF-8 at byte offset {at} ({err.reason}){file_hint(path)}") from None
    if "\x00" in text:
        check_not_utf16(path)
    if start == 0:
        text = text.removeprefix(BOM)
    if kind != "jsonl":
        return list(split_paragraphs(text))
    docs = []
    for i, line in enumerate(text.split("\n")):
        line = line.strip()
        if line:
            try:
                docs.append(json_text(line, field))
            except ValueError as err:  # the line number is counted only now, on the error's way out
                raise SourceError(f"{path} line {_line_at(path, start)[0] + i}: {err}") from None
    return docs
