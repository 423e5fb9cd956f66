"""Ratio mixing: every source is cleaned on all cores, deduplicated, and interleaved by its share of tokens.

Why not `datasets.interleave_datasets`: it draws *documents* with the given probabilities, so a source's
share of *tokens* drifts with its mean document length (a Wikipedia article is ~20x an arithmetic
problem) and with sampling noise. Here each source's quota is counted in the unit that matters (tokens
when a tokenizer is given, characters otherwise) and the next document always comes from the source
furthest below its quota ("split by quota, then interleave"): at every point of the stream each share is
within one document of its weight, deterministically, whatever the number of workers. Measured on Debian
text mixed 0.8 / 0.2 with arithmetic (bench/pack_throughput.py): interleave_datasets gives Debian 0.875 of
the characters, quota mixing 0.800.

Processes (workers > 1): a source that can be cut into parts (plain-text and JSONL files in byte ranges ending
at a blank line or a line end, parquet files in runs of row groups, generated problems in numbered batches) is
read by the workers themselves: the main process sends a part's description, a worker reads, cleans, hashes and
tokenizes it, and only the result crosses a process boundary. Any other source (gzip, the hub, Debian's HTML)
is read by its own feeder process into a bounded queue that workers take raw batches from. The main process
only deduplicates, mixes and packs, and takes results back in stream order. With workers=1 everything runs in
this process, with the same output.
The packer takes the stream in runs (`Mixer.take`): the documents one source gives in a row, as one slice of
its worker's token array, so that the main process spends about 1 us per document, not 5.

When a finite source runs out, `on_exhausted` decides: "repeat" starts it again (a new epoch, like
interleave_datasets' all_exhausted; repeats are not counted as duplicates) and "stop" ends the stream
(like first_exhausted). The seed drives each source's shuffle buffer and the generated sources.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing
import os
import random
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import sources as sources_mod
from ..config import CorpusConfig, check_section, check_value
from .clean import CleanedBatch, CleanStats, clean_batch, init_worker, warm
from .workers import WorkerPool, start_child

BATCH_CHARS = 64_000  # raw characters per worker task: amortises IPC; less work lost in flight when a build ends
BATCH_DOCS = 2048
FIRST_BATCH_CHARS = 8_000  # the first batch of a source; sizes double up to BATCH_CHARS
FIRST_KEEP_WINDOW = 20_000  # a source whose first this-many documents are all dropped is an error, not a hang
PART_WINDOW = 32  # parts of a plain-text source shuffled together (about 6 MB of text), besides each part's documents
SMALL_PARTS = 3  # the first parts of a file are small (24, 48, 96 KB) and are not moved by the shuffle
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


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use."""
    check_value("corpus.workers", workers, ValueError)
    if workers:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _shuffled(items: Iterator[str], size: int, rng: random.Random) -> Iterator[str]:
    """Seeded shuffle buffer: bounded memory (`size` documents), deterministic order."""
    if size <= 1:
        yield from items
        return
    buf: list[str] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


def _batches(docs: Iterator[str]) -> Iterator[list[str]]:
    """Group a document stream into worker-sized batches, the first ones small.

    Batch sizes double from FIRST_BATCH_CHARS to BATCH_CHARS: the first tokens reach the packer after a
    small batch's work instead of a full one's, and all workers get work sooner (the pipeline fills fast).
    """
    batch: list[str] = []
    chars = 0
    limit = FIRST_BATCH_CHARS
    for text in docs:
        batch.append(text)
        chars += len(text)
        if chars >= limit or len(batch) >= BATCH_DOCS:
            yield batch
            batch, chars = [], 0
            limit = min(2 * limit, BATCH_CHARS)
    if batch:
        yield batch


