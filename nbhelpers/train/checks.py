"""The bad-step guards: non-finite steps skipped on the device, counted there, and a stop after too many in a row.

Under fp16 the GradScaler skips the step (a gradient overflow is normal there and not counted; a non-finite loss
is). Otherwise the step is skipped on the device (fused AdamW's `found_inf`, no host sync); optimizers without that
skip after a host check (CPU, CUDA) or, on XLA, step with zeroed gradients. When `max_bad_steps` consecutive steps
were bad the loop raises `BadStepsError` at the next logging or saving step, without writing a checkpoint, so the
newest checkpoint is the last good one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import checkpoint as ckpt
from .job import BadStepsError


def guarded_update(optimizer: torch.optim.Optimizer, ok: torch.Tensor, params: list[torch.nn.Parameter],
                   backend: str) -> None:
    """optimizer.step() unless `ok` (a 0-d bool tensor) is False, deciding on the device where the optimizer allows it."""
    opt = optimizer
    if getattr(opt, "_step_supports_amp_scaling", False):  # fused AdamW: skips inside the kernel
        opt.grad_scale, opt.found_inf = None, (~ok).to(torch.float32)
        try:
            opt.step()
        finally:
            del opt.grad_scale, opt.found_inf
    elif backend != "xla":
        if bool(ok):  # host check: only non-fused optimizers (8-bit AdamW) pay it
            opt.step()
    else:  # no host sync on XLA: a bad step becomes a zero-gradient step
        grads = [p.grad for p in params if p.grad is not None]
        for g in grads:
            g.copy_(torch.where(ok, g, torch.zeros_like(g)))
        opt.step()


class BadSteps:
    """Counters of bad steps on the device (current run, longest run, total), read on the host only when asked."""

    def __init__(self, device: torch.device, world: int, max_bad_steps: int) -> None:
        zeros = torch.zeros((), dtype=torch.int32, device=device)
        self.run, self.longest, self.total = zeros, zeros.clone(), zeros.clone()
        self.world, self.max_bad_steps = world, max_bad_steps

    def record(self, ok: torch.Tensor) -> None:
        """Count one step: `ok` False makes it bad (no host sync)."""
        bad = (~ok).to(torch.int32)
        self.run = (self.run + 1) * bad  # consecutive bad steps, reset by a good one
        self.longest = torch.maximum(self.longest, self.run)
        self.total = self.total + bad

    def stats(self) -> torch.Tensor:
        """(current run, longest run since start, total) as a float32 (3,) tensor on the device, agreed across ranks."""
        stats = torch.stack([self.run, self.longest, self.total]).to(torch.float32)
        if self.world > 1:
            torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.MAX)
        return stats

    def read(self) -> tuple[int, int, int]:
        """`stats` read on the host."""
        run, longest, total = (int(x) for x in self.stats().tolist())
        return run, longest, total

    def check(self, step: int, longest: int, ckpt_root: Path, metrics: Any) -> None:
        """Raise BadStepsError when `longest` reached train.max_bad_steps (0 never stops)."""
        if 0 < self.max_bad_steps <= longest:
            last = ckpt.latest(ckpt_root)
            msg = (f"stopped at step {step}: {longest} consecutive steps had a non-finite loss or gradient "
                   f"(train.max_bad_steps={self.max_bad_steps}); they were skipped and no checkpoint was "
                   f"written after them; the last good checkpoint is {last or 'none (no checkpoint yet)'}. "
                   "Lower train.lr or raise train.warmup_steps (or check the data), then run again: it resumes "
                   "from that checkpoint.")
            metrics.write(kind="event", step=step, event="bad_steps", message=msg)
            raise BadStepsError(msg)
