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
documents (`Mixer.take`: the documents one source gives in a row, as one view of its piece's token array, so
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
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import sources as sources_mod
from ..config import CorpusConfig, check_section, check_value
from ..platform import cpu_cores
from .clean import CleanedBatch, clean_batch, init_worker, warm
from .dedup import HashSet as HashSet  # re-exported: the mixer's duplicate memory
from .feed import Document as Document  # re-exported: what the mixer yields without a tokenizer
from .feed import SourceFeed
from .pieces import Piece, read_piece
from .workers import WorkerPool, worker_context


class MixtureError(ValueError):
    """Mixture weights that cannot be used: the message names the source and the value."""


def validate_mixture(mixture: dict[str, float]) -> dict[str, float]:
    """Normalised weights of the sources with a positive weight; unknown names and bad weights raise."""
    if not isinstance(mixture, dict) or not mixture:
        raise MixtureError(f"corpus.mixture must be a non-empty dict of source name -> weight, got {mixture!r}")
    for name, w in mixture.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            raise MixtureError(f"corpus.mixture[{name!r}]: weight must be a finite number, got {w!r}")
    check_value("corpus.mixture", mixture, MixtureError)  # config's rule: known names, weights >= 0, one positive
    total = float(sum(mixture.values()))
    return {name: w / total for name, w in mixture.items() if w > 0}


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use."""
    check_value("corpus.workers", workers, ValueError)
    return workers or cpu_cores()


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


class Mixer:
    """The mixed, cleaned, deduplicated document stream of a CorpusConfig (tokens when `model_file` is given)."""

    def __init__(self, cfg: CorpusConfig, model_file: str | None = None, seed: int | None = None,
                 workers: int | None = None, state: dict | None = None, dedup_hashes: np.ndarray | None = None,
                 cleaning: bool = True):
        check_section(cfg, ValueError)  # config's rules, for a CorpusConfig built by hand
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
            self.feeds = [SourceFeed(self, i, name, w, state.get(name)) for i, (name, w) in enumerate(self.weights.items())]
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

        The same documents in the same order as iterating, grouped into runs of one source (see `SourceFeed.run`);
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