def _raw_stream(source: sources_mod.Source, seed: int, rng_seed: int, shuffle_buffer: int, on_bad_utf8: str,
                skip: int, skipped: Counter) -> Iterator[str]:
    """One epoch of a source, shuffled by seed, with the first `skip` documents replayed and dropped."""
    raw = sources_mod.iter_texts(source, seed=seed, on_bad_utf8=on_bad_utf8, skipped=skipped)
    docs = _shuffled(iter(raw), shuffle_buffer, random.Random(rng_seed))
    for _ in itertools.islice(docs, skip):
        pass
    return docs


def _feeder(queue: Any, epoch: int, ends: int, source: sources_mod.Source, seed: int, rng_seed: int,
            shuffle_buffer: int, on_bad_utf8: str, skip: int) -> None:
    """Feeder process: read one source and put numbered raw batches on its queue (reading leaves the main process).

    After the last batch it puts `ends` end markers (or the error), one for every ticket that may be waiting.
    Items carry the epoch, so that markers left over from an earlier epoch are skipped.
    """
    skipped: Counter = Counter()
    seq = 0
    end: Any = None
    try:
        for batch in _batches(_raw_stream(source, seed, rng_seed, shuffle_buffer, on_bad_utf8, skip, skipped)):
            queue.put((epoch, seq, batch, dict(skipped)))
            seq += 1
    except BaseException as err:  # noqa: BLE001 - handed to the main process, which raises it
        end = err
    for _ in range(ends):
        queue.put((epoch, seq, end, dict(skipped)))


_QUEUES: list[Any] = []  # worker side: the feeder queues, inherited when the pool starts
_CLOSING: list[Any] = []  # worker side: the event set when the mixer closes (tickets still queued do no work)


def _init_pool_worker(model_file: str | None, queues: list[Any], closing: Any, symbol_level: float | None) -> None:
    """Worker initializer: the tokenizer, the thinning patterns, the feeder queues (passed at process start only)."""
    init_worker(model_file, threads=1)
    _QUEUES[:] = queues
    _CLOSING[:] = [closing]
    if symbol_level is not None:
        warm(symbol_level)  # spawn: built here, not on the first batch (fork: inherited, so this is a cache hit)


def _ticket(index: int, epoch: int, *args: Any) -> tuple[int, Any, dict]:
    """Worker task: take the next raw batch of one source from its feeder queue and clean (and tokenize) it."""
    if _CLOSING[0].is_set():  # the mixer is closing: nobody will read this batch
        return -1, None, {}
    while True:
        item_epoch, seq, payload, skipped = _QUEUES[index].get()
        if item_epoch == epoch:  # not an end marker left over from an earlier epoch
            break
    if payload is None or isinstance(payload, BaseException) or _CLOSING[0].is_set():
        return seq, payload, skipped
    return seq, clean_batch(payload, *args), skipped


def _part_ticket(part: sources_mod.Part, *args: Any) -> CleanedBatch | None:
    """Worker task: read one part of a source (a file range, generated problems) and clean (and tokenize) it."""
    if _CLOSING[0].is_set():  # the mixer is closing: nobody will read this batch
        return None
    return clean_batch(sources_mod.read_part(part), *args)


class _Inline:
    """A stand-in for a worker Ticket when work runs in this process (workers=1)."""

    def __init__(self, value: CleanedBatch) -> None:
        self.value = value

    def get(self) -> CleanedBatch:
        return self.value


