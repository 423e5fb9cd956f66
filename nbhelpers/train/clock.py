"""The loop's wall clock: when to evaluate and save by minutes (train.eval_minutes / save_minutes), and whether
the time budget (train.max_minutes) leaves room for one more step and a checkpoint."""

from __future__ import annotations

import time

import torch

from ..config import TrainConfig


class Clock:
    """Wall-clock figures of one `train` call (seconds from `time.perf_counter`) and the decisions made from them."""

    def __init__(self, cfg: TrainConfig, world: int, device: torch.device, has_eval: bool, start: int,
                 param_bytes: int) -> None:
        self.cfg, self.world, self.device, self.has_eval, self.start = cfg, world, device, has_eval, start
        self.log_every = max(1, cfg.log_every)
        self.t0 = time.perf_counter()
        self.loop_t0 = self.t0  # when the first step began
        self.step_s: float | None = None  # seconds per step, measured per logging window
        self.eval_s = 0.0
        self.save_s = 0.5 + 3 * param_bytes / 100e6  # weights + 2 AdamW moments at ~100 MB/s until measured
        self.saved_t = self.evaluated_t = self.t0  # wall clock of the last save and eval (train.save/eval_minutes)

    def _agreed(self, flags: list[bool]) -> list[bool]:
        """`flags` OR-ed over ranks (they then act at the same step)."""
        if self.world == 1:
            return flags
        t = torch.tensor([float(f) for f in flags], device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return [bool(x) for x in t.tolist()]

    def due_by_time(self, step: int) -> tuple[bool, bool]:
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
        due = self._agreed([cfg.eval_minutes > 0 and self.has_eval and now - self.evaluated_t >= cfg.eval_minutes * 60.0,
                            cfg.save_minutes > 0 and now - self.saved_t >= cfg.save_minutes * 60.0])
        return due[0], due[1]

    def out_of_time(self, step: int) -> bool:
        """Would the next step (and its eval) plus a checkpoint overrun train.max_minutes? Agreed across ranks."""
        cfg = self.cfg
        if cfg.max_minutes <= 0:
            return False
        if self.world > 1 and step % self.log_every:
            return False  # ranks decide together, at logging steps (they already meet there)
        ahead = self.log_every if self.world > 1 else 1
        next_eval = self.eval_s if (self.has_eval and cfg.eval_every
                                    and (step // cfg.eval_every) != ((step + ahead) // cfg.eval_every)) else 0.0
        step_s = self.step_s if self.step_s is not None else (time.perf_counter() - self.loop_t0) / max(1, step - self.start)
        elapsed = time.perf_counter() - self.t0
        need = elapsed + (ahead + 1) * step_s + next_eval + 2.0 * self.save_s
        return self._agreed([need >= cfg.max_minutes * 60.0])[0]
