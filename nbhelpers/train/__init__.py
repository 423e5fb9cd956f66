"""The one training loop for CPU, CUDA (DDP under torchrun) and XLA: exact resume, time budget, NaN guard.

`train(Job(model, batches, cfg.train, out_dir, ...))` (or `train(model, batches, ...)`) writes `out_dir/checkpoints/step_*/`,
`out_dir/metrics.jsonl` (one JSON object per line, `kind` = train | eval | samples | event; an eval record
holds loss, ppl and, with a tokenizer, bpb: bits per UTF-8 byte of the scored text, see token_bytes.py) and, when
the planned steps are done, `out_dir/final/` (save_pretrained + tokenizer). A call returns with status
`done`, `time_budget` (checkpointed before `max_minutes` ran out) or `data_end` (the data given ran
out before `lr_horizon`); calling it again with the same out_dir resumes the newest complete
checkpoint: weights, optimizer, scheduler, scaler, RNG states and the data position, so the losses
continue exactly as if the run had never stopped.

How a step runs (the same on every backend): `grad_accum` micro-batches forward and backward under
autocast (DDP syncs gradients only on the last), loss scaled by the step's target-token count so the
step's loss is the token mean; unscale (fp16), clip, optimizer step, scheduler step. Nothing in a
step reads a tensor on the host: losses, the gradient norm and the bad-step counters stay on the
device and are read every `log_every` steps (and before a checkpoint). The backend seams are the
`Hooks` methods: where batches are moved to the device (torch_xla's parallel loader on XLA), what
runs after each optimizer step (the XLA step marker), how the model is wrapped (FSDPv2).

Non-finite losses or gradients: under fp16 the GradScaler skips the step (a gradient overflow is
normal there and not counted; a non-finite loss is). Otherwise the step is skipped on the device
(fused AdamW's `found_inf`, no host sync); optimizers without that skip after a host check (CPU,
CUDA) or, on XLA, step with zeroed gradients. When `max_bad_steps` consecutive steps were bad the
loop raises `BadStepsError` at the next logging or saving step, without writing a checkpoint, so
the newest checkpoint is the last good one.

The optimizer and the learning-rate schedule (warmup + cosine, or wsd; re-planned when a resume asks for
another horizon) come from `optim.py`; the checkpoint keeps the plan, so a resumed run follows it exactly.
`train.finish=true` anneals a stopped run: the plan becomes a decay over the next `train.decay_fraction` x the
steps so far, the run ends there and writes final/ (resumed mid-decay, with or without the flag, it goes on
with the saved decay). Besides `save_every` / `eval_every` steps, `train.save_minutes` / `train.eval_minutes`
checkpoint and evaluate by wall time.
MFU divides by the `peak_flops` the caller passes (the planner's figure, measured there on a CPU).

The package, one purpose a module: `job` (what a call is given and returns), `trainer` (set-up and the step loop),
`resume` (checkpoint first, then the batch at its data position), `hooks` (the backend seams), `checks` (the
bad-step guards), `clock` (time budget, saving and evaluating by minutes), `evaluate` (eval loss, ppl, bpb),
`metrics` (metrics.jsonl), `setup` (processes, shapes, FLOPs, a step's micro-batches), `final` (final/).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .hooks import Hooks, default_hooks
from .job import BadStepsError, Job, TrainingError, TrainResult
from .metrics import METRICS_FILE, read_metrics
from .setup import enable_checkpointing, flops_per_token
from .trainer import Trainer

__all__ = ["METRICS_FILE", "BadStepsError", "Hooks", "Job", "TrainResult", "Trainer", "TrainingError", "default_hooks",
           "enable_checkpointing", "flops_per_token", "read_metrics", "train"]


def train(job: Job | Any, *args: Any, hooks: Hooks | None = None, progress: bool = True,
          on_eval: Callable[[Path], Any] | None = None, **fields: Any) -> TrainResult:
    """Train `job` until its total steps (else cfg.max_steps, else one pass), resuming by itself; returns a TrainResult.

    `train(model, train_batches, cfg, out_dir, eval_batches=..., ...)` builds the Job from the same arguments.
    `lr_horizon` (default `total_steps`) is the step at which the cosine reaches its minimum: a run whose corpus is
    built one session part at a time passes the steps its whole token budget gives, trains to the end of the data
    built so far (status `data_end`, no final/), and continues on the same schedule once more data is built. A
    horizon that differs from the checkpoint's is re-planned (see `optim.py`). `hooks` default to
    `default_hooks(device_choice)`. `on_eval(metrics_path)` runs on rank 0 after each evaluation (the notebooks'
    live loss curve). Raises BadStepsError after `cfg.max_bad_steps` consecutive non-finite steps.
    """
    if not isinstance(job, Job):
        job = Job(job, *args, **fields)
    elif args or fields:
        raise TypeError("train(job): pass the job alone, or the model and the job's fields instead of a job")
    return Trainer(job, hooks, progress, on_eval).run()