class _Feed:
    """One source: raw documents in, cleaned and deduplicated documents out, in a fixed order."""

    def __init__(self, mixer: Mixer, index: int, name: str, weight: float, state: dict | None) -> None:
        self.mixer, self.index, self.name, self.weight = mixer, index, name, weight
        self.source = sources_mod.resolve(name)
        # Batches in flight: workers + 1 for the source drawn most, fewer for one drawn less (a source at a tenth
        # of the stream needs a new batch ten times less often), 1 in this process (computed when submitted).
        # Batches prefetched but never consumed are work lost when the build ends.
        self.prefetch = mixer.feed_prefetch[index]
        state = state or {}
        self.epoch = state.get("epoch", 0)
        self.consumed = state.get("consumed", 0)  # documents of this epoch's shuffled stream taken by the mixer
        self.kept_ever = state.get("kept", 0)
        self.units = state.get("units", 0)  # tokens (or characters) this source contributed
        self.stats = CleanStats.from_dict(state["stats"]) if "stats" in state else CleanStats()
        self.skipped: Counter = Counter(state.get("skipped_files", {}))
        self.pending: deque = deque()
        self.batch: CleanedBatch | None = None
        self.hashes: list[int] = []  # the current batch's hashes, salted by epoch
        self.known: list[bool] = []  # which of them the duplicate memory's sorted part holds
        self.known_gen = -1
        self.cursor = 0
        self.stat_from = 0
        self.raw_done = False
        self.finished = False
        # Parts: workers read the source's parts themselves (file ranges, generator batches), so no document is
        # pickled between processes and one epoch follows another without draining the pipeline.
        self.parted = sources_mod.splittable(self.source)
        self.part_seq = state.get("part", 0)  # the part being consumed, in this epoch's order
        self._resume_cursor = state.get("in_part", 0)  # documents of that part consumed before a resume
        if self.parted:
            self._skip_now = Counter()
            self._checked = {path: False for path in self.skipped}  # UTF-8 verdicts: each file is checked once
            self.parts = self._part_stream(self.epoch, self.part_seq)
        else:
            self._open(skip=self.consumed)

    def _part_stream(self, epoch: int, skip: int) -> Iterator[tuple[int, int, sources_mod.Part | None]]:
        """(epoch, seq, part) for every part, epoch after epoch; (epoch, -1, None) marks the end of an epoch.

        With a shuffle, each part's documents are shuffled and the parts themselves in windows of PART_WINDOW;
        the first `skip` parts of the first epoch are planned and passed over (resuming).
        """
        cfg = self.mixer.cfg
        shuffle = cfg.shuffle_buffer > 1 and self.source.kind != "arithmetic"
        while True:
            seed = self.mixer.seed + 1009 * epoch
            rng_seed = seed ^ zlib.crc32(self.name.encode())
            parts: Iterator[sources_mod.Part] = sources_mod.iter_parts(self.source, seed, cfg.on_bad_utf8,
                                                                       self._skip_now, self._checked)
            if shuffle:
                seeds = random.Random(rng_seed + 1)
                seeded = (dataclasses.replace(p, seed=seeds.getrandbits(62) | 1) for p in parts)
                # the first, small parts stay first (their documents are still shuffled): they are what gets the
                # first tokens out fast; the rest are shuffled in windows
                head = list(itertools.islice(seeded, SMALL_PARTS))
                parts = itertools.chain(head, _shuffled(seeded, PART_WINDOW, random.Random(rng_seed)))
            for seq, part in enumerate(parts):
                if seq >= skip:
                    yield epoch, seq, part
            skip = 0
            yield epoch, -1, None
            if cfg.on_exhausted != "repeat":
                return
            epoch += 1

    def _open(self, skip: int) -> None:
        """(Re)open this epoch's raw stream and skip what earlier parts consumed (replay, no cleaning)."""
        seed = self.mixer.seed + 1009 * self.epoch
        rng_seed = seed ^ zlib.crc32(self.name.encode())
        cfg = self.mixer.cfg
        self.raw_done = False
        if self.mixer.pool is None:
            # a replay or a new epoch re-reads the same files: count each skipped file once (max over readings)
            self._skip_now: Counter = Counter()
            self.raw = _batches(_raw_stream(self.source, seed, rng_seed, cfg.shuffle_buffer, cfg.on_bad_utf8, skip,
                                            self._skip_now))
            return
        for r in self.pending:  # the previous epoch's outstanding tickets end on its end markers
            r.get()
        self.pending.clear()
        if getattr(self, "feeder", None) is not None:
            self.feeder.join(timeout=30)  # it has put its end markers (the queue has room for them) and exits
        self._stop_feeder()
        self._skip_now = Counter()
        queue = self.mixer.queues[self.index]
        self.feeder = start_child(self.mixer.ctx, _feeder, (queue, self.epoch, self.prefetch + 1, self.source, seed,
                                                            rng_seed, cfg.shuffle_buffer, cfg.on_bad_utf8, skip))
        self.next_seq = 0
        self.ready: dict[int, Any] = {}

    def _stop_feeder(self) -> None:
        feeder = getattr(self, "feeder", None)
        if feeder is not None:
            feeder.terminate()
            feeder.join()
            self.feeder = None

    def _submit(self) -> bool:
        """Queue the next batch for a worker; False when the raw stream has ended."""
        if self.raw_done:
            return False
        mixer = self.mixer
        if self.parted:
            item = next(self.parts, None)
            if item is None:
                self.raw_done = True
                return False
            epoch, seq, part = item
            ticket: Any = None  # None: the end of an epoch
            if part is not None and mixer.pool is None:
                ticket = mixer.submit(sources_mod.read_part(part), self.source.math)
            elif part is not None:
                ticket = mixer.pool.apply_async(_part_ticket, (part, *mixer.batch_args(self.source.math)))
            self.pending.append((epoch, seq, ticket))
        elif mixer.pool is None:
            docs = next(self.raw, None)
            if docs is None:
                self.raw_done = True
                return False
            self.pending.append(mixer.submit(docs, self.source.math))
        else:
            self.pending.append(mixer.pool.apply_async(_ticket, (self.index, self.epoch,
                                                                 *mixer.batch_args(self.source.math))))
        return True

    def _fill(self) -> None:
        while len(self.pending) < self.prefetch and self._submit():
            pass

    def _take(self) -> CleanedBatch | None:
        """The next cleaned batch in stream order, or None at the end of this epoch."""
        if self.mixer.pool is None:
            self._fill()
            return self.pending.popleft().get() if self.pending else None
        while self.next_seq not in self.ready:
            self._fill()
            seq, payload, skipped = self.pending.popleft().get()  # tickets may finish out of order: reorder by seq
            for k, v in skipped.items():
                self._skip_now[k] = max(self._skip_now[k], v)
            if isinstance(payload, BaseException):
                raise payload
            if payload is None:
                self.raw_done = True  # no more tickets for this epoch
            self.ready[seq] = payload
        item = self.ready.pop(self.next_seq)
        if item is not None:
            self.next_seq += 1
        self._fill()  # keep the workers busy while this batch is consumed
        return item

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

    def _next_raw(self) -> CleanedBatch | None:
        """Feeder mode: the next batch; at the end of the raw stream, start a new epoch or finish (None)."""
        b = self._take()
        if b is None:
            self._check_kept()
            if self.mixer.cfg.on_exhausted != "repeat":
                self.finished = True
                return None
            self.epoch += 1
            self.consumed = 0
            self._open(skip=0)
            b = self._take()
            if b is None:
                self.finished = True
        return b

    def _next_part(self) -> CleanedBatch | None:
        """Parts mode: the next part's batch, passing epoch ends (the next epoch's parts are already in flight)."""
        while True:
            self._fill()
            if not self.pending:
                self.finished = True
                return None
            epoch, seq, ticket = self.pending.popleft()
            self._fill()  # keep the workers busy while this batch is waited for and consumed
            if ticket is not None:
                self.part_seq = seq
                return ticket.get()
            self._check_kept()
            if self.mixer.cfg.on_exhausted != "repeat":
                self.finished = True
                return None
            self.epoch, self.consumed, self.part_seq = epoch + 1, 0, 0
            self.batch, self._resume_cursor = None, 0

    def _next_batch(self) -> bool:
        """Advance to the next cleaned batch; False when the source has finished."""
        self._flush_stats()
        b = self._next_part() if self.parted else self._next_raw()
        if b is None:
            return False
        self.batch = b
        self.cursor = self.stat_from = 0
        if self._resume_cursor:  # resuming inside this part: its first documents were consumed before
            self.cursor = self.stat_from = min(self._resume_cursor, len(b.hashes))
            self._resume_cursor = 0
        salt = (self.epoch * _EPOCH_SALT) & 0xFFFFFFFFFFFFFFFF
        # a repeated epoch is not a duplicate of the first: its hashes are salted; 0 (dropped) stays 0
        self.hashes = [h ^ salt if h else 0 for h in b.hashes] if salt else b.hashes
        if self.mixer.dedup is not None:
            self.known = self.mixer.dedup.known(self.hashes).tolist()  # vectorised test against the sorted part
            self.known_gen = self.mixer.dedup.generation
        # the first 3 documents cleaning changed (each batch offers 3), whatever the batch sizes
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
            self.consumed += 1
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
            start = i = self.cursor
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
            self.consumed += i - start
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
        state = {"epoch": self.epoch, "consumed": self.consumed, "kept": self.kept_ever, "units": self.units,
                 "stats": self.stats.to_dict(), "skipped_files": dict(self.skipped | self._skip_now)}
        if self.parted:
            state["part"] = self.part_seq
            state["in_part"] = self.cursor if self.batch is not None else self._resume_cursor
        return state


