"""The one training loop for CPU, CUDA (DDP under torchrun) and XLA: exact resume, time budget, NaN guard.

`train(model, batches, cfg.train, out_dir, ...)` writes `out_dir/checkpoints/step_*/`,
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import optim
from .batches import BatchSource, DataExhausted, DataSourceError, join_state, split_state
from .config import TrainConfig
from .layout import STAGE_METRICS as METRICS_FILE
from .token_bytes import TokenBytes, bits_per_byte


def enable_checkpointing(model: Any) -> Any:
    """Turn on activation checkpointing (non-reentrant) under either transformers name; returns the model."""
    kwargs = {"use_reentrant": False}  # non-reentrant: works with DDP, compile and frozen inputs
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


class TrainingError(RuntimeError):
    """The loop cannot start or continue; the message says why and what to change."""


class BadStepsError(TrainingError):
    """Too many consecutive steps with a non-finite loss or gradient."""


# ---------------------------------------------------------------- backend seams


class Hooks:
    """Where the loop touches the backend; the XLA adapter (`xla.loop_hooks`) overrides these."""

    def device(self, choice: Any) -> torch.device:
        """The torch device to train on."""
        return torch.device(choice.device)

    def wrap_model(self, model: torch.nn.Module, choice: Any, cfg: TrainConfig) -> torch.nn.Module:
        """The module the training step calls (sharded, for example); the unwrapped one is checkpointed."""
        return model

    def device_batches(self, groups: Iterable[list[dict[str, torch.Tensor]]], device: torch.device
                       ) -> Iterator[list[dict[str, torch.Tensor]]]:
        """Move each step's micro-batches (CPU tensors) to the device, in order."""
        for group in groups:
            yield [{k: v.to(device, non_blocking=True) for k, v in mb.items()} for mb in group]

    def after_optimizer_step(self) -> None:
        """Runs once per training step after the optimizer and scheduler stepped."""

    def after_eval_batch(self) -> None:
        """Runs after each evaluation forward."""

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Runs once after `wrap_model`, when any checkpoint is loaded (XLA: shards the optimizer state)."""

    def generate(self, model: torch.nn.Module, tokenizer: Any, prompts: Iterable[str], max_new_tokens: int,
                 device: torch.device, autocast: Any) -> list[dict[str, str]]:
        """Greedy continuations of `prompts` (only the new text)."""
        out = []
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False).to(device)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            with torch.no_grad(), autocast():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            text = tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out.append({"prompt": prompt, "text": text})
        return out


def default_hooks(choice: Any, run_root: str | os.PathLike | None = None) -> Hooks:
    """Plain hooks for CPU and CUDA; the XLA adapter's for XLA (the only place torch_xla is imported), which keeps
    compiled programs in `run_root`/xla_cache when given, so the next session does not compile them again."""
    if choice.backend == "xla":
        from . import xla

        return xla.loop_hooks(choice, run_root)
    return Hooks()


# ---------------------------------------------------------------- small pieces


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token, 6N + 12*L*H*T (planner's accounting; N excludes the input embedding)."""
    c = model.config
    if getattr(c, "model_type", "") == "gpt_neox":
        from .config import ModelConfig
        from .planner import flops_per_token as planned

        mc = ModelConfig(preset="smoke", hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                         num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                         max_position_embeddings=c.max_position_embeddings)
        return planned(mc, c.vocab_size, seq_len)
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    return 6.0 * n + 12.0 * c.num_hidden_layers * c.hidden_size * seq_len


def _n_targets(mb: dict[str, torch.Tensor]) -> int:
    """Tokens that carry a loss in a micro-batch (the model shifts labels left by one)."""
    return int((mb["labels"][:, 1:] != -100).sum())


