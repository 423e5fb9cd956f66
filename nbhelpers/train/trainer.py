"""One `train` call: `Trainer.__init__` sets everything up (device, model, optimizer, checkpoint, first batch,
schedule), `run()` trains. See the package docstring for how a step runs and what a resume restores."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from .. import optim
from ..batches import DataExhausted, DataSourceError, split_state
from ..layout import CHECKPOINTS, FINAL
from ..token_bytes import TokenBytes
from .checks import BadSteps, guarded_update
from .clock import Clock
from .evaluate import eval_figures
from .final import write_final
from .hooks import Hooks, default_hooks
from .job import Job, TrainingError, TrainResult
from .metrics import METRICS_FILE, MetricsLog
from .resume import first_batch, load_checkpoint
from .setup import cpu_groups, enable_checkpointing, flops_per_token, init_distributed


class Trainer:
    """Holds one job's training state; every attribute is born in `__init__`."""

    def __init__(self, job: Job, hooks: Hooks | None = None, progress: bool = True,
                 on_eval: Callable[[Path], Any] | None = None) -> None:
        self.job, self.on_eval = job, on_eval
        cfg = self.cfg = job.cfg
        self.out_dir, self.tokenizer = job.out_dir, job.tokenizer
        self.train_batches, self.eval_batches = job.train_batches, job.eval_batches
        self.ckpt_root = job.out_dir / CHECKPOINTS
        self.log_every = max(1, cfg.log_every)

        # device and processes
        choice = job.device_choice
        if choice is None:
            from ..device import select

            choice = select(cfg)
        self.choice = choice
        self.hooks = hooks or default_hooks(choice, job.out_dir.parent)  # a stage folder's parent: the run
        self.rank, self.world = init_distributed(choice)
        self.main = self.rank == 0
        self.device = self.hooks.device(choice)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

        # steps
        self.accum = max(1, cfg.grad_accum)
        self.total = int(job.total_steps or cfg.max_steps or len(job.train_batches) // self.accum)
        if self.total <= 0:
            raise TrainingError(f"nothing to train: {len(job.train_batches)} micro-batches per pass give no step of "
                                f"train.grad_accum={self.accum}; set train.max_steps or build more corpus")
        self.horizon = int(job.lr_horizon or self.total)
        if self.horizon < self.total:
            raise TrainingError(f"lr_horizon={self.horizon} is before the last step {self.total}: the schedule "
                                "would sit at its minimum for the rest; pass a horizon >= total_steps")

        # model, optimizer, scaler
        self.raw = job.model.to(self.device)
        if cfg.gradient_checkpointing:
            enable_checkpointing(self.raw)
        self.raw.train()
        self.params = [p for p in self.raw.parameters() if p.requires_grad]
        try:
            self.optimizer = optim.build_optimizer(self.raw, cfg, choice.backend)
        except optim.OptimizerError as err:
            raise TrainingError(str(err)) from err
        peaks = [group["lr"] for group in self.optimizer.param_groups]  # before a checkpoint's groups replace them
        self.scaler = torch.amp.GradScaler(self.device.type) if choice.use_grad_scaler else None

        # the newest complete checkpoint first, then the one batch its data position needs (a stream resumed with
        # an empty scratch folder builds only the part it resumes in), then the schedule from there
        if self.main:
            self.ckpt_root.mkdir(parents=True, exist_ok=True)
        self.resumed, state = load_checkpoint(self.ckpt_root, self.raw, self.optimizer, self.scaler, self.rank,
                                              self._barrier, self.train_batches)
        self.start = int(state["step"]) if state else 0
        self.start_micro, self.micro_shape = first_batch(self.train_batches, state, self.world, self.raw,
                                                         self.tokenizer)  # (B, T)
        self.tokens_per_step = self.micro_shape[0] * self.micro_shape[1] * self.accum * self.world
        self.plan, self.plan_note = self._plan(state.get("lr_plan") if state else None)
        self.scheduler = optim.make_scheduler(self.optimizer, self.plan, self.start, peaks)

        # the module a step calls: sharded (XLA FSDP), DDP over ranks, compiled
        fwd = self.hooks.wrap_model(self.raw, choice, cfg)
        self.hooks.prepare_optimizer(self.optimizer)
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # gradients alias DDP's buckets: no second copy of them (the planner counts none)
            fwd = self.ddp = DistributedDataParallel(fwd, device_ids=ids, gradient_as_bucket_view=True)
        self.fwd = torch.compile(fwd) if cfg.compile else fwd

        # bits per byte of the evaluations: the UTF-8 bytes each token id stands for (needs the tokenizer)
        self.token_bytes = TokenBytes.from_tokenizer(self.tokenizer) if (self.tokenizer is not None and self.eval_batches) else None

        # MFU: FLOPs per token over the peak of every device this run uses
        self.fpt = flops_per_token(self.raw, self.micro_shape[1])
        devices = self.world * (choice.num_devices if choice.backend == "xla" else 1)
        self.peak_total = job.peak_flops * devices if job.peak_flops else None

        # device-side figures, read on the host only at logging and saving steps
        self.bad = BadSteps(self.device, self.world, cfg.max_bad_steps)
        self.win_loss = torch.zeros((), device=self.device)  # sum of the window's good step losses
        self.win_good = torch.zeros((), device=self.device)  # good steps in the window
        self.gnorm = torch.zeros((), device=self.device)

        # host-side figures
        self.clock = Clock(cfg, self.world, self.device, bool(self.eval_batches), self.start,
                           sum(p.numel() * 4 for p in self.params))
        self.win_steps, self.win_t0 = 0, self.clock.t0
        self.last_loss: float | None = None
        self.last_tps: float | None = None
        self.last_mfu: float | None = None
        self.last_eval: dict[str, dict[str, float | None]] = {}
        self.saved_step = self.start if self.resumed else None

        # outputs (closed at the end of run)
        self.metrics = MetricsLog(self.out_dir / METRICS_FILE, self.main, keep_until=self.start if self.resumed else -1)
        if self.main and getattr(cfg, "report_to", "none") != "none":
            from ..trackers import open_tracker

            self.metrics.tracker = open_tracker(cfg.report_to, self.out_dir, dataclasses.asdict(cfg))
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

    def _barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def _autocast(self):
        dtype = self.choice.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ------------------------------------------------------------ one step

    def _step(self, group: list[dict[str, torch.Tensor]], n_items: int) -> None:
        """Forward/backward over the step's micro-batches (each (B, T)), then clip and update; no host sync."""
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
            guarded_update(self.optimizer, ok, self.params, self.choice.backend)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.bad.record(ok)
        self.win_loss = self.win_loss + torch.where(ok, step_loss, torch.zeros_like(step_loss))
        self.win_good = self.win_good + ok.to(torch.float32)
        self.gnorm = gnorm.detach().float()

    # ------------------------------------------------------------ logging, eval, saving

    def _log(self, step: int) -> None:
        """Read the window's figures from the device (the one host sync of a logging step) and write them."""
        now = time.perf_counter()
        stats = torch.stack([self.win_loss, self.win_good, self.gnorm])
        if self.world > 1:
            torch.distributed.all_reduce(stats)  # loss sum and good-step count over ranks; the norm is the same
        loss_sum, good, gnorm_sum, _, longest, total_bad = torch.cat([stats, self.bad.stats()]).tolist()  # one read
        longest, total_bad = int(longest), int(total_bad)
        window_s = now - self.win_t0
        self.clock.step_s = window_s / max(1, self.win_steps)
        tps = self.tokens_per_step * self.win_steps / window_s if window_s > 0 else None
        mfu = tps * self.fpt / self.peak_total if (tps and self.peak_total) else None
        loss = loss_sum / good if good else float("nan")
        self.last_loss, self.last_tps, self.last_mfu = loss, tps, mfu
        self.metrics.write(kind="train", step=step, loss=loss, lr=optim.lr_at(self.plan, step - 1),
                           grad_norm=gnorm_sum / self.world, tokens=step * self.tokens_per_step,
                           tokens_per_s=tps, mfu=mfu, elapsed_s=round(now - self.clock.t0, 3), bad_steps=total_bad)
        if self.bar is not None:
            post = {"loss": f"{loss:.4f}", "tok/s": f"{tps:,.0f}" if tps else "-"}
            if mfu is not None:
                post["mfu"] = f"{mfu:.1%}"
            self.bar.set_postfix(post, refresh=False)
        self.win_loss = torch.zeros_like(self.win_loss)
        self.win_good = torch.zeros_like(self.win_good)
        self.win_steps, self.win_t0 = 0, time.perf_counter()
        self._check_bad(step, longest)

    def _check_bad(self, step: int, longest: int | None = None) -> None:
        """Stop (BadStepsError) after train.max_bad_steps bad steps in a row; reads the counters when not given."""
        self.bad.check(step, self.bad.read()[1] if longest is None else longest, self.ckpt_root, self.metrics)

    def _evaluate(self, step: int) -> None:
        """Eval loss, perplexity and bits per byte on each eval source; greedy samples on rank 0 with a tokenizer."""
        started = time.perf_counter()
        self.raw.eval()
        with torch.no_grad():
            for name, source in self.eval_batches.items():
                n = len(source) if self.cfg.eval_batches <= 0 else min(len(source), self.cfg.eval_batches)
                figures = eval_figures(self.raw, source, n, self.device, self.hooks, self._autocast, self.world,
                                       self.token_bytes)
                loss, ppl, bpb = figures["loss"], figures["ppl"], figures["bpb"]
                self.last_eval[name] = figures
                self.metrics.write(kind="eval", step=step, split=name, **figures)
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
        self.clock.evaluated_t = time.perf_counter()
        self.clock.eval_s = self.clock.evaluated_t - started
        if self.main and self.on_eval is not None:  # e.g. the notebook's live loss curve (plots.LiveCurve)
            self.on_eval(self.out_dir / METRICS_FILE)

    def _save(self, step: int, micro: int) -> Path:
        """A checkpoint of step `step`, whose data position is micro-batch `micro`."""
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
        self.clock.saved_t = time.perf_counter()
        self.clock.save_s = self.clock.saved_t - started
        self.saved_step = step
        return path

    def _write_final(self) -> Path:
        """out_dir/final (rank 0 writes it, the others wait)."""
        if self.main:
            write_final(self.raw, self.tokenizer, self.out_dir)
        self._barrier()
        return self.out_dir / FINAL

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
            stream = self.hooks.device_batches(cpu_groups(self.train_batches, micro, self.accum, counts, start),
                                               self.device)
            self.win_steps, self.win_t0 = 0, time.perf_counter()
            self.clock.loop_t0 = self.win_t0
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
                eval_due, save_due = self.clock.due_by_time(step)
                if self.eval_batches and ((cfg.eval_every and step % cfg.eval_every == 0) or final_step or eval_due):
                    self._evaluate(step)
                if (cfg.save_every and step % cfg.save_every == 0) or final_step or save_due:
                    self._check_bad(step)
                    self._save(step, micro)
                if not final_step and self.clock.out_of_time(step):
                    self._check_bad(step)
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