class HashSet:
    """Exact-duplicate memory: 8 bytes per distinct document in a sorted array plus a small recent set."""

    def __init__(self, hashes: np.ndarray | None = None, buffer: int | None = None) -> None:
        self.sorted = np.unique(hashes.astype(np.uint64)) if hashes is not None else np.zeros(0, np.uint64)
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

    def array(self) -> np.ndarray:
        """All hashes, sorted (for saving)."""
        self._merge()
        return self.sorted

    def __len__(self) -> int:
        return len(self.sorted) + len(self.recent)


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
        self.pool = None
        self.queues: list[Any] = []
        self.ctx = None
        if self.workers > 1:
            # fork where there is one: spawn re-imports __main__, which fails for stdin scripts and is slow;
            # the workers only run clean_batch (no threads, no locks inherited from the parent are used).
            # Each source is read by its own feeder process into a bounded queue; workers take batches
            # from it, so reading, cleaning and tokenizing all leave the main process, which only mixes and packs.
            methods = multiprocessing.get_all_start_methods()
            self.ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            # room for the batches in flight plus every end marker, so a finished feeder never blocks
            self.queues = [self.ctx.Queue(maxsize=2 * k + 2) for k in self.feed_prefetch]
            self.closing = self.ctx.Event()
            thinning = cleaning and any(not sources_mod.resolve(name).math for name in self.weights)
            if thinning and self.ctx.get_start_method() == "fork":
                warm(cfg.symbol_level)  # built once per process and inherited by every worker at fork
            self.pool = WorkerPool(self.ctx, self.workers, initializer=_init_pool_worker,
                                   initargs=(model_file, self.queues, self.closing,
                                             cfg.symbol_level if thinning else None))
        else:
            init_worker(model_file)
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

    def submit(self, docs: list[str], math_source: bool) -> Any:
        """Clean (and tokenize) one batch in this process (workers=1)."""
        return _Inline(clean_batch(docs, *self.batch_args(math_source)))

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

    def close(self) -> None:
        """Stop the feeder and worker processes."""
        feeds = getattr(self, "feeds", [])
        if self.pool is not None:
            self.closing.set()  # tickets not yet started return at once
        for feed in feeds:
            feed.pending.clear()  # work in flight is dropped: the workers stop now, not after it
            feed._stop_feeder()
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None
        for q in self.queues:
            q.close()
        self.queues = []

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