def _cpu_groups(source: BatchSource, start: int, group: int, counts: dict[int, int], first_key: int,
                limit: int | None = None, token_bytes: TokenBytes | None = None,
                byte_counts: dict[int, int] | None = None) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Micro-batches `start, start+1, ...` of `source` in groups of `group`; target counts go to `counts[key]`.

    With `token_bytes`, the UTF-8 bytes of the targets go to `byte_counts[key]` (for bits per byte).
    """
    key, index = first_key, start
    while limit is None or key - first_key < limit:
        mbs = [source.batch(index + k) for k in range(group)]
        counts[key] = sum(_n_targets(mb) for mb in mbs)  # counted on the CPU, before the device sees the batch
        if token_bytes is not None and byte_counts is not None:
            byte_counts[key] = sum(token_bytes.scored_bytes(mb["input_ids"], mb["labels"]) for mb in mbs)
        yield mbs
        key, index = key + 1, index + group


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a torn last line from a killed process is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


class _Metrics:
    """Appends JSON records to metrics.jsonl (rank 0 only), flushed per record."""

    def __init__(self, path: Path, enabled: bool, keep_until: int) -> None:
        self.path, self.enabled = path, enabled
        self._fh = None
        self.tracker: Any = None  # trackers.Tracker (train.report_to): a live copy of each record
        if enabled:
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= keep_until] if keep_until >= 0 else []
            # a resumed run drops what the killed session logged after its checkpoint: it is logged again
            from .files import atomic_write_text

            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, **record: Any) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()
        if self.tracker is not None:
            self.tracker.log(record)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


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


# ---------------------------------------------------------------- distributed


def _init_distributed(choice: Any) -> tuple[int, int]:
    """(rank, world): joins the torchrun process group (NCCL on CUDA, gloo on the CPU) when WORLD_SIZE > 1."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and choice.backend != "xla":  # XLA SPMD is one process over every chip
        dist.init_process_group("nccl" if choice.backend == "cuda" else "gloo")
        return dist.get_rank(), world
    return 0, 1


# ---------------------------------------------------------------- the loop


def train(
    model: torch.nn.Module,
    train_batches: BatchSource,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    eval_batches: dict[str, BatchSource] | None = None,
    tokenizer: Any = None,
    total_steps: int | None = None,
    *,
    device_choice: Any = None,
    hooks: Hooks | None = None,
    peak_flops: float | None = None,
    progress: bool = True,
    lr_horizon: int | None = None,
    on_eval: Callable[[Path], Any] | None = None,
) -> TrainResult:
    """Train `model` on `train_batches` until `total_steps` (else cfg.max_steps, else one pass), resuming by itself.

    `train_batches` and each of `eval_batches` follow the batch-source protocol (batches.py); under DDP
    each rank passes its own share. `lr_horizon` (default `total_steps`) is the step at which the cosine
    reaches its minimum: a run whose corpus is built one session part at a time passes the steps its
    whole token budget gives, trains to the end of the data built so far (status `data_end`, no
    final/), and continues on the same schedule once more data is built. A horizon that differs from
    the checkpoint's is re-planned (see `optim.py`). `device_choice` defaults to `device.select(cfg)`.
    `peak_flops` is one device's peak FLOP/s for MFU (`planner.peak_flops`; None: no MFU). `on_eval(metrics_path)`
    runs on rank 0 after each evaluation (the notebooks' live loss curve). Returns a TrainResult;
    raises BadStepsError after `cfg.max_bad_steps` consecutive non-finite steps.
    """
    return _Trainer(model, train_batches, cfg, Path(out_dir), eval_batches or {}, tokenizer, total_steps,
                    device_choice, hooks, peak_flops, progress, lr_horizon, on_eval).run()


