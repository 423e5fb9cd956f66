"""Ratio mixing: every source is cleaned on all cores, deduplicated, and interleaved by its share of tokens.

Why not `datasets.interleave_datasets`: it draws *documents* with the given probabilities, so a source's
share of *tokens* drifts with its mean document length (a Wikipedia article is ~20x an arithmetic
problem) and with sampling noise. Here each source's quota is counted in the unit that matters (tokens
when a tokenizer is given, characters otherwise) and the next document always comes from the source
furthest below its quota ("split by quota, then interleave"): at every point of the stream each share is
within one document of its weight, deterministically, whatever the number of workers. Measured on Debian
text mixed 0.8 / 0.2 with arithmetic (bench/pack_throughput.py): interleave_datasets gives Debian 0.875 of
the characters, quota mixing 0.800.

Each source is read in pieces (`pieces.py`: slices a worker reads by itself, or documents a reader thread
read from a stream); each piece is cleaned, hashed and tokenized in one worker task (workers > 1) or in this
process (workers = 1), with the same output. This process only deduplicates, mixes and hands out runs of
documents (`Mixer.take`: the documents one source gives in a row, as one slice of its piece's token array, so
that it spends about 1 us per document, not 5), and takes the pieces back in stream order.

Where the stream stands (`Mixer.state()` and the duplicate memory's hashes) is all a later session needs to
continue it exactly: per source the epoch, the piece, the documents consumed in it, and for a streamed source
the reader's position before that piece.

When a finite source runs out, `on_exhausted` decides: "repeat" starts it again (a new epoch, like
interleave_datasets' all_exhausted; repeats are not counted as duplicates) and "stop" ends the stream
(like first_exhausted). The seed drives each source's shuffle and the generated sources.
"""

from __future__ import annotations

import math
import os
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import sources as sources_mod
from ..config import CorpusConfig, check_section, check_value
from .clean import CleanedBatch, CleanStats, clean_batch, init_worker, warm
from .pieces import Piece, piece_stream, read_piece
from .workers import WorkerPool, worker_context

FIRST_KEEP_WINDOW = 20_000  # a source whose first this-many documents are all dropped is an error, not a hang
DEDUP_BUFFER = 65536  # recent hashes kept in a Python set before merging into the sorted array
_EPOCH_SALT = 0x9E3779B97F4A7C15  # repeated epochs must not count as duplicates of the first


class MixtureError(ValueError):
    """Mixture weights that cannot be used: the message names the source and the value."""


class Document(str):
    """A cleaned document: a `str` (so any code taking text takes it) that also knows its `source`."""

    source: str

    def __new__(cls, text: str, source: str) -> Document:
        obj = super().__new__(cls, text)
        obj.source = source
        return obj

    def __reduce__(self):
        return (Document, (str(self), self.source))


def validate_mixture(mixture: dict[str, float]) -> dict[str, float]:
    """Normalised weights of the sources with a positive weight; unknown names and bad weights raise."""
    if not isinstance(mixture, dict) or not mixture:
        raise MixtureError(f"corpus.mixture must be a non-empty dict of source name -> weight, got {mixture!r}")
    for name, w in mixture.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            raise MixtureError(f"corpus.mixture[{name!r}]: weight must be a finite number, got {w!r}")
    check_value("corpus.mixture", mixture, MixtureError)  # config.py's rule: known names, weights >= 0, one positive
    total = float(sum(mixture.values()))
    return {name: w / total for name, w in mixture.items() if w > 0}


