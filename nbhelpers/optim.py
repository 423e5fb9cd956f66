"""The training loop's optimizer and learning-rate schedule: which update for which parameters, and the LR of each step.

`build_optimizer(model, cfg, backend)` gives AdamW (fused where the backend has it; no weight decay on
biases and norms) or bitsandbytes' 8-bit AdamW. The schedule is `make_scheduler(optimizer, plan, step)`:
a `LambdaLR` over `lr_factor`, positioned after `step` completed optimizer steps.

Learning rate: linear warmup from 0 to `lr`, then cosine to `lr * min_lr_ratio` at the planned horizon
(the same numbers as transformers' `get_cosine_with_min_lr_schedule_with_warmup`). On resume with a
different horizon (or lr settings) the schedule is re-planned: still inside the warmup, the new plan
simply replaces the old one (the LR so far is the same when `lr` and `warmup_steps` are); after the
warmup, the LR continues from the value it had at the checkpoint and follows a new warmup-free half
cosine to `lr * min_lr_ratio` at the new horizon. A longer horizon therefore never continues an
already-decayed schedule and never jumps the LR; a schedule that had fully decayed stays at its
minimum (the loop logs an `lr_replan` event saying so).

A plan is a JSON-able dict stored in each checkpoint's state.json: `peak`, `warmup`, `total`,
`min_ratio` and, after a re-plan, `restart` = {"step", "lr"}.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch

from .config import TrainConfig

OPTIMIZERS = ("adamw", "adamw8bit")


class OptimizerError(RuntimeError):
    """The configured optimizer cannot run here; the message says what to install or change."""


# ---------------------------------------------------------------- optimizers


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, backend: str) -> torch.optim.Optimizer:
    """`cfg.optimizer` over the model's trainable parameters; each param group's `lr` is its peak LR."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # biases and norms: no decay
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas)}
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise OptimizerError("train.optimizer=adamw8bit needs bitsandbytes and a CUDA GPU "
                                 "(pip install bitsandbytes), or use train.optimizer=adamw") from err
        return bnb.optim.AdamW8bit(groups, **kwargs)
    if cfg.optimizer != "adamw":
        raise OptimizerError(f"train.optimizer: expected {' | '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if backend in ("cpu", "cuda"):
        try:  # one kernel for all parameters, and it can skip a bad step on the device
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.AdamW(groups, foreach=backend != "xla" or None, **kwargs)


# ---------------------------------------------------------------- learning-rate plan


def wanted_plan(cfg: TrainConfig, horizon: int) -> dict[str, Any]:
    """The plan `cfg` asks for when the cosine ends at step `horizon`."""
    return {"peak": cfg.lr, "warmup": cfg.warmup_steps, "total": horizon, "min_ratio": cfg.min_lr_ratio}


def lr_factor(step: int, plan: dict[str, Any]) -> float:
    """LR of optimizer step `step` (0-based) as a fraction of `plan["peak"]`; see the module docstring."""
    peak, warmup, total, min_ratio = plan["peak"], plan["warmup"], plan["total"], plan["min_ratio"]
    restart = plan.get("restart")
    if restart is not None and step >= restart["step"]:
        s0, l0, min_lr = restart["step"], restart["lr"], peak * min_ratio
        progress = min(1.0, float(step - s0) / float(max(1, total - s0)))
        return (min_lr + (l0 - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))) / peak
    if step < warmup:
        return float(step) / float(max(1, warmup))
    # the same operations as transformers' cosine-with-min-lr lambda, so the numbers agree exactly
    progress = min(1.0, float(step - warmup) / float(max(1, total - warmup)))
    factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
    return max(0.0, factor * (1 - min_ratio) + min_ratio)


def lr_at(plan: dict[str, Any], step: int) -> float:
    """Absolute LR of optimizer step `step` under `plan`."""
    return plan["peak"] * lr_factor(step, plan)


def replan(saved: dict[str, Any] | None, wanted: dict[str, Any], step: int) -> tuple[dict[str, Any], str | None]:
    """The plan to continue with after `step` steps, and a message when it changed (see the module docstring)."""
    keys = ("peak", "warmup", "total", "min_ratio")
    if saved is None or all(saved[k] == wanted[k] for k in keys):
        return (saved or wanted), None
    changed = ", ".join(f"{k} {saved[k]} -> {wanted[k]}" for k in keys if saved[k] != wanted[k])
    if step < saved["warmup"]:
        return dict(wanted), f"schedule re-planned inside the warmup at step {step} ({changed})"
    current = lr_at(saved, step)
    plan = dict(wanted, restart={"step": step, "lr": current})
    note = (f"schedule changed at step {step} ({changed}): cosine from the current lr {current:.3g} "
            f"to {wanted['peak'] * wanted['min_ratio']:.3g} at step {wanted['total']}")
    if current <= wanted["peak"] * wanted["min_ratio"] * (1 + 1e-9):
        note += "; the old schedule had fully decayed, so the lr stays at its minimum"
    return plan, note


def make_scheduler(optimizer: torch.optim.Optimizer, plan: dict[str, Any], step: int = 0,
                   peaks: list[float] | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following `plan`, positioned after `step` completed optimizer steps.

    `peaks` holds each param group's peak LR (default: `plan["peak"]` for all); every group follows
    the plan's factor. Positioning uses LambdaLR's own `last_epoch`, which sets each group's `lr`.
    """
    peaks = peaks if peaks is not None else [plan["peak"]] * len(optimizer.param_groups)
    for group, peak in zip(optimizer.param_groups, peaks, strict=True):
        group["initial_lr"] = peak  # the base LR LambdaLR scales (a loaded checkpoint may hold an older one)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, plan=plan), last_epoch=step - 1)
