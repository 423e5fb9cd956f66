"""Fixed-shape batch sources for the loop: packed blocks shuffled by epoch, split across DDP ranks.

A batch source is any object with `__len__()` (micro-batches in one pass) and `batch(i)` returning
`{"input_ids", "labels"}` int64 tensors of shape (B, T); `batch(i)` is a pure function of `i`, and
past `len` it continues into the next pass, so a resumed run reads exactly what it would have read.
A source may also tell its micro-batch size B as `micro_batch`: a resume then finds where to read on
without reading a batch first (after a change of B it would otherwise read one batch at the old layout's index).

A source whose data position must travel with the checkpoint (the corpus producer's stream, whose parts
are not kept) also has `state_dict(index) -> dict`, the position from which micro-batch `index` on can be
made again, and `load_state_dict(state)`; the loop saves the one and calls the other on resume. Values of
the dict that are numpy arrays are bulky state (`split_state` / `join_state` move them in and out of the
checkpoint's array file). `batch(i)` may raise `DataSourceError` (the data cannot be had: the loop saves a
checkpoint and stops, naming the cause) or `DataExhausted` (the stream has ended: training is done).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from . import dist
from .layout import TOKEN_DTYPE


class BlockReader(Protocol):
    """A corpus split: `len(reader)` blocks, `reader[i]` -> np.ndarray (block_len,) uint16."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class BatchSource(Protocol):
    """What `train.train` reads: `len()` micro-batches per pass, `batch(i)` pure in `i`."""

    def __len__(self) -> int: ...

    def batch(self, index: int) -> dict[str, torch.Tensor]: ...


class DataSourceError(RuntimeError):
    """The data for a batch cannot be had (a source failed after its retries): the message names the source."""


class DataExhausted(RuntimeError):
    """The stream ended before this batch (a source ran out with `corpus.on_exhausted="stop"`)."""


ARRAY_PREFIX = "data."


def split_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A source's `state_dict` as (JSON-able part, {name: array}) for a checkpoint's state and array files."""
    plain = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    arrays = {ARRAY_PREFIX + k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    return plain, arrays


def join_state(plain: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of `split_state`: the dict `load_state_dict` takes."""
    return {**plain, **{k[len(ARRAY_PREFIX):]: v for k, v in arrays.items() if k.startswith(ARRAY_PREFIX)}}


def rank_world(micro_batch: int, rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This source's (rank, world size): given, or this process's; checked with the micro-batch size."""
    env_rank, env_world = dist_rank_world()
    rank = env_rank if rank is None else int(rank)
    world = env_world if world_size is None else int(world_size)
    if int(micro_batch) < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    return rank, world


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of this process: torch.distributed when initialised, else torchrun's env vars."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return dist.rank(), dist.world_size()


class PackedBatches:
    """Micro-batches of `micro_batch` blocks; input_ids = labels (the model shifts).

    Pass `e` (micro-batch index `i // len`) visits the blocks in a shuffled order seeded by (seed, e);
    global micro-batch `g` takes ordered blocks `g*B .. g*B+B-1`, and rank `r` of `w` reads global
    micro-batches `j*w + r`, so ranks read disjoint blocks and together read what one process with
    micro-batch `w*B` would. Blocks that do not fill a last global micro-batch are left out of that
    pass (a different set each pass). `shuffle=False` keeps the reader's order (for evaluation), and
    `limit` caps the micro-batches per pass. (03's training stream is `corpus.stream.StreamBatches`.)
    """

    def __init__(
        self,
        reader: BlockReader,
        micro_batch: int,
        seed: int = 0,
        *,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        limit: int = 0,
    ) -> None:
        self.reader = reader
        self.micro_batch = int(micro_batch)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank, self.world_size = rank_world(micro_batch, rank, world_size)
        per_pass = len(reader) // (self.micro_batch * self.world_size)
        if per_pass == 0:
            raise ValueError(
                f"{len(reader)} blocks cannot fill one micro-batch of {self.micro_batch} on each of "
                f"{self.world_size} rank(s); build more corpus or lower train.micro_batch"
            )
        self._len = min(per_pass, limit) if limit > 0 else per_pass
        self._perm_epoch = -1
        self._perm = np.arange(len(reader))

    def __len__(self) -> int:
        return self._len

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self._perm
        if epoch != self._perm_epoch:  # one order per pass, cached: batch(i) stays pure
            self._perm = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.reader))
            self._perm_epoch = epoch
        return self._perm

    def block_indices(self, index: int) -> np.ndarray:
        """Reader indices of the blocks in micro-batch `index` of this rank."""
        if index < 0:
            raise IndexError(f"batch index must be >= 0, got {index}")
        epoch, j = divmod(index, self._len)
        g = j * self.world_size + self.rank
        return self._order(epoch)[g * self.micro_batch : (g + 1) * self.micro_batch]

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Micro-batch `index`: input_ids (B, T) int64 and labels (B, T) equal to it."""
        rows = np.stack([np.asarray(self.reader[int(k)]) for k in self.block_indices(index)])
        ids = torch.from_numpy(rows.astype(np.int64))  # (B, T)
        return {"input_ids": ids, "labels": ids.clone()}


class ArrayBlocks:
    """A block reader over an in-memory (n_blocks, block_len) array: tests and small data."""

    def __init__(self, blocks: np.ndarray) -> None:
        self.blocks = np.asarray(blocks, dtype=TOKEN_DTYPE)
        if self.blocks.ndim != 2:
            raise ValueError(f"blocks must be 2-D (n_blocks, block_len), got shape {self.blocks.shape}")

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.blocks[index]

    @property
    def block_len(self) -> int:
        return self.blocks.shape[1]