def cpu_count() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use."""
    check_value("corpus.workers", workers, ValueError)
    return workers or cpu_count()


def _init_pool_worker(model_file: str | None, symbol_level: float | None) -> None:
    """Worker initializer: the tokenizer and the thinning patterns (passed at process start only)."""
    init_worker(model_file, threads=1)
    if symbol_level is not None:
        warm(symbol_level)  # spawn: built here, not on the first piece (fork: inherited, so this is a cache hit)


def _piece_task(piece: Piece, *args: Any) -> CleanedBatch:
    """Worker task: read one piece and clean (and tokenize) it."""
    return clean_batch(read_piece(piece), *args)


class _Inline:
    """A stand-in for a worker Ticket when work runs in this process (workers=1)."""

    def __init__(self, value: CleanedBatch) -> None:
        self.value = value

    def get(self) -> CleanedBatch:
        return self.value


class _Feed:
    """One source: pieces in, cleaned and deduplicated documents out, in a fixed order."""

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

    def next(self) -> tuple[Any, int] | None:
        """The next kept document as (tokens or text, units), or None when the source has finished."""
        dedup = self.mixer.dedup
        while True:
            b = self.batch
            i = self.cursor
            if b is None or i >= len(b.hashes):
                if not self._next_batch():
                    return None
                continue  # from the new batch's cursor: a resumed part starts where it was left (maybe its end)
            self.cursor = i + 1
            h = self.hashes[i]
            if not h:  # dropped as too short (stats are in b.steps)
                if self.kept_ever == 0 and self.stats.documents_in + self.cursor >= FIRST_KEEP_WINDOW:
                    raise sources_mod.SourceError(
                        f"source {self.name!r}: the first {FIRST_KEEP_WINDOW} documents were all dropped by "
                        f"cleaning (shorter than min_chars={self.mixer.cfg.min_chars} after cleaning)")
                continue
            chars = b.chars[i]
            if dedup is not None:
                if self.known_gen != dedup.generation:  # the sorted part changed: test the batch again
                    self.known = dedup.known(self.hashes).tolist()
                    self.known_gen = dedup.generation
                if self.known[i] or not dedup.add(h):
                    self.stats.duplicate_documents += 1
                    self.stats.duplicate_chars += chars
                    continue
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
        the per-document calls of `next` (about 5 us each), so packing costs a slice per run, not per document.
        Returns (the documents' tokens joined, each ending with EOS; the number of documents).
        """
        dedup = self.mixer.dedup
        w = self.weight
        while True:
            b = self.batch
            if b is None or self.cursor >= len(b.hashes):
                if not self._next_batch():
                    return None
                b = self.batch
            hashes, offsets, chars = self.hashes, b.offsets, b.chars
            known = self.known
            i = self.cursor
            n = len(hashes)
            units0 = units = self.units
            limit = units0 + room
            docs = dup_docs = dup_chars = out_chars = 0
            pieces: list[list[int]] = []  # [start, end) token ranges of the kept documents, merged when adjacent
            while i < n:
                key = units / w
                if units >= limit or key > other_key or (key == other_key and self.index > other_index):
                    break
                h = hashes[i]
                i += 1
                if not h:  # dropped as too short (stats are in b.steps)
                    if self.kept_ever + docs == 0 and self.stats.documents_in + i >= FIRST_KEEP_WINDOW:
                        raise sources_mod.SourceError(
                            f"source {self.name!r}: the first {FIRST_KEEP_WINDOW} documents were all dropped by "
                            f"cleaning (shorter than min_chars={self.mixer.cfg.min_chars} after cleaning)")
                    continue
                if dedup is not None:
                    if self.known_gen != dedup.generation:  # the sorted part changed: test the batch again
                        known = self.known = dedup.known(hashes).tolist()
                        self.known_gen = dedup.generation
                    if known[i - 1] or not dedup.add(h):
                        dup_docs += 1
                        dup_chars += chars[i - 1]
                        continue
                lo, hi = offsets[i - 1], offsets[i]
                if pieces and pieces[-1][1] == lo:
                    pieces[-1][1] = hi
                else:
                    pieces.append([lo, hi])
                units += hi - lo
                docs += 1
                out_chars += chars[i - 1]
            self.cursor = i
            self.units = units
            self.kept_ever += docs
            st = self.stats
            st.duplicate_documents += dup_docs
            st.duplicate_chars += dup_chars
            st.documents_out += docs
            st.characters_out += out_chars
            if docs:
                toks = b.tokens
                if len(pieces) == 1:
                    return toks[pieces[0][0]:pieces[0][1]], docs
                return np.concatenate([toks[lo:hi] for lo, hi in pieces]), docs
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


