"""Ratio mixing: every source is cleaned on all cores, deduplicated, and interleaved by its share of tokens.

Why not `datasets.interleave_datasets`: it draws *documents* with the given probabilities, so a source's
share of *tokens* drifts with its mean document length (a Wikipedia article is ~20x an arithmetic
problem) and with sampling noise. Here each source's quota is counted in the unit that matters (tokens
when a tokenizer is given, characters otherwise) and the next document always comes from the source
furthest below its quota ("split by quota, then interleave"): at every point of the stream each share is
within one document of its weight, deterministically, whatever the number of workers.

When a finite source runs out, `on_exhausted` decides: "repeat" starts it again (a new epoch, like
interleave_datasets' all_exhausted; repeats are not counted as duplicates) and "stop" ends the stream
(like first_exhausted). The seed drives each source's shuffle buffer and the generated sources.
"""

from __future__ import annotations

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
from ..config import CorpusConfig
from .clean import CleanedBatch, CleanStats, clean_batch, init_worker

BATCH_CHARS = 128_000  # raw characters per worker task: large enough to amortise IPC, small enough to keep memory flat
BATCH_DOCS = 2048
FIRST_KEEP_WINDOW = 20_000  # a source whose first this-many documents are all dropped is an error, not a hang
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
        sources_mod.resolve(name)  # unknown names raise SourceError listing the known ones
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            raise MixtureError(f"corpus.mixture[{name!r}]: weight must be a finite number, got {w!r}")
        if w < 0:
            raise MixtureError(f"corpus.mixture[{name!r}]: weight must be >= 0, got {w}")
    total = float(sum(mixture.values()))
    if total <= 0:
        raise MixtureError(f"corpus.mixture: all weights are zero ({mixture}); give at least one source a positive weight")
    return {name: w / total for name, w in mixture.items() if w > 0}


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use."""
    if workers < 0:
        raise ValueError(f"corpus.workers must be >= 0 (0 = all cores), got {workers}")
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


class _Inline:
    """A stand-in for an AsyncResult when work runs in this process (workers=1)."""

    def __init__(self, value: CleanedBatch) -> None:
        self.value = value

    def get(self) -> CleanedBatch:
        return self.value


class _Feed:
    """One source: raw documents in, cleaned and deduplicated documents out, in a fixed order."""

    def __init__(self, mixer: Mixer, index: int, name: str, weight: float, state: dict | None) -> None:
        self.mixer, self.index, self.name, self.weight = mixer, index, name, weight
        self.source = sources_mod.resolve(name)
        state = state or {}
        self.epoch = state.get("epoch", 0)
        self.consumed = state.get("consumed", 0)  # documents of this epoch's shuffled stream taken by the mixer
        self.kept_ever = state.get("kept", 0)
        self.units = state.get("units", 0)  # tokens (or characters) this source contributed
        self.stats = CleanStats.from_dict(state["stats"]) if "stats" in state else CleanStats()
        self.skipped: Counter = Counter(state.get("skipped_files", {}))
        self.pending: deque = deque()
        self.batch: CleanedBatch | None = None
        self.cursor = 0
        self.stat_from = 0
        self.raw_done = False
        self.finished = False
        self._open(skip=self.consumed)

    def _open(self, skip: int) -> None:
        """(Re)open this epoch's raw stream and skip what earlier parts consumed (replay, no cleaning)."""
        seed = self.mixer.seed + 1009 * self.epoch
        # a replay or a new epoch re-reads the same files: count each skipped file once (max over readings)
        self._skip_now: Counter = Counter()
        raw = sources_mod.iter_texts(self.source, seed=seed, on_bad_utf8=self.mixer.cfg.on_bad_utf8,
                                     skipped=self._skip_now)
        rng = random.Random(seed ^ zlib.crc32(self.name.encode()))
        self.raw = _shuffled(iter(raw), self.mixer.cfg.shuffle_buffer, rng)
        for _ in itertools.islice(self.raw, skip):
            pass
        self.raw_done = False

    def _submit(self) -> bool:
        """Send the next raw batch to a worker; False when the raw stream has ended."""
        if self.raw_done:
            return False
        docs: list[str] = []
        chars = 0
        for text in self.raw:
            docs.append(text)
            chars += len(text)
            if chars >= BATCH_CHARS or len(docs) >= BATCH_DOCS:
                break
        if not docs:
            self.raw_done = True
            return False
        self.pending.append(self.mixer.submit(docs, self.source.math))
        return True

    def _fill(self) -> None:
        while len(self.pending) < self.mixer.prefetch and self._submit():
            pass

    def _flush_stats(self) -> None:
        if self.batch is not None and self.cursor > self.stat_from:
            self.stats.add_steps(self.batch.steps[self.stat_from:self.cursor])
            self.stat_from = self.cursor

    def _next_batch(self) -> bool:
        """Advance to the next cleaned batch; at the end of the raw stream, start a new epoch or finish."""
        self._flush_stats()
        self._fill()
        if not self.pending:
            if self.kept_ever == 0:
                raise sources_mod.SourceError(
                    f"source {self.name!r} has no documents left after cleaning: {self.stats.documents_in} read, "
                    f"{self.stats.short_documents} shorter than min_chars={self.mixer.cfg.min_chars}, "
                    f"{self.stats.duplicate_documents} duplicates")
            if self.mixer.cfg.on_exhausted != "repeat":
                self.finished = True
                return False
            self.epoch += 1
            self.consumed = 0
            self._open(skip=0)
            self._fill()
            if not self.pending:
                self.finished = True
                return False
        self.batch = self.pending.popleft().get()
        self.cursor = self.stat_from = 0
        if len(self.stats.samples) < 3:
            self.stats.samples.extend(self.batch.samples[: 3 - len(self.stats.samples)])
        self._fill()  # keep the workers busy while this batch is consumed
        return True

    def next(self) -> tuple[Any, int] | None:
        """The next kept document as (tokens or text, units), or None when the source has finished."""
        mixer = self.mixer
        while True:
            b = self.batch
            if b is None or self.cursor >= len(b.hashes):
                if not self._next_batch():
                    return None
                b = self.batch
            i = self.cursor
            self.cursor += 1
            self.consumed += 1
            h = b.hashes[i]
            if not h:  # dropped as too short (stats are in b.steps)
                if self.kept_ever == 0 and self.stats.documents_in + self.cursor >= FIRST_KEEP_WINDOW:
                    raise sources_mod.SourceError(
                        f"source {self.name!r}: the first {FIRST_KEEP_WINDOW} documents were all dropped by "
                        f"cleaning (shorter than min_chars={mixer.cfg.min_chars} after cleaning)")
                continue
            if mixer.dedup is not None and mixer.dedup.seen(h ^ ((self.epoch * _EPOCH_SALT) & 0xFFFFFFFFFFFFFFFF)):
                self.stats.duplicate_documents += 1
                self.stats.duplicate_chars += int(b.steps[i, 3])
                continue
            self.kept_ever += 1
            self.stats.documents_out += 1
            chars = int(b.steps[i, 3])
            self.stats.characters_out += chars
            if b.tokens is not None:
                doc = b.tokens[b.offsets[i]:b.offsets[i + 1]]
                units = len(doc)
            else:
                doc = Document(b.texts[i], self.name)
                units = chars
            self.units += units
            return doc, units

    def state(self) -> dict:
        """Where this source stands, for resuming in a later session (stats included)."""
        self._flush_stats()
        return {"epoch": self.epoch, "consumed": self.consumed, "kept": self.kept_ever, "units": self.units,
                "stats": self.stats.to_dict(), "skipped_files": dict(self.skipped | self._skip_now)}


