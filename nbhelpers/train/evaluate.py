"""The loop's evaluation: loss, perplexity and bits per byte of the model on one eval source, summed over ranks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..batches import BatchSource
from ..token_bytes import TokenBytes, bits_per_byte
from .hooks import Hooks
from .setup import cpu_groups


def eval_figures(model: torch.nn.Module, source: BatchSource, n: int, device: torch.device, hooks: Hooks,
                 autocast: Callable[[], Any], world: int, token_bytes: TokenBytes | None) -> dict[str, float | None]:
    """{"loss", "ppl", "bpb"} over the first `n` micro-batches of `source` (bpb None without `token_bytes`)."""
    counts: dict[int, int] = {}
    byte_counts: dict[int, int] = {}
    loss_sum = torch.zeros((), device=device)
    targets = nbytes = 0
    cpu = cpu_groups(source, 0, 1, counts, 0, limit=n, token_bytes=token_bytes, byte_counts=byte_counts)
    for i, group in enumerate(hooks.device_batches(cpu, device)):
        with autocast():
            out = model(**group[0], num_items_in_batch=1)  # summed over targets
        loss_sum = loss_sum + out.loss.float()
        targets += counts.pop(i)
        nbytes += byte_counts.pop(i, 0)
        hooks.after_eval_batch()
    if world > 1:  # ranks may hold different eval shares: sum losses, targets and bytes over ranks
        stats = torch.stack([loss_sum, torch.tensor(float(targets), device=device),
                             torch.tensor(float(nbytes), device=device)])
        torch.distributed.all_reduce(stats)
        total, count, nbytes = stats.tolist()
    else:
        total, count = loss_sum.item(), float(targets)
    loss = total / max(count, 1.0)
    ppl = math.exp(loss) if loss < 700 else float("inf")
    bpb = bits_per_byte(total, nbytes) if token_bytes is not None else None
    return {"loss": loss, "ppl": ppl, "bpb": bpb}