class HashSet:
    """Exact-duplicate memory: 8 bytes per distinct document in a sorted array, a small recent set, and the log.

    The log holds every hash in the order it was added, so the memory at any earlier point of the stream is a
    prefix of it (`count` then): a checkpoint stores that prefix, not a copy per point.
    """

    def __init__(self, hashes: np.ndarray | None = None, buffer: int | None = None) -> None:
        log = np.asarray(hashes if hashes is not None else np.zeros(0), dtype=np.uint64)
        self._log = np.empty(max(1024, 2 * len(log)), np.uint64)
        self._log[:len(log)] = log
        self.count = len(log)
        self.sorted = np.unique(log)
        self.recent: set[int] = set()
        self.buffer = buffer or DEDUP_BUFFER
        self.generation = 0  # bumped whenever `sorted` changes

    def known(self, hashes: list[int]) -> np.ndarray:
        """Which of `hashes` are in the sorted part (one vectorised search for a whole batch)."""
        arr = np.array(hashes, dtype=np.uint64)
        if not len(self.sorted):
            return np.zeros(len(arr), dtype=bool)
        j = np.minimum(np.searchsorted(self.sorted, arr), len(self.sorted) - 1)
        return self.sorted[j] == arr

    def add(self, h: int) -> bool:
        """Add a hash not in the sorted part; False when it was already in the recent set."""
        if h in self.recent:
            return False
        self.recent.add(h)
        if self.count == len(self._log):
            self._log = np.concatenate([self._log, np.empty(len(self._log), np.uint64)])
        self._log[self.count] = h
        self.count += 1
        if len(self.recent) >= self.buffer:
            self._merge()
        return True

    def seen(self, h: int) -> bool:
        """True when `h` was added before; otherwise add it and return False."""
        if self.known([h])[0]:
            return True
        return not self.add(h)

    def _merge(self) -> None:
        if self.recent:
            new = np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))
            self.sorted = np.union1d(self.sorted, new)
            self.recent.clear()
            self.generation += 1

    def array(self, start: int = 0) -> np.ndarray:
        """The hashes added from number `start` on, in the order they were added (a copy, for saving)."""
        return self._log[start:self.count].copy()

    def __len__(self) -> int:
        return self.count


