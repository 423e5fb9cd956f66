"""The mixer's exact-duplicate memory: a sorted array of document hashes, a small recent set, and the log."""

from __future__ import annotations

import numpy as np

DEDUP_BUFFER = 65536  # recent hashes kept in a Python set before merging into the sorted array


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
