"""The batch source over the producer's stream: what 03 trains on and 04 replays.

`StreamBatches` reads the parts the producer (`producer.py`) writes. Global micro-batch g holds the stream's
blocks g·B … g·B+B−1, each part's blocks in an order shuffled by (train seed, part), and rank r of w reads global
micro-batches i·w+r. So `batch(i)` is a pure function of i, ranks read disjoint blocks, and what they read
together does not depend on the world size: a checkpoint of two ranks resumes in one process. `batch(i)` waits
for its part when the producer has not made it yet, and checks the parts of the whole global micro-batch, so
every rank raises the same error at the same index (`DataSourceError`: the producer failed; `DataExhausted`:
the stream ended).

The data position (`state_dict(i)`) is the part holding micro-batch i's first block and the stream state at
that part's start, with the duplicate memory's hashes as an array. `load_state_dict` starts the producer at
that part, so a resume needs nothing but the checkpoint (a Kaggle saved version starts with empty scratch).
The local rank 0 process owns the producer: it starts it (at the first batch, or on `load_state_dict`), tells it
which part is being read, and starts it again from the part being waited for when it died without an error
(killed, out of memory), at most RESTARTS times.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any

import numpy as np
import torch

from ..batches import DataExhausted, DataSourceError, rank_world
from ..dist import local_rank
from ..platform import cpu_cores
from .parts import read_complete, same_state
from .producer import Producer, Stream, run_token, stop_process

RESTARTS = 3  # a producer that died without an error is started again this many times in a session
POLL_S = (0.002, 0.05)  # waiting for a part: the first and the longest sleep between looks
STATE_FORMAT = 1


SMALL_HOST_CORES = 4  # up to this many cores, a trainer whose threads spin leaves one core to the producer


def trainer_threads(cores: int | None = None) -> int:
    """This trainer's intra-op threads once a producer runs beside it: fewer only where they would spin.

    With passive OpenMP waits (nbhelpers sets them when it is imported before torch) all cores stay the
    trainer's: the producer runs at a lower priority and takes what the trainer leaves (bench/shared_host.py:
    no loss on a quiet host). Where torch was loaded first its threads spin, and on a small host one core
    taken by the producer stalls them all (0.015 of the quiet speed measured), so one core is left to it.
    """
    import nbhelpers

    threads = torch.get_num_threads()
    cores = cores or cpu_cores()
    if not nbhelpers.OMP_PASSIVE and cores <= SMALL_HOST_CORES and threads >= cores > 1:
        threads = cores - 1
        torch.set_num_threads(threads)
    return threads


class StreamBatches:
    """Micro-batches of the producer's stream for one rank; input_ids = labels (the model shifts).

    `len()` is the micro-batches the token budget gives this rank (`total_blocks` blocks in all); `batch(i)`
    past it reads on into the stream. See the module docstring for the layout and the data position.
    """

    def __init__(self, stream: Stream, start: dict[str, Any], start_hashes: np.ndarray | None, micro_batch: int,
                 total_blocks: int, seed: int = 0, *, rank: int | None = None, world_size: int | None = None,
                 owner: bool | None = None, last_part: int | None = None) -> None:
        self.stream = stream
        self.store = stream.store()
        self.B = self.micro_batch = int(micro_batch)  # micro_batch: the batch-source protocol's (batches.py)
        self.seed = int(seed)
        self.rank, self.world = rank_world(micro_batch, rank, world_size)
        # torchrun sets LOCAL_RANK; processes started without it have one owner, the global rank 0
        on_host = local_rank() if "LOCAL_RANK" in os.environ else self.rank
        self.owner = on_host == 0 if owner is None else owner
        self._len = int(total_blocks) // (self.B * self.world)
        if self._len == 0:
            raise ValueError(f"the token budget's {total_blocks} blocks cannot fill one micro-batch of {self.B} on "
                             f"each of {self.world} rank(s); raise corpus.token_budget or lower train.micro_batch")
        self.last_part = last_part
        self.first, self.first_state = 0, start
        self.first_hashes = np.zeros(0, np.uint64) if start_hashes is None else np.asarray(start_hashes, np.uint64)
        self.producer: Producer | None = None
        self._finalizer: Any = None
        self._parts: dict[int, tuple[dict[str, Any], np.ndarray, np.ndarray]] = {}  # k -> (meta, blocks, order)
        self._lock = threading.Lock()  # the XLA loader's thread reads batches while the loop saves
        self.reported = -1
        self.highest = 0  # the last part opened
        self.restarts = 0
        self.waits = 0  # parts waited for, after the first of the session
        self.wait_s = 0.0
        self.startup_wait_s = 0.0
        self.parts_read = 0
        self.peak_disk = 0

    def __len__(self) -> int:
        return self._len

    # ------------------------------------------------------------ reading

    def positions(self, index: int) -> range:
        """Stream positions of the blocks of this rank's micro-batch `index`."""
        if index < 0:
            raise IndexError(f"batch index must be >= 0, got {index}")
        g = index * self.world + self.rank
        return range(g * self.B, (g + 1) * self.B)

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Micro-batch `index`: input_ids (B, T) int64 and labels equal to it (waits for its part if need be)."""
        lo = index * self.world * self.B  # the whole global micro-batch: every rank checks the same parts
        hi = lo + self.world * self.B
        pb = self.stream.part_blocks
        parts = {k: self._part(k) for k in range(lo // pb, (hi - 1) // pb + 1)}
        for k, (meta, _, _) in parts.items():
            if meta["last"] and hi > k * pb + int(meta["blocks"]):
                raise DataExhausted(f"the corpus stream ended at block {k * pb + int(meta['blocks'])} (source "
                                    f"{meta['stopped']!r} ran out with corpus.on_exhausted='stop')")
        if self.owner and lo // pb > self.reported:
            self.reported = lo // pb
            if self.producer is not None:
                self.producer.tell(self.reported)
        rows = []
        for pos in self.positions(index):
            _, blocks, order = parts[pos // pb]
            rows.append(blocks[order[pos % pb]])
        ids = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, T)
        return {"input_ids": ids, "labels": ids.clone()}

    def _part(self, k: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        got = self._parts.get(k)
        if got is not None:
            return got
        if k < self.first:
            raise IndexError(f"part {k} of the corpus stream is before the position this run resumed at (part "
                             f"{self.first}); it is not kept")
        if k < self.highest - 1 and self.store.meta(k) is None:
            raise IndexError(f"part {k} of the corpus stream was read and deleted (the loop reads on: part "
                             f"{self.highest} now); earlier micro-batches are not kept")
        if k == self.first:
            expected = self.first_state
        else:
            prev = self._part(k - 1)[0]
            if prev["last"]:
                raise DataExhausted(f"the corpus stream ended with part {k - 1} (source {prev['stopped']!r} ran out "
                                    "with corpus.on_exhausted='stop')")
            expected = prev["end"]
        meta = self._wait(k, expected)
        blocks = self.store.blocks(k, meta)
        order = np.random.default_rng([self.seed, k]).permutation(len(blocks))  # blocks of a part, shuffled
        with self._lock:
            self._parts[k] = (meta, blocks, order)
            self.highest = max(self.highest, k)
            for old in [j for j in self._parts if j < k - 2]:  # a few parts stay open: the loop reads in order
                del self._parts[old]
        self.parts_read += 1
        self.peak_disk = max(self.peak_disk, self.store.disk_bytes())
        return meta, blocks, order

    def _wait(self, k: int, expected: dict[str, Any]) -> dict[str, Any]:
        """Part k's metadata once it is complete and starts where the stream stands; waits for the producer."""
        t0 = time.perf_counter()
        sleep = POLL_S[0]
        waited = False
        while True:
            meta = self.store.meta(k)
            if meta is not None and same_state(meta["start"], expected):
                break
            waited = True
            self._check_producer(k, expected)
            time.sleep(sleep)
            sleep = min(2 * sleep, POLL_S[1])
        if waited:
            seconds = time.perf_counter() - t0
            if self.parts_read == 0:
                self.startup_wait_s += seconds
            else:
                self.waits += 1
                self.wait_s += seconds
        return meta

    def _error(self) -> dict[str, Any] | None:
        return read_complete(self.store.root / f"error-{run_token()}.json")

    def _check_producer(self, k: int, expected: dict[str, Any]) -> None:
        """Raise the producer's error; as the owner, start the producer or start it again when it died."""
        if self.owner and self.producer is None:  # starting it clears an earlier session's error
            self._start(self.first, self.first_state, self.first_hashes)
            return
        err = self._error()
        if err is not None:
            raise DataSourceError(f"the corpus producer stopped: {err['type']}: {err['message']}")
        if not self.owner:
            return
        code = self.producer.poll()
        if code is None:
            return
        if code == 0:  # it finished (its last part, or the stream's end): what it made is there
            if self.store.meta(k) is None:
                raise DataSourceError(f"the corpus producer finished without making part {k} (it was asked to stop "
                                      f"after part {self.last_part})")
            return
        err = self._error()
        if err is not None:
            raise DataSourceError(f"the corpus producer stopped: {err['type']}: {err['message']}")
        if self.restarts >= RESTARTS:
            raise DataSourceError(f"the corpus producer process ended (exit code {code}) {self.restarts + 1} times "
                                  f"without making part {k}; its last output:\n{self.producer.log_tail()}")
        self.restarts += 1
        self._launch(k, expected)  # from the part being waited for: the duplicate log already holds its start

    def _start(self, first: int, state: dict[str, Any], hashes: np.ndarray) -> None:
        """Start the producer at part `first` (state at its start, duplicate memory `hashes`)."""
        if self.producer is not None:  # a producer still running (from batch(0), say) must not write the log now
            self.producer.stop()
            self.producer = None
        self.store.ensure_dedup(hashes, self.stream.corpus.get("dedup", True))
        self._launch(first, state)

    def _launch(self, first: int, state: dict[str, Any]) -> None:
        if self.producer is not None:
            self.producer.stop()
        trainer_threads()
        if self._finalizer is not None:
            self._finalizer.detach()
        self.producer = Producer(self.stream, first, state, self.last_part)
        self._finalizer = weakref.finalize(self, stop_process, self.producer.proc)  # no orphan when the source is dropped
        self.reported = -1

    # ------------------------------------------------------------ the data position

    def state_dict(self, index: int) -> dict[str, Any]:
        """The data position from which micro-batch `index` on can be made again (see the module docstring)."""
        k = index * self.world * self.B // self.stream.part_blocks
        with self._lock:
            here, before = self._parts.get(k), self._parts.get(k - 1)
        if k == self.first:
            start = self.first_state
        elif here is not None:
            start = here[0]["start"]
        elif before is not None:
            start = before[0]["end"]
        else:
            meta = self.store.meta(k)
            prev = self.store.meta(k - 1)
            if meta is None and prev is None:
                raise ValueError(f"no stream position for micro-batch {index} (part {k}): it has not been read")
            start = meta["start"] if meta is not None else prev["end"]
        if k == self.first:
            hashes = self.first_hashes  # in memory: the log may not be written yet
        elif self.stream.corpus.get("dedup", True):
            hashes = self.store.read_dedup(start["dedup"])
        else:
            hashes = np.zeros(0, np.uint64)
        return {"format": STATE_FORMAT, "fingerprint": self.stream.fingerprint, "block_len": self.stream.block_len,
                "part_blocks": self.stream.part_blocks, "part": k, "start": start, "dedup": hashes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's data position: the producer starts at its part."""
        want = {"format": STATE_FORMAT, "fingerprint": self.stream.fingerprint, "block_len": self.stream.block_len,
                "part_blocks": self.stream.part_blocks}
        diff = [f"{key} {state.get(key)!r} in the checkpoint, {value!r} now" for key, value in want.items()
                if state.get(key) != value]
        if diff:
            raise ValueError("the checkpoint's data position belongs to another corpus stream (" + "; ".join(diff)
                             + "): the corpus settings (corpus.*, the tokenizer) must be those the run started with; "
                             "use them, or start a new run directory")
        with self._lock:
            self._parts.clear()
        self.first, self.first_state = int(state["part"]), state["start"]
        self.highest = self.first
        self.first_hashes = np.asarray(state.get("dedup", np.zeros(0)), np.uint64)
        if self.owner:
            self._start(self.first, self.first_state, self.first_hashes)

    # ------------------------------------------------------------ the end

    def stats(self) -> dict[str, Any]:
        """What reading cost: waits for parts after the first, their seconds, parts read, the folder's peak size."""
        return {"waits": self.waits, "wait_s": round(self.wait_s, 3), "startup_wait_s": round(self.startup_wait_s, 3),
                "parts_read": self.parts_read, "producer_restarts": self.restarts, "peak_disk_bytes": self.peak_disk,
                "parts_dir": str(self.store.root)}

    def close(self) -> None:
        """Stop the producer (owner) and drop the open parts."""
        with self._lock:
            self._parts.clear()
        if self.producer is not None:
            self.producer.stop()
            self.producer = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None


def replay_blocks(cfg: Any, run_root: Any, trainers: int = 1) -> np.ndarray:
    """The stream's first part as (blocks, block_len) uint16 in memory: pre-training text for 04's replay rows.

    Made by the producer as in 03 (or read from the parts folder when it is still there); the local rank 0
    process makes it, the others wait for it.
    """
    from .producer import open_stream

    stream, start, hashes, _ = open_stream(cfg, run_root, trainers=trainers)
    source = StreamBatches(stream, start, hashes, 1, stream.part_blocks, rank=0, world_size=1, last_part=0,
                           owner=local_rank() == 0)
    try:
        meta, blocks, _ = source._part(0)
        return np.array(blocks)  # a copy: the folder may be cleaned once the producer is gone
    finally:
        source.close()
