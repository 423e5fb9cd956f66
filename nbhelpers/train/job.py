"""What one `train` call is given (the Job) and what it gives back (the TrainResult), and the loop's errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..batches import BatchSource
from ..config import TrainConfig


class TrainingError(RuntimeError):
    """The loop cannot start or continue; the message says why and what to change."""


class BadStepsError(TrainingError):
    """Too many consecutive steps with a non-finite loss or gradient."""


@dataclass(frozen=True)
class Job:
    """One stage's training: built once (by `launch` for 03 and 04, in the kernel and in each worker), trained by
    `train(job)`, held by the trainer.

    `train_batches` and each of `eval_batches` follow the batch-source protocol (batches.py); under DDP each rank
    passes its own share. `total_steps` defaults to cfg.max_steps, else one pass. `lr_horizon` (default
    `total_steps`) is the step at which the cosine reaches its minimum (see `train`). `device_choice` defaults to
    `device.select(cfg)`; `peak_flops` is one device's peak FLOP/s for MFU (`planner.peak_flops`; None: no MFU).
    """

    model: torch.nn.Module
    train_batches: BatchSource
    cfg: TrainConfig
    out_dir: Path
    eval_batches: Mapping[str, BatchSource] = field(default_factory=dict)
    tokenizer: Any = None
    total_steps: int | None = None
    device_choice: Any = None
    peak_flops: float | None = None
    lr_horizon: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))  # a str is welcome
        object.__setattr__(self, "eval_batches", dict(self.eval_batches or {}))


@dataclass
class TrainResult:
    """What `train` did: why it stopped, where things are, the last figures."""

    status: str  # done | time_budget | data_end (total_steps reached before lr_horizon: more data, then rerun)
    step: int
    total_steps: int
    out_dir: Path
    metrics_path: Path
    checkpoint: Path | None = None
    final_dir: Path | None = None
    resumed_from: int | None = None
    train_loss: float | None = None
    eval: dict[str, dict[str, float | None]] = field(default_factory=dict)  # split -> {"loss", "ppl", "bpb"}, last eval
    tokens_per_s: float | None = None
    mfu: float | None = None
    device: dict[str, Any] = field(default_factory=dict)
