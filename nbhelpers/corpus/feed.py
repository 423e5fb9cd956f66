"""One source of the mixer: its pieces in flight on the workers, each document judged once (dropped, duplicate,
kept), and where the source stands for a resume."""

from __future__ import annotations

from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import sources as sources_mod
from .clean import CleanedBatch, CleanStats
from .reading import piece_stream

if TYPE_CHECKING:  # annotations only: the mixer imports this module
    from .mixing import Mixer

FIRST_KEEP_WINDOW = 20_000  # a source whose first this-many documents are all dropped is an error, not a hang
_EPOCH_SALT = 0x9E3779B97F4A7C15  # repeated epochs must not count as duplicates of the first


class Document(str):
    """A cleaned document: a `str` (so any code taking text takes it) that also knows its `source`."""

    source: str

    def __new__(cls, text: str, source: str) -> Document:
        obj = super().__new__(cls, text)
        obj.source = source
        return obj

    def __reduce__(self):
        return (Document, (str(self), self.source))


class SourceFeed:
    """One source of a Mixer: pieces in, cleaned and deduplicated documents out, in a fixed order."""

    def __init__(self, mixer: Mixer, index: int, name: str, weight: float, state: dict | None) -> None:
        self.mixer, self.index, self.name, self.weight = mixer, index, name, weight
        self.source = sources_mod.resolve(name)
        # Pieces in flight: workers + 1 for the source drawn most, fewer for one drawn less (a source at a tenth
        # of the stream needs a new piece ten times less often), 1 in this process. Pieces cleaned but never
        # consumed are work lost when the stream is closed.
        self.prefetch = mixer.feed_prefetch[index]
        state = state or {}
        self.epoch = state.get("epoch", 0)
        self.seq = state.get("piece", 0)  # the piece being consumed, in this epoch's order
        self.position = state.get("position")  # streamed sources: where that piece starts
        self._resume_cursor = state.get("in_piece", 0)  # its documents consumed before a resume
        self.kept_ever = state.get("kept", 0)
        self.units = state.get("units", 0)  # tokens (or characters) this source contributed
        self.stats = CleanStats.from_dict(state["stats"]) if "stats" in state else CleanStats()
        self.skipped: Counter = Counter(state.get("skipped_files", {}))
        self._skip_now: Counter = Counter()
        cfg = mixer.cfg
        self.pieces = piece_stream(
            self.source, name, seed=mixer.seed, shuffle_buffer=cfg.shuffle_buffer, on_exhausted=cfg.on_exhausted,
            on_bad_utf8=cfg.on_bad_utf8, epoch=self.epoch, seq=self.seq, position=self.position,
            skipped=self._skip_now, checked={path: False for path in self.skipped})  # each bad file counted once
        self.pending: deque = deque()
        self.batch: CleanedBatch | None = None
        self.hashes: list[int] = []  # the current piece's hashes, salted by epoch
        self.known: list[bool] = []  # which of them the duplicate memory's sorted part holds
        self.known_gen = -1
        self.cursor = 0
        self.stat_from = 0
        self.finished = False

    def _fill(self) -> None:
        """Keep `prefetch` pieces in flight; a reading error waits in line until its piece is needed."""
        while len(self.pending) < self.prefetch and not (self.pending and self.pending[-1][0] is None):
            try:
                item = next(self.pieces, None)
            except Exception as err:  # noqa: BLE001 - raised in order, when the stream reaches it
                self.pending.append((None, err, None, None))
                return
            if item is None:
                return
            epoch, seq, position, piece = item
            ticket = None if piece is None else self.mixer.submit(piece, self.source.math)  # None: an epoch's end
            self.pending.append((epoch, seq, position, ticket))

    def _flush_stats(self) -> None:
        if self.batch is not None and self.cursor > self.stat_from:
            self.stats.add_steps(self.batch.steps[self.stat_from:self.cursor])
            self.stat_from = self.cursor

    def _check_kept(self) -> None:
        """At the end of an epoch: a source that kept no document is an error, not an endless loop."""
        if self.kept_ever == 0:
            empty = " (its files hold no documents: blank lines only, or no text values)" * (not self.stats.documents_in)
            raise sources_mod.SourceError(
                f"source {self.name!r} has no documents left after cleaning: {self.stats.documents_in} read{empty}, "
                f"{self.stats.short_documents} shorter than min_chars={self.mixer.cfg.min_chars}, "
                f"{self.stats.duplicate_documents} duplicates")

    def _next_batch(self) -> bool:
        """Advance to the next cleaned piece, passing epoch ends; False when the source has finished."""
        self._flush_stats()
        while True:
            self._fill()
            if not self.pending:
                self.finished = True
                return False
            epoch, seq, position, ticket = self.pending.popleft()
            if epoch is None:  # reading the source failed here
                raise seq
            self._fill()  # keep the workers busy while this piece is waited for and consumed
            if ticket is not None:
                b = ticket.get()
                self.epoch, self.seq, self.position = epoch, seq, position
                break
            self._check_kept()
            if self.mixer.cfg.on_exhausted != "repeat":
                self.finished = True
                return False
            self.epoch, self.seq, self.position = epoch + 1, 0, None
            self.batch, self._resume_cursor = None, 0
        self.batch = b
        self.cursor = self.stat_from = 0
        if self._resume_cursor:  # resuming inside this piece: its first documents were consumed before
            self.cursor = self.stat_from = min(self._resume_cursor, len(b.hashes))
            self._resume_cursor = 0
        salt = (self.epoch * _EPOCH_SALT) & 0xFFFFFFFFFFFFFFFF
        # a repeated epoch is not a duplicate of the first: its hashes are salted; 0 (dropped) stays 0
        self.hashes = [h ^ salt if h else 0 for h in b.hashes] if salt else b.hashes
        if self.mixer.dedup is not None:
            self.known = self.mixer.dedup.known(self.hashes).tolist()  # vectorised test against the sorted part
            self.known_gen = self.mixer.dedup.generation
        # the first 3 documents cleaning changed (each piece offers 3), whatever the piece sizes
        if len(self.stats.samples) < 3:
            self.stats.samples.extend(b.samples[: 3 - len(self.stats.samples)])
        return True

    def _keep(self, i: int, taken: int) -> bool:
        """Whether document i of the current piece is kept; one dropped by cleaning or a duplicate is counted.

        The one place a document is judged, for `next` and `run` alike; `taken`: documents the caller has kept
        since `kept_ever` was last updated.
        """
        h = self.hashes[i]
        if not h:  # dropped as too short (stats are in b.steps)
            if self.kept_ever + taken == 0 and self.stats.documents_in + i + 1 >= FIRST_KEEP_WINDOW:
                raise sources_mod.SourceError(
                    f"source {self.name!r}: the first {FIRST_KEEP_WINDOW} documents were all dropped by "
                    f"cleaning (shorter than min_chars={self.mixer.cfg.min_chars} after cleaning)")
            return False
        dedup = self.mixer.dedup
        if dedup is not None:
            if self.known_gen != dedup.generation:  # the sorted part changed: test the piece again
                self.known = dedup.known(self.hashes).tolist()
                self.known_gen = dedup.generation
            if self.known[i] or not dedup.add(h):
                self.stats.duplicate_documents += 1
                self.stats.duplicate_chars += self.batch.chars[i]
                return False
        return True

    def next(self) -> tuple[Any, int] | None:
        """The next kept document as (tokens or text, units), or None when the source has finished."""
        while True:
            b = self.batch
            i = self.cursor
            if b is None or i >= len(b.hashes):
                if not self._next_batch():
                    return None
                continue  # from the new batch's cursor: a resumed part starts where it was left (maybe its end)
            self.cursor = i + 1
            if not self._keep(i, 0):
                continue
            chars = b.chars[i]
            self.kept_ever += 1
            self.stats.documents_out += 1
            self.stats.characters_out += chars
            if b.tokens is not None:
                doc = b.tokens[b.offsets[i]:b.offsets[i + 1]]
                units = len(doc)
            else:
                doc = Document(b.texts[i], self.name)
                units = chars
            self.units += units
            return doc, units

    def run(self, room: int, other_key: float, other_index: int) -> tuple[np.ndarray, int] | None:
        """A run of kept documents' tokens, or None when the source has finished (token streams only).

        Documents are taken one after another, exactly as `next` would give them to the mixer, for as long as
        this source stays the one furthest below its quota (its units / weight below `other_key`, the lowest
        key of the other sources, or equal to it with a lower mixture index) and fewer than `room` tokens are
        taken: the document that reaches `room` is the run's last. Runs end at batch ends. One call replaces
        the per-document calls of `next` (about 5 us each), so packing costs one array view per run, not per document.
        Returns (the documents' tokens joined, each ending with EOS; the number of documents).
        """
        w = self.weight
        while True:
            b = self.batch
            if b is None or self.cursor >= len(b.hashes):
                if not self._next_batch():
                    return None
                b = self.batch
            offsets, chars = b.offsets, b.chars
            i = self.cursor
            n = len(b.hashes)
            units = self.units
            limit = units + room
            docs = out_chars = 0
            spans: list[list[int]] = []  # [start, end) token ranges of the kept documents, merged when adjacent
            while i < n:
                key = units / w
                if units >= limit or key > other_key or (key == other_key and self.index > other_index):
                    break
                i += 1
                if not self._keep(i - 1, docs):
                    continue
                lo, hi = offsets[i - 1], offsets[i]
                if spans and spans[-1][1] == lo:
                    spans[-1][1] = hi
                else:
                    spans.append([lo, hi])
                units += hi - lo
                docs += 1
                out_chars += chars[i - 1]
            self.cursor = i
            self.units = units
            self.kept_ever += docs
            self.stats.documents_out += docs
            self.stats.characters_out += out_chars
            if docs:
                toks = b.tokens
                if len(spans) == 1:
                    return toks[spans[0][0]:spans[0][1]], docs
                return np.concatenate([toks[lo:hi] for lo, hi in spans]), docs
            if i < n:  # unreachable: the source was chosen, so its first document fits the rule
                raise AssertionError(f"source {self.name!r} was chosen but took no document")

    def state(self) -> dict:
        """Where this source stands, for resuming in a later session (stats included)."""
        self._flush_stats()
        return {"epoch": self.epoch, "piece": self.seq,
                "in_piece": self.cursor if self.batch is not None else self._resume_cursor,
                "position": self.position, "kept": self.kept_ever, "units": self.units,
                "stats": self.stats.to_dict(), "skipped_files": dict(self.skipped | self._skip_now)}

    def close(self) -> None:
        """Stop reading (a streamed source's reader thread ends); pieces in flight are dropped."""
        self.pending.clear()
        self.pieces.close()
