"""Local files (a `files:` glob, the bundled prose): plain text, JSONL and parquet, read as documents."""

from __future__ import annotations

import contextlib
import glob
import gzip
import importlib.resources
import json
import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..registry import Source, SourceError
from .encoding import BOM, BadUTF8, check_not_utf16, file_hint, to_lf


def read_bytes(path: Path) -> bytes:
    """A whole file's bytes, decompressed when it is gzipped."""
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")  # a line holding only whitespace ends a document
TEXT_CHUNK = 1 << 22  # bytes read at a time from a plain-text file


def split_paragraphs(text: str) -> Iterator[str]:
    """Plain text files: documents are separated by blank lines (CR and CRLF line ends count as LF)."""
    for part in _PARAGRAPH_BREAK.split(to_lf(text)):
        part = part.strip()
        if part:
            yield part


def text_chunks(path: Path) -> Iterator[str]:
    """A (possibly gzipped) text file decoded in chunks that end at a line end; memory is one chunk.

    A chunk never splits a UTF-8 character (a newline byte is never part of one), so a bad byte is found at
    the same offset as when the whole file is decoded at once. A chunk may end at a CR (old Mac line ends) but
    never between the CR and LF of a CRLF. A UTF-8 BOM at the start is dropped; UTF-16 is refused (BadUTF8).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        offset = 0
        rest = b""
        size = min(TEXT_CHUNK, 1 << 16)  # a small first chunk: the first documents come out at once
        while True:
            block = fh.read(size)
            size = min(2 * size, TEXT_CHUNK)
            data = rest + block
            if block:  # a CR as the last byte may be half a CRLF: not cut there
                cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
                if cut == 0:  # no line end yet: read on
                    rest = data
                    continue
                data, rest = data[:cut], data[cut:]
            if data:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise BadUTF8(f"{path}: not UTF-8 at byte offset {offset + err.start} ({err.reason})"
                                  f"{file_hint(path)}") from None
                if "\x00" in text:
                    check_not_utf16(path)
                yield text.removeprefix(BOM) if offset == 0 else text
                offset += len(data)
            if not block:
                return


def stream_paragraphs(path: Path) -> Iterator[str]:
    """Plain text files, streaming: the same documents as `split_paragraphs` on the whole text."""
    carry = ""  # the text after the last break: a document that may go on in the next chunk
    for text in text_chunks(path):
        parts = _PARAGRAPH_BREAK.split(carry + to_lf(text))
        carry = parts.pop()
        for part in parts:
            part = part.strip()
            if part:
                yield part
    carry = carry.strip()
    if carry:
        yield carry


def read_jsonl(path: Path, field: str) -> Iterator[str]:
    """The texts of a (possibly gzipped) JSONL file, line by line; a bad line is named by number and offset."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        offset = 0
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise BadUTF8(f"{path} line {lineno} (file offset {offset}): not UTF-8 at byte offset {err.start} "
                              f"({err.reason}){file_hint(path)}") from None
            if "\x00" in line:
                check_not_utf16(path)
            if lineno == 1:
                line = line.removeprefix(BOM)
            offset += len(raw)
            if line:
                yield _parse_json_line(line, path, lineno, field)


def paths(src: Source) -> list[Path]:
    """The files of a `files:` or bundled source, sorted; none matching is an error naming the pattern."""
    if src.kind == "bundled":
        return [Path(str(importlib.resources.files("nbhelpers") / "data" / src.location))]
    matched = sorted(glob.glob(src.location, recursive=True))
    if not matched:
        raise SourceError(f"source {src.name!r}: no files match {src.location!r}")
    files, others = regular_files(matched)
    if not files:
        raise SourceError(f"source {src.name!r}: {src.location!r} matches no regular file, only "
                          f"{'; '.join(others)}")
    warn_skipped(others)
    return files


class NotAFileWarning(UserWarning):
    """A path a glob matched that is not a regular file (a FIFO, socket, device, folder): it is not read."""


_WARNED: set[str] = set()  # paths warned about in this process: a glob is expanded again each epoch