class Mixer:
    """The mixed, cleaned, deduplicated document stream of a CorpusConfig (tokens when `model_file` is given)."""

    def __init__(self, cfg: CorpusConfig, model_file: str | None = None, seed: int | None = None,
                 workers: int | None = None, state: dict | None = None, dedup_hashes: np.ndarray | None = None,
                 cleaning: bool = True):
        check_section(cfg, ValueError)  # config.py's rules, for a CorpusConfig built by hand
        self.cfg = cfg
        self.seed = cfg.seed if seed is None else seed
        self.weights = validate_mixture(cfg.mixture)
        self.model_file = model_file
        self.cleaning = cleaning  # False: the sources hold already-cleaned text (benchmarks, re-packing)
        self.workers = resolve_workers(cfg.workers if workers is None else workers)
        self.prefetch = self.workers + 1
        top = max(self.weights.values())
        self.feed_prefetch = [max(1, round(self.prefetch * w / top)) if self.workers > 1 else 1
                              for w in self.weights.values()]
        self.dedup = HashSet(dedup_hashes) if cfg.dedup else None
        self.pool: WorkerPool | None = None
        if self.workers > 1:
            # forkserver (workers.worker_context): a fork of this process, which has threads, could deadlock
            ctx = worker_context()
            thinning = cleaning and any(not sources_mod.resolve(name).math for name in self.weights)
            if thinning and ctx.get_start_method() == "fork":
                warm(cfg.symbol_level)  # built once per process and inherited by every worker at fork
            self.pool = WorkerPool(ctx, self.workers, initializer=_init_pool_worker,
                                   initargs=(model_file, cfg.symbol_level if thinning else None))
        else:
            init_worker(model_file, threads=1)  # one process is one core, also for SentencePiece
        state = state or {}
        try:
            self.feeds = [_Feed(self, i, name, w, state.get(name)) for i, (name, w) in enumerate(self.weights.items())]
        except BaseException:
            self.close()
            raise
        self.stopped: str | None = None  # the source that ran out when on_exhausted="stop"
        self._active = [f for f in self.feeds if not f.finished]  # the sources `take` still draws from

    def batch_args(self, math_source: bool) -> tuple:
        """clean_batch's arguments after the documents."""
        return (self.cfg.symbol_level, math_source, self.cfg.min_chars, self.model_file is not None,
                self.model_file is None, 3, self.cleaning, self.dedup is not None)

    def submit(self, piece: Piece, math_source: bool) -> Any:
        """Read and clean (and tokenize) one piece: in a worker, or here (workers=1)."""
        if self.pool is not None:
            return self.pool.apply_async(_piece_task, (piece, *self.batch_args(math_source)))
        return _Inline(_piece_task(piece, *self.batch_args(math_source)))

    def __iter__(self) -> Iterator[tuple[str, Any, int]]:
        """Yield (source name, tokens or Document, units) in mixed order until a source stops the stream."""
        active = [f for f in self.feeds if not f.finished]
        while active:
            # the source furthest below its quota goes next (ties: the order of the mixture)
            feed = min(active, key=lambda f: f.units / f.weight)
            got = feed.next()
            if got is None:
                if self.cfg.on_exhausted == "stop":
                    self.stopped = feed.name
                    return
                active.remove(feed)
                continue
            yield feed.name, got[0], got[1]

    def take(self, room: int) -> tuple[str, np.ndarray, int] | None:
        """The next run of documents as (source name, tokens, documents), or None when the stream has ended.

        The same documents in the same order as iterating, grouped into runs of one source (see `_Feed.run`);
        the document that reaches `room` tokens ends the run, so a shard can stop exactly where `__iter__` would.
        """
        if self.model_file is None:
            raise ValueError("Mixer.take needs a tokenizer (model_file); iterate the mixer for text")
        active = self._active
        while active:
            feed = min(active, key=lambda f: f.units / f.weight)  # ties: the order of the mixture, as in __iter__
            other_key, other_index = math.inf, len(self.feeds)
            for f in active:
                if f is not feed:
                    k = f.units / f.weight
                    if k < other_key:
                        other_key, other_index = k, f.index
            got = feed.run(room, other_key, other_index)
            if got is None:
                if self.cfg.on_exhausted == "stop":
                    self.stopped = feed.name
                    active.clear()
                    return None
                active.remove(feed)
                continue
            return feed.name, got[0], got[1]
        return None

    def state(self) -> dict:
        """Per-source resume state and statistics."""
        return {f.name: f.state() for f in self.feeds}

    @property
    def dedup_count(self) -> int:
        """Hashes in the duplicate memory so far (its state is the first this-many of `dedup.array()`)."""
        return len(self.dedup) if self.dedup is not None else 0

    def close(self) -> None:
        """Stop the worker processes and the reader threads."""
        for feed in getattr(self, "feeds", []):
            feed.close()
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None

    def __enter__(self) -> Mixer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mixed_documents(corpus_cfg: CorpusConfig, seed: int | None = None, workers: int | None = None) -> Iterator[Document]:
    """The cleaned, deduplicated, ratio-mixed document stream (shares counted in characters); stop when you like."""
    mixer = Mixer(corpus_cfg, model_file=None, seed=seed, workers=workers)
    try:
        for _, doc, _ in mixer:
            yield doc
    finally:
        mixer.close()