class _Trainer:
    """One `train` call: `__init__` sets everything up (device, model, optimizer, resume, schedule); `run()` trains."""

    def __init__(self, model, train_batches, cfg, out_dir, eval_batches, tokenizer, total_steps,
                 device_choice, hooks, peak_flops, progress, lr_horizon=None, on_eval=None) -> None:
        self.t0 = time.perf_counter()
        self.on_eval = on_eval
        self.cfg, self.out_dir, self.tokenizer = cfg, out_dir, tokenizer
        self.train_batches, self.eval_batches = train_batches, eval_batches
        self.ckpt_root = out_dir / "checkpoints"
        self.log_every = max(1, cfg.log_every)

        # device and processes
        if device_choice is None:
            from .device import select

            device_choice = select(cfg)
        self.choice = device_choice
        self.hooks = hooks or default_hooks(device_choice, Path(out_dir).parent)  # a stage folder's parent: the run
        self.rank, self.world = _init_distributed(device_choice)
        self.main = self.rank == 0
        self.device = self.hooks.device(device_choice)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

        # steps and shapes
        self.accum = max(1, cfg.grad_accum)
        self.total = int(total_steps or cfg.max_steps or len(train_batches) // self.accum)
        if self.total <= 0:
            raise TrainingError(f"nothing to train: {len(train_batches)} micro-batches per pass give no step of "
                                f"train.grad_accum={self.accum}; set train.max_steps or build more corpus")
        self.horizon = int(lr_horizon or self.total)
        if self.horizon < self.total:
            raise TrainingError(f"lr_horizon={self.horizon} is before the last step {self.total}: the schedule "
                                "would sit at its minimum for the rest; pass a horizon >= total_steps")
        self.micro_shape = self._check_inputs(model)  # (B, T)
        self.tokens_per_step = self.micro_shape[0] * self.micro_shape[1] * self.accum * self.world

        # model, optimizer, scaler
        self.raw = model.to(self.device)
        if cfg.gradient_checkpointing:
            enable_checkpointing(self.raw)
        self.raw.train()
        self.params = [p for p in self.raw.parameters() if p.requires_grad]
        try:
            self.optimizer = optim.build_optimizer(self.raw, cfg, device_choice.backend)
        except optim.OptimizerError as err:
            raise TrainingError(str(err)) from err
        peaks = [group["lr"] for group in self.optimizer.param_groups]  # before a checkpoint's groups replace them
        self.scaler = torch.amp.GradScaler(self.device.type) if device_choice.use_grad_scaler else None

        # the newest complete checkpoint, and the schedule from there
        if self.main:
            self.ckpt_root.mkdir(parents=True, exist_ok=True)
        self.start, self.start_micro, saved_plan, self.resumed = self._resume()
        self.plan, self.plan_note = self._plan(saved_plan)
        self.scheduler = optim.make_scheduler(self.optimizer, self.plan, self.start, peaks)

        # the module a step calls: sharded (XLA FSDP), DDP over ranks, compiled
        fwd = self.hooks.wrap_model(self.raw, device_choice, cfg)
        self.hooks.prepare_optimizer(self.optimizer)
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # gradients alias DDP's buckets: no second copy of them (the planner counts none)
            fwd = self.ddp = DistributedDataParallel(fwd, device_ids=ids, gradient_as_bucket_view=True)
        self.fwd = torch.compile(fwd) if cfg.compile else fwd

        # bits per byte of the evaluations: the UTF-8 bytes each token id stands for (needs the tokenizer)
        self.token_bytes = TokenBytes.from_tokenizer(tokenizer) if (tokenizer is not None and eval_batches) else None

        # MFU: FLOPs per token over the peak of every device this run uses
        self.fpt = flops_per_token(self.raw, self.micro_shape[1])
        devices = self.world * (device_choice.num_devices if device_choice.backend == "xla" else 1)
        self.peak_total = peak_flops * devices if peak_flops else None

        # device-side counters, read on the host only at logging and saving steps
        zeros_i = torch.zeros((), dtype=torch.int32, device=self.device)
        self.bad_run, self.bad_max, self.bad_total = zeros_i, zeros_i.clone(), zeros_i.clone()
        self.win_loss = torch.zeros((), device=self.device)  # sum of the window's good step losses
        self.win_good = torch.zeros((), device=self.device)  # good steps in the window
        self.gnorm = torch.zeros((), device=self.device)

        # host-side figures
        self.win_steps, self.win_t0, self.loop_t0 = 0, self.t0, self.t0
        self.last_loss: float | None = None
        self.last_tps: float | None = None
        self.last_mfu: float | None = None
        self.last_eval: dict[str, dict[str, float | None]] = {}
        self.step_s: float | None = None  # seconds per step, measured per logging window
        self.eval_s = 0.0
        param_bytes = sum(p.numel() * 4 for p in self.params)
        self.save_s = 0.5 + 3 * param_bytes / 100e6  # weights + 2 AdamW moments at ~100 MB/s until measured
        self.saved_step = self.start if self.resumed else None
        self.saved_t = self.evaluated_t = self.t0  # wall clock of the last save and eval (train.save/eval_minutes)

        # outputs (closed at the end of run)
        self.metrics = _Metrics(out_dir / METRICS_FILE, self.main, keep_until=self.start if self.resumed else -1)
        if self.main and getattr(cfg, "report_to", "none") != "none":
            from .trackers import open_tracker

            self.metrics.tracker = open_tracker(cfg.report_to, out_dir, dataclasses.asdict(cfg))
        # progress=False: no bar and no lines under it (tqdm.write would print even for a disabled bar)
        self.bar = (tqdm(total=self.total, initial=self.start, desc="train", dynamic_ncols=True)
                    if self.main and progress else None)

    # ------------------------------------------------------------ setup

    def _plan(self, saved: dict | None) -> tuple[dict, str | None]:
        """The lr plan from here: the saved one re-planned to the settings, or a finish's decay (train.finish)."""
        wanted = optim.wanted_plan(self.cfg, self.horizon)
        if saved is not None and "finish" in saved:  # resumed inside a finish: the same decay, to its end
            plan, note = saved, None
        elif self.cfg.finish and saved is None:
            raise TrainingError(f"train.finish=true anneals a stopped run, but {self.ckpt_root} holds no checkpoint: "
                                "train first (train.finish=false), then finish")
        elif self.cfg.finish and self.start < self.total:
            plan, note = optim.finish_plan(saved, wanted, self.start, self.cfg.decay_fraction, available=self.total)
        else:  # (a finish asked of a run already at its last step: its schedule has decayed, final/ is written)
            return optim.replan(saved, wanted, self.start)
        self.total = self.horizon = int(plan["total"])  # the run ends where the decay does, and writes final/
        return plan, note

    def _check_inputs(self, model: torch.nn.Module) -> tuple[int, int]:
        """The micro-batch shape (B, T); clear errors for data and tokenizers that do not fit the model."""
        from .model import check_compatible

        first = self.train_batches.batch(0)
        ids = first["input_ids"]
        if ids.dim() != 2 or ids.dtype != torch.int64 or first["labels"].shape != ids.shape:
            raise TrainingError(f"batch(0) must give input_ids and labels int64 of shape (B, T); got input_ids "
                                f"{tuple(ids.shape)} {ids.dtype}, labels {tuple(first['labels'].shape)}")
        vocab = model.config.vocab_size
        check_compatible(model.config, seq_len=ids.shape[1],
                         tokenizer_vocab=len(self.tokenizer) if self.tokenizer is not None else None)
        if int(ids.max()) >= vocab:
            raise TrainingError(f"token id {int(ids.max())} in batch(0) is outside the model's vocab_size={vocab}: "
                                "the corpus was tokenized with another tokenizer; rebuild it (02_corpus)")
        return int(ids.shape[0]), int(ids.shape[1])

    def _barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def _autocast(self):
        dtype = self.choice.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _resume(self) -> tuple[int, int, dict | None, Path | None]:
        """(step, micro-batch index, saved lr plan, checkpoint) of the newest complete checkpoint, or a fresh start."""
        if self.main:
            ckpt.clean_incomplete(self.ckpt_root)
        self._barrier()
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups]
        # the newest checkpoint that loads whole; newer ones with a missing or damaged part are named and set aside
        found = ckpt.load_latest(self.ckpt_root, model=self.raw, optimizer=self.optimizer, scaler=self.scaler,
                                 rank=self.rank, restore_rng_state=False, set_aside=self.main)
        if found is None:
            return 0, 0, None, None
        path, state = found
        for group, kept in zip(self.optimizer.param_groups, kernels):  # this device's kernels, not the saver's
            group.update(kept)
        micro = int(state["micro_index"])
        if "data" in state and hasattr(self.train_batches, "load_state_dict"):  # the stream's position (batches.py)
            self.train_batches.load_state_dict(join_state(state["data"], ckpt.read_arrays(path)))
        old_layout = (state.get("micro_batch"), state.get("world_size"))
        if old_layout != (self.micro_shape[0], self.world):
            # same samples consumed, counted in the new micro-batch size (exact for PackedBatches)
            micro = micro * old_layout[0] * old_layout[1] // (self.micro_shape[0] * self.world)
        return int(state["step"]), micro, state.get("lr_plan"), path

    # ------------------------------------------------------------ one step

    def _step(self, group: list[dict[str, torch.Tensor]], n_items: int) -> None:
        """Forward/backward over the step's micro-batches, then clip and update; no host sync."""
        last = len(group) - 1
        step_loss = None
        for k, mb in enumerate(group):
            no_sync = self.ddp.no_sync() if (self.ddp is not None and k < last) else contextlib.nullcontext()
            with no_sync:
                with self._autocast():
                    loss = self.fwd(**mb, num_items_in_batch=max(1, n_items)).loss  # sum / step targets
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            step_loss = loss.detach().float() if step_loss is None else step_loss + loss.detach().float()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        finite_loss = torch.isfinite(step_loss)
        if self.scaler is not None:  # an fp16 overflow is the scaler's business; a non-finite loss is ours
            ok = finite_loss
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            ok = finite_loss & torch.isfinite(gnorm)
            self._guarded_update(ok)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        bad = (~ok).to(torch.int32)
        self.bad_run = (self.bad_run + 1) * bad  # consecutive bad steps, reset by a good one
        self.bad_max = torch.maximum(self.bad_max, self.bad_run)
        self.bad_total = self.bad_total + bad
        self.win_loss = self.win_loss + torch.where(ok, step_loss, torch.zeros_like(step_loss))
        self.win_good = self.win_good + ok.to(torch.float32)
        self.gnorm = gnorm.detach().float()

    def _guarded_update(self, ok: torch.Tensor) -> None:
        """optimizer.step() unless `ok` is False, deciding on the device where the optimizer allows it."""
        opt = self.optimizer
        if getattr(opt, "_step_supports_amp_scaling", False):  # fused AdamW: skips inside the kernel
            opt.grad_scale, opt.found_inf = None, (~ok).to(torch.float32)
            try:
                opt.step()
            finally:
                del opt.grad_scale, opt.found_inf
        elif self.choice.backend != "xla":
            if bool(ok):  # host check: only non-fused optimizers (8-bit AdamW) pay it
                opt.step()
        else:  # no host sync on XLA: a bad step becomes a zero-gradient step
            grads = [p.grad for p in self.params if p.grad is not None]
            for g in grads:
                g.copy_(torch.where(ok, g, torch.zeros_like(g)))
            opt.step()

    # ------------------------------------------------------------ logging, eval, saving

    def _bad_stats(self) -> torch.Tensor:
        """(current run, longest run since start, total) of bad steps on the device, agreed across ranks."""
        stats = torch.stack([self.bad_run, self.bad_max, self.bad_total]).to(torch.float32)
        if self.world > 1:
            torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.MAX)
        return stats

    def _read_bad(self) -> tuple[int, int, int]:
        """`_bad_stats` read on the host."""
        run, longest, total = (int(x) for x in self._bad_stats().tolist())
        return run, longest, total

    def _check_bad(self, step: int, longest: int) -> None:
        """Raise BadStepsError when `longest` reached train.max_bad_steps (0 never stops)."""
        if 0 < self.cfg.max_bad_steps <= longest:
            last = ckpt.latest(self.ckpt_root)
            msg = (f"stopped at step {step}: {longest} consecutive steps had a non-finite loss or gradient "
                   f"(train.max_bad_steps={self.cfg.max_bad_steps}); they were skipped and no checkpoint was "
                   f"written after them; the last good checkpoint is {last or 'none (no checkpoint yet)'}. "
                   "Lower train.lr or raise train.warmup_steps (or check the data), then run again: it resumes "
                   "from that checkpoint.")
            self.metrics.write(kind="event", step=step, event="bad_steps", message=msg)
            raise BadStepsError(msg)

    def _log(self, step: int) -> None:
        """Read the window's figures from the device (the one host sync of a logging step) and write them."""
        now = time.perf_counter()
        stats = torch.stack([self.win_loss, self.win_good, self.gnorm])
        if self.world > 1:
            torch.distributed.all_reduce(stats)  # loss sum and good-step count over ranks; the norm is the same
        loss_sum, good, gnorm_sum, _, longest, total_bad = torch.cat([stats, self._bad_stats()]).tolist()  # one read
        longest, total_bad = int(longest), int(total_bad)
        window_s = now - self.win_t0
        self.step_s = window_s / max(1, self.win_steps)
        tps = self.tokens_per_step * self.win_steps / window_s if window_s > 0 else None
        mfu = tps * self.fpt / self.peak_total if (tps and self.peak_total) else None
        loss = loss_sum / good if good else float("nan")
        self.last_loss, self.last_tps, self.last_mfu = loss, tps, mfu
        self.metrics.write(kind="train", step=step, loss=loss, lr=optim.lr_at(self.plan, step - 1),
                           grad_norm=gnorm_sum / self.world, tokens=step * self.tokens_per_step,
                           tokens_per_s=tps, mfu=mfu, elapsed_s=round(now - self.t0, 3), bad_steps=total_bad)
        if self.bar is not None:
            post = {"loss": f"{loss:.4f}", "tok/s": f"{tps:,.0f}" if tps else "-"}
            if mfu is not None:
                post["mfu"] = f"{mfu:.1%}"
            self.bar.set_postfix(post, refresh=False)
        self.win_loss = torch.zeros_like(self.win_loss)
        self.win_good = torch.zeros_like(self.win_good)
        self.win_steps, self.win_t0 = 0, time.perf_counter()
        self._check_bad(step, longest)

    def _evaluate(self, step: int) -> None:
        """Eval loss, perplexity and bits per byte on each eval source; greedy samples on rank 0 with a tokenizer."""
        started = time.perf_counter()
        self.raw.eval()
        with torch.no_grad():
            for name, source in self.eval_batches.items():
                n = len(source) if self.cfg.eval_batches <= 0 else min(len(source), self.cfg.eval_batches)
                counts: dict[int, int] = {}
                byte_counts: dict[int, int] = {}
                loss_sum = torch.zeros((), device=self.device)
                targets = nbytes = 0
                cpu = _cpu_groups(source, 0, 1, counts, 0, limit=n, token_bytes=self.token_bytes, byte_counts=byte_counts)
                for i, group in enumerate(self.hooks.device_batches(cpu, self.device)):
                    with self._autocast():
                        out = self.raw(**group[0], num_items_in_batch=1)  # summed over targets
                    loss_sum = loss_sum + out.loss.float()
                    targets += counts.pop(i)
                    nbytes += byte_counts.pop(i, 0)
                    self.hooks.after_eval_batch()
                if self.world > 1:  # ranks may hold different eval shares: sum losses, targets and bytes over ranks
                    stats = torch.stack([loss_sum, torch.tensor(float(targets), device=self.device),
                                         torch.tensor(float(nbytes), device=self.device)])
                    torch.distributed.all_reduce(stats)
                    total, count, nbytes = stats.tolist()
                else:
                    total, count = loss_sum.item(), float(targets)
                loss = total / max(count, 1.0)
                ppl = math.exp(loss) if loss < 700 else float("inf")
                bpb = bits_per_byte(total, nbytes) if self.token_bytes is not None else None
                self.last_eval[name] = {"loss": loss, "ppl": ppl, "bpb": bpb}
                self.metrics.write(kind="eval", step=step, split=name, loss=loss, ppl=ppl, bpb=bpb)
                if self.bar is not None:
                    self.bar.write(f"step {step}: {name} loss {loss:.4f} ppl {ppl:,.2f}"
                                   + (f" bpb {bpb:.4f}" if bpb is not None else ""))
            if self.main and self.tokenizer is not None and self.cfg.sample_prompts:
                samples = self.hooks.generate(self.raw, self.tokenizer, self.cfg.sample_prompts, self.cfg.sample_tokens,
                                              self.device, self._autocast)
                self.metrics.write(kind="samples", step=step, samples=samples)
                if self.bar is not None:
                    for s in samples:
                        self.bar.write(f"step {step}: {s['prompt']} -> {s['text']}")
        self.raw.train()
        self.evaluated_t = time.perf_counter()
        self.eval_s = self.evaluated_t - started
        if self.main and self.on_eval is not None:  # e.g. the notebook's live loss curve (plots.LiveCurve)
            self.on_eval(self.out_dir / METRICS_FILE)

    def _save(self, step: int, micro: int) -> Path:
        started = time.perf_counter()
        state = {
            "micro_index": micro, "micro_batch": self.micro_shape[0], "seq_len": self.micro_shape[1],
            "grad_accum": self.accum, "total_steps": self.total, "lr_plan": self.plan,
            "train_config": dataclasses.asdict(self.cfg), "model_config": ckpt.model_config_dict(self.raw),
            "device": self.choice.backend, "precision": self.choice.precision,
        }
        arrays = None
        if hasattr(self.train_batches, "state_dict"):  # where the stream stands: micro-batch `micro` on (batches.py)
            state["data"], arrays = split_state(self.train_batches.state_dict(micro))
        path = ckpt.save(self.ckpt_root, step, model=self.raw, optimizer=self.optimizer, scheduler=self.scheduler,
                         scaler=self.scaler, state=state, keep_last=self.cfg.keep_last, rank=self.rank,
                         world_size=self.world, barrier=self._barrier, arrays=arrays)
        self.saved_t = time.perf_counter()
        self.save_s = self.saved_t - started
        self.saved_step = step
        return path

    def _write_final(self) -> Path:
        """out_dir/final: save_pretrained (safetensors) and the tokenizer, replaced atomically."""
        final = self.out_dir / "final"
        if self.main:
            tmp = self.out_dir / ".tmp-final"
            shutil.rmtree(tmp, ignore_errors=True)
            cpu_state = {k: v.detach().cpu() for k, v in self.raw.state_dict().items()}
            use_cache = getattr(self.raw.config, "use_cache", None)
            self.raw.config.use_cache = True  # generation after loading wants the KV cache
            self.raw.save_pretrained(tmp, state_dict=cpu_state)
            if use_cache is not None:
                self.raw.config.use_cache = use_cache
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            if final.exists():
                old = self.out_dir / ".old-final"
                shutil.rmtree(old, ignore_errors=True)
                os.rename(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, final)
        self._barrier()
        return final

    def _due_by_time(self, step: int) -> tuple[bool, bool]:
        """(eval due, save due) by train.eval_minutes / train.save_minutes of wall time; the same on every rank.

        One process (CPU, one GPU, XLA's SPMD over every chip) reads its own clock each step: a host-side
        decision that changes no compiled graph. Several (DDP) decide at logging steps, where they meet anyway,
        by a MAX over ranks, so all of them evaluate and save at the same step.
        """
        cfg = self.cfg
        if cfg.eval_minutes <= 0 and cfg.save_minutes <= 0:
            return False, False
        if self.world > 1 and step % self.log_every:
            return False, False
        now = time.perf_counter()
        due = [cfg.eval_minutes > 0 and bool(self.eval_batches) and now - self.evaluated_t >= cfg.eval_minutes * 60.0,
               cfg.save_minutes > 0 and now - self.saved_t >= cfg.save_minutes * 60.0]
        if self.world > 1:
            flags = torch.tensor([float(d) for d in due], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            due = [bool(x) for x in flags.tolist()]
        return due[0], due[1]

    def _out_of_time(self, step: int) -> bool:
        """Would the next step (and its eval) plus a checkpoint overrun train.max_minutes? Agreed across ranks."""
        if self.cfg.max_minutes <= 0:
            return False
        if self.world > 1 and step % self.log_every:
            return False  # ranks decide together, at logging steps (they already meet there)
        ahead = self.log_every if self.world > 1 else 1
        next_eval = self.eval_s if (self.eval_batches and self.cfg.eval_every
                                    and (step // self.cfg.eval_every) != ((step + ahead) // self.cfg.eval_every)) else 0.0
        step_s = self.step_s if self.step_s is not None else (time.perf_counter() - self.loop_t0) / max(1, step - self.start)
        elapsed = time.perf_counter() - self.t0
        need = elapsed + (ahead + 1) * step_s + next_eval + 2.0 * self.save_s
        stop = need >= self.cfg.max_minutes * 60.0
        if self.world > 1:
            flag = torch.tensor([float(stop)], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    # ------------------------------------------------------------ run

    # ------------------------------------------------------------ run

    def run(self) -> TrainResult:
        """Train from the start (or checkpoint) step to the end or the time budget; checkpoint; write final/."""
        cfg, start = self.cfg, self.start
        status, step, micro, final_dir = "done", start, self.start_micro, None
        stream = None
        try:
            if self.resumed is not None:
                self.metrics.write(kind="event", step=start, event="resume", message=f"resumed from {self.resumed}")
                ckpt.load_rng(self.resumed, self.rank)  # last, after everything that might draw random numbers
            else:
                self.metrics.write(kind="event", step=0, event="start", message=f"{self.choice.reason}",
                                   device=self.choice.summary() if hasattr(self.choice, "summary") else {},
                                   total_steps=self.total, tokens_per_step=self.tokens_per_step)
                random.seed(cfg.seed + self.rank)
                np.random.seed(cfg.seed + self.rank)
                torch.manual_seed(cfg.seed + self.rank)
            if self.plan_note:
                self.metrics.write(kind="event", step=start, event="lr_replan", message=self.plan_note, plan=self.plan)
                if self.bar is not None:
                    self.bar.write(self.plan_note)
            if self.resumed is None and self.eval_batches and start < self.total:
                self._evaluate(0)  # the starting point of the eval curve

            counts: dict[int, int] = {}
            stream = self.hooks.device_batches(_cpu_groups(self.train_batches, micro, self.accum, counts, start),
                                               self.device)
            self.win_steps, self.win_t0 = 0, time.perf_counter()
            self.loop_t0 = self.win_t0
            while step < self.total:
                try:
                    group = next(stream)
                except DataExhausted as end:  # the stream ended (corpus.on_exhausted="stop"): training is done
                    self._event(step, "data_exhausted", f"{end}; training ends at step {step}")
                    break
                except DataSourceError as err:  # the producer gave up: keep what was trained, name the cause
                    if self.saved_step != step:
                        self._save(step, micro)
                    msg = f"{err}\ncheckpoint saved at step {step}; run again to resume when the source is back"
                    self._event(step, "data_error", msg)
                    raise DataSourceError(msg) from err
                self._step(group, counts.pop(step))
                self.hooks.after_optimizer_step()
                step, micro = step + 1, micro + self.accum
                self.win_steps += 1
                if self.bar is not None:
                    self.bar.update(1)
                final_step = step == self.total
                if step % self.log_every == 0 or final_step:
                    self._log(step)
                eval_due, save_due = self._due_by_time(step)
                if self.eval_batches and ((cfg.eval_every and step % cfg.eval_every == 0) or final_step or eval_due):
                    self._evaluate(step)
                if (cfg.save_every and step % cfg.save_every == 0) or final_step or save_due:
                    self._check_bad(step, self._read_bad()[1])
                    self._save(step, micro)
                if not final_step and self._out_of_time(step):
                    self._check_bad(step, self._read_bad()[1])
                    if self.saved_step != step:
                        self._save(step, micro)
                    status = "time_budget"
                    self._event(step, "time_budget", f"time budget train.max_minutes={cfg.max_minutes} reached after "
                                f"step {step} of {self.total}; checkpoint saved, run again to continue")
                    break
            if status == "done" and self.saved_step != step:  # e.g. resumed at the end already
                self._save(step, micro)
            if status == "done" and step < self.horizon:
                status = "data_end"
                self._event(step, "data_end", f"the {self.total} steps the data gives are done, the schedule runs "
                            f"to step {self.horizon}: build more corpus and run again to continue")
            if status == "done":
                final_dir = self._write_final()
                self.metrics.write(kind="event", step=step, event="done", message=f"final model in {final_dir}")
        finally:
            if stream is not None and hasattr(stream, "close"):  # stops a prefetching loader's thread (XLA)
                stream.close()
            if self.bar is not None:
                self.bar.close()
            self.metrics.close()
        return TrainResult(
            status=status, step=step, total_steps=self.total, out_dir=self.out_dir,
            metrics_path=self.out_dir / METRICS_FILE, checkpoint=ckpt.latest(self.ckpt_root), final_dir=final_dir,
            resumed_from=start if self.resumed is not None else None, train_loss=self.last_loss,
            eval=dict(self.last_eval), tokens_per_s=self.last_tps, mfu=self.last_mfu,
            device=self.choice.summary() if hasattr(self.choice, "summary") else {},
        )

    def _event(self, step: int, event: str, message: str) -> None:
        """An event record, also shown under the progress bar."""
        self.metrics.write(kind="event", step=step, event=event, message=message)
        if self.bar is not None:
            self.bar.write(message)
