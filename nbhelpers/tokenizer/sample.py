"""The tokenizer's training text: documents cut into lines SentencePiece takes, and the sample (plus held-out text) 01 writes."""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sources import BadUTF8, file_hint
from .hf import TokenizerError


def split_line(line: str, max_bytes: int) -> list[str]:
    """Cut a line into pieces of at most `max_bytes` UTF-8 bytes (SentencePiece drops longer lines)."""
    if len(line) * 4 <= max_bytes or len(line.encode("utf-8")) <= max_bytes:
        return [line]
    pieces, start, size = [], 0, 0
    for i, ch in enumerate(line):
        width = len(ch.encode("utf-8"))
        if size + width > max_bytes:
            pieces.append(line[start:i])
            start, size = i, 0
        size += width
    pieces.append(line[start:])
    return pieces


def document_lines(text: str, max_bytes: int) -> Iterator[str]:
    """The non-empty lines of a document, long ones split; SentencePiece trains on lines."""
    for line in text.split("\n"):
        line = line.strip()
        if line:
            yield from split_line(line, max_bytes)


def _file_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file; a bad byte raises BadUTF8 naming the file, line and byte offset."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below; the open error gets its own message
    except OSError as err:
        raise TokenizerError(f"{path}: cannot read the training file ({err.strerror or err})") from None
    with fh:
        offset = 0
        for lineno, raw in enumerate(fh, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise BadUTF8(f"{path}: not UTF-8 at byte offset {offset + err.start} "
                              f"(line {lineno}, {err.reason}){file_hint(path)}") from None
            offset += len(raw)


_FILE_SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".json", ".csv", ".tsv", ".gz", ".xml", ".html")


def _looks_like_a_file(item: str) -> bool:
    """One word naming an existing file, or ending like a text file's name."""
    if len(item) > 4096 or any(c.isspace() for c in item):
        return False
    if item.lower().endswith(_FILE_SUFFIXES):
        return True
    try:
        return Path(item).expanduser().is_file()
    except (OSError, ValueError, RuntimeError):  # too long for the filesystem, a NUL, "~nobody": text
        return False


def input_texts(inputs: Any, misses: list[str] | None = None) -> Iterator[str]:
    """A path (str or PathLike) is one file; in an iterable, Path items are files and str items texts, except in a
    list or tuple whose every item is a str that looks like a file name: those are files. Other str items that
    look like file names are added to `misses` (the caller warns)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [Path(inputs)]
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(i, str) and _looks_like_a_file(i)
                                                              for i in inputs):
        inputs = [Path(i).expanduser() for i in inputs]  # ["data/train.txt"]: the caller means files
    for item in inputs:
        if isinstance(item, str) and misses is not None and _looks_like_a_file(item):
            misses.append(item)
        if isinstance(item, os.PathLike):
            yield from _file_lines(Path(item))
        elif isinstance(item, str):
            yield item
        else:
            raise TokenizerError(f"training input must be text (str) or a file path (Path), got {type(item).__name__}")


@dataclass
class TextSample:
    """A shuffled training sample written to `path`, plus held-out documents for the statistics."""

    path: Path
    lines: int = 0
    chars: int = 0
    documents: int = 0
    heldout: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what differs from what was asked (also warned)

    @property
    def heldout_chars(self) -> int:
        return sum(len(t) for t in self.heldout)


def sample_text(documents: Iterable[str], path: str | os.PathLike, sample_chars: int, heldout_chars: int = 0,
                seed: int = 0, max_sentence_length: int = 16384, buffer_lines: int = 100_000,
                heldout_every: int = 20, progress: bool = True, stall_docs: int = 1000) -> TextSample:
    """Write up to `sample_chars` characters of lines from `documents`, shuffled in a bounded buffer, to `path`.

    About one document in `heldout_every` goes, whole, to the held-out list (until `heldout_chars`) and
    none of its text is trained on. Memory stays bounded by `buffer_lines` lines plus the held-out text.

    A repeating source with little text could bring back only held-out documents, forever: after a run of
    `stall_docs` (or four times the held-out count) such documents, half the held-out documents (at least one)
    go back to training and nothing more is held out. That, and a stream that ends before `sample_chars`, is
    said in `notes` and warned.
    """
    from tqdm.auto import tqdm

    if sample_chars <= 0:
        raise TokenizerError(f"sample_chars must be positive, got {sample_chars}")
    rng = random.Random(seed)
    sample = TextSample(Path(path))
    sample.path.parent.mkdir(parents=True, exist_ok=True)
    buffer: list[str] = []
    held = 0
    bar = tqdm(total=sample_chars, unit="char", unit_scale=True, desc="sampling text", disable=not progress)
    with open(sample.path, "w", encoding="utf-8") as out:

        def emit(line: str) -> None:
            out.write(line + "\n")
            sample.lines += 1

        held_keys: list[bytes] = []  # a repeating source (a new epoch) must not bring held-out text back
        held_set: set[bytes] = set()
        streak = 0  # documents in a row that were already held out
        for doc in documents:
            key = hashlib.blake2b(doc.encode("utf-8"), digest_size=16).digest() if heldout_chars else b""
            if key in held_set:
                streak += 1
                if streak > max(stall_docs, 4 * len(held_keys)):  # every distinct document is held out
                    heldout_chars = held = _give_back(sample, held_keys, held_set)
                    streak = 0
                continue
            streak = 0
            if held < heldout_chars and rng.randrange(heldout_every) == 0:
                sample.heldout.append(str(doc))
                held_keys.append(key)
                held_set.add(key)
                held += len(doc)
                continue
            sample.documents += 1
            for line in document_lines(doc, max_sentence_length):
                line = line[: sample_chars - sample.chars]
                sample.chars += len(line)
                bar.update(len(line))
                if len(buffer) < buffer_lines:
                    buffer.append(line)
                else:  # emit a random buffered line and keep the new one: a bounded shuffle
                    j = rng.randrange(buffer_lines)
                    emit(buffer[j])
                    buffer[j] = line
                if sample.chars >= sample_chars:
                    break
            if sample.chars >= sample_chars:
                break
        rng.shuffle(buffer)
        for line in buffer:
            emit(line)
    bar.close()
    if sample.chars < sample_chars:
        _note(sample, f"the sources ran out after {sample.chars:,} characters of training text ({sample.documents:,} "
                      f"documents; tokenizer.sample_chars asks for {sample_chars:,})")
    return sample


def _note(sample: TextSample, text: str) -> None:
    sample.notes.append(text)
    warnings.warn(text, stacklevel=3)


def _give_back(sample: TextSample, keys: list[bytes], held: set[bytes]) -> int:
    """Move the later half of the held-out documents (at least one) back to training; return the held-out chars."""
    n = len(sample.heldout)
    keep = n // 2
    back = sample.heldout[keep:]
    for key in keys[keep:]:
        held.discard(key)
    del sample.heldout[keep:], keys[keep:]
    kept = sum(len(t) for t in sample.heldout)
    _note(sample, f"the sources hold only {n} distinct document(s) that the held-out sample had taken, and a "
                  f"repeating source brought back nothing else: {len(back)} went back to training "
                  f"({sum(map(len, back)):,} characters); the held-out sample is {keep} document(s), {kept:,} "
                  "characters (tokenizer.heldout_chars asks for more). Add text to the mixture for a fuller one")
    return kept