def regular_files(matched: list[str]) -> tuple[list[Path], list[str]]:
    """(the regular files among glob matches, "PATH (what it is)" for the others).

    Opening a FIFO blocks until something writes to it, and a device may never end: only regular files (or
    links to them) are read.
    """
    files, others = [], []
    for name in matched:
        try:
            mode = os.stat(name).st_mode
        except OSError as err:  # a link to nothing, or a file removed since the glob
            what = f"unreadable ({err.strerror or err})"
        else:
            if stat.S_ISREG(mode):
                files.append(Path(name))
                continue
            what = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        others.append(f"{name} ({what})")
    return files, others


def warn_skipped(others: list[str]) -> None:
    """A NotAFileWarning for each path regular_files left out, once a process (a glob is expanded each epoch)."""
    for other in others:
        if other not in _WARNED:
            _WARNED.add(other)
            warnings.warn(f"skipped {other}: not a regular file (only regular files are read)", NotAFileWarning,
                          stacklevel=3)


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def iter_files(src: Source, on_bad_utf8: str, skipped: Counter | None) -> Iterator[str]:
    """The documents of a `files:` source's files in order; `skipped` counts files left out as not UTF-8."""
    for path in paths(src):
        # skip: a file is checked whole before any of it is used, so it gives all its documents or none
        if on_bad_utf8 == "skip" and path.suffix != ".parquet" and not utf8_valid(path):
            if skipped is not None:
                skipped[str(path)] += 1
            continue
        yield from file_docs(path, src.text_field)


def file_docs(path: Path, field: str) -> Iterator[str]:
    """One local file's documents, front to back: JSON lines, a parquet text column, or blank-line paragraphs.

    The one way a whole file is read: `iter_texts` and the corpus's reader of unsliceable (gzipped) sources
    both call it; the corpus's slices (slices.py) give the same documents a piece at a time.
    """
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        return read_jsonl(path, field)
    if path.suffix == ".parquet":
        return _parquet_docs(path, field)
    return stream_paragraphs(path)


def _parquet_docs(path: Path, field: str) -> Iterator[str]:
    """The texts of a parquet file's column, batch by batch (Arrow strings are UTF-8 already; nulls skipped)."""
    table = parquet_file(path, field)
    with parquet_errors(path):
        for batch in table.iter_batches(columns=[field], batch_size=1024):
            yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))


@contextlib.contextmanager
def parquet_errors(path: Path | str, what: str = "") -> Iterator[None]:
    """pyarrow's errors on a damaged parquet file (which name no file) as a SourceError naming it."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise SourceError(f"{path}{what}: not a readable parquet file ({type(err).__name__}: {str(err)[:300]}); "
                          "the file is damaged or cut short: copy it again, or leave it out of the glob") from None


def _is_text_type(kind: Any) -> bool:
    """Whether an Arrow type holds strings: plain, large, view, or dictionary-encoded ones."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):  # parquet's dictionary pages, kept as such (pandas categoricals, read_dictionary)
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def parquet_file(path: Path | str, field: str) -> Any:
    """A pyarrow ParquetFile that has the text column, or a SourceError listing the columns it has."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with parquet_errors(path):
        table = pq.ParquetFile(path)
    if field not in table.schema_arrow.names:
        raise SourceError(f"{path}: no column {field!r}; columns: {table.schema_arrow.names}")
    kind = table.schema_arrow.field(field).type
    if not (_is_text_type(kind) or pa.types.is_null(kind)):  # null: a column with no values, which gives no documents
        raise SourceError(f"{path}: column {field!r} holds {kind}, not text (string); name the text column with "
                          "files:GLOB#COLUMN")
    return table


def json_text(line: str, field: str) -> str:
    """The string `field` of one JSON object line; ValueError says what is wrong with the line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get(field), str):
        raise ValueError(f"expected an object with a string field {field!r}")
    return row[field]


def _parse_json_line(line: str, path: Path, lineno: int, field: str) -> str:
    try:
        return json_text(line, field)
    except ValueError as err:
        raise SourceError(f"{path} line {lineno}: {err}") from None


def utf8_valid(path: Path) -> bool:
    """Whether the whole file decodes as UTF-8 (read in chunks)."""
    try:
        for _ in text_chunks(path):
            pass
    except BadUTF8:
        return False
    return True