class HashSet:
    """Exact-duplicate memory: 8 bytes per distinct document in a sorted array plus a small recent set."""

    def __init__(self, hashes: np.ndarray | None = None, buffer: int = 65536) -> None:
        self.sorted = np.unique(hashes.astype(np.uint64)) if hashes is not None else np.zeros(0, np.uint64)
        self.recent: set[int] = set()
        self.buffer = buffer

    def seen(self, h: int) -> bool:
        """True when `h` was added before; otherwise add it and return False."""
        if h in self.recent:
            return True
        arr = self.sorted
        if len(arr):
            j = int(np.searchsorted(arr, np.uint64(h)))
            if j < len(arr) and int(arr[j]) == h:
                return True
        self.recent.add(h)
        if len(self.recent) >= self.buffer:
            self._merge()
        return False

    def _merge(self) -> None:
        new = np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))
        self.sorted = np.union1d(self.sorted, new)
        self.recent.clear()

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
        if cfg.on_exhausted not in ("repeat", "stop"):
            raise ValueError(f"corpus.on_exhausted must be 'repeat' or 'stop', got {cfg.on_exhausted!r}")
        if not 0.0 <= cfg.symbol_level <= 1.0:
            raise ValueError(f"corpus.symbol_level must be in [0, 1], got {cfg.symbol_level}")
        self.cfg = cfg
        self.seed = cfg.seed if seed is None else seed
        self.weights = validate_mixture(cfg.mixture)
        self.model_file = model_file
        self.cleaning = cleaning  # False: the sources hold already-cleaned text (benchmarks, re-packing)
        self.workers = resolve_workers(cfg.workers if workers is None else workers)
        self.prefetch = self.workers + 1
        self.dedup = HashSet(dedup_hashes) if cfg.dedup else None
        self.pool = None
        if self.workers > 1:
            # fork where there is one: spawn re-imports __main__, which fails for stdin scripts and is slow;
            # the workers only run clean_batch (no threads, no locks inherited from the parent are used)
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = ctx.Pool(self.workers, initializer=init_worker, initargs=(model_file,))
        else:
            init_worker(model_file)
        state = state or {}
        try:
            self.feeds = [_Feed(self, i, name, w, state.get(name)) for i, (name, w) in enumerate(self.weights.items())]
        except BaseException:
            self.close()
            raise
        self.stopped: str | None = None  # the source that ran out when on_exhausted="stop"

    def submit(self, docs: list[str], math_source: bool) -> Any:
        """Queue one batch for cleaning (and tokenizing) on a worker."""
        args = (docs, self.cfg.symbol_level, math_source, self.cfg.min_chars, self.model_file is not None,
                self.model_file is None, 2, self.cleaning)
        if self.pool is None:
            return _Inline(clean_batch(*args))
        return self.pool.apply_async(clean_batch, args)

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

    def state(self) -> dict:
        """Per-source resume state and statistics."""
        return {f.name: f.state() for f in self.feeds}

    def close(self) -> None:
        """Stop the worker processes."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
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
