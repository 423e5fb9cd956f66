"""Where a `train` call starts: the newest complete checkpoint first, then the one batch at its data position.

The order matters for the corpus stream: its parts live on scratch, which a new Kaggle version starts empty, so
a batch read before the data position is loaded would make the producer build the stream's part 0 for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint as ckpt
from ..batches import BatchSource, join_state
from .setup import check_batch


def load_checkpoint(ckpt_root: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                    rank: int, barrier: Callable[[], None], source: BatchSource
                    ) -> tuple[Path | None, dict[str, Any] | None]:
    """(path, state) of the newest complete checkpoint, loaded into the model, optimizer, scaler and the batch
    source's data position; (None, None) for a fresh start. RNG states are restored later, by the caller."""
    main = rank == 0
    if main:
        ckpt.clean_incomplete(ckpt_root)
    barrier()
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    # the newest checkpoint that loads whole; newer ones with a missing or damaged part are named and set aside
    found = ckpt.load_latest(ckpt_root, model=model, optimizer=optimizer, scaler=scaler, rank=rank,
                             restore_rng_state=False, set_aside=main)
    if found is None:
        return None, None
    path, state = found
    for group, kept in zip(optimizer.param_groups, kernels):  # this device's kernels, not the saver's
        group.update(kept)
    if "data" in state and hasattr(source, "load_state_dict"):  # the stream's position (batches.py)
        source.load_state_dict(join_state(state["data"], ckpt.read_arrays(path)))
    return path, state


def first_batch(source: BatchSource, state: dict[str, Any] | None, world: int, model: torch.nn.Module,
                tokenizer: Any) -> tuple[int, tuple[int, int]]:
    """(micro-batch index to start at, micro-batch shape (B, T)), checking the batch there against the model.

    A checkpoint written with another micro-batch size or world size resumes after the same samples, counted
    in the new layout (exact for PackedBatches); the source's `micro_batch` (batches.py) gives the new size
    without a read, else the checkpoint's size is assumed for the one batch read.
    """
    if state is None:
        return 0, check_batch(source.batch(0), 0, model, tokenizer)
    saved = int(state["micro_index"])
    old_b, old_world = state.get("micro_batch"), state.get("world_size")
    b = getattr(source, "micro_batch", None) or old_b
    micro = saved
    if (old_b, old_world) != (b, world):
        micro = saved * old_b * old_world // (b * world)
    shape = check_batch(source.batch(micro), micro, model, tokenizer)
    if shape[0] != b:  # a source without `micro_batch` whose size changed: count again in its real size
        micro = saved * old_b * old_world // (shape[0] * world)
    return micro, shape
