"""The training loop's optimizer and learning-rate schedule: which update for which parameters, and the LR of each step.

`build_optimizer(model, cfg, backend)` gives, by `train.optimizer`:

- `adamw`: torch's AdamW (fused on CPU and CUDA); weight decay on matrices, none on biases and norms.
- `adamw8bit`: bitsandbytes' 8-bit AdamW (CUDA), the same groups.
- `muon`: Muon (`muon.py`, ours: it runs on torch 2.8 and XLA) on the hidden 2-D matrices (attention's fused
  QKV and output projections, the MLP's two) with the AdamW-matched update scale (each update's RMS is an
  AdamW update's, so AdamW's lr and weight decay carry over), at `train.muon_lr` (0: `train.lr`) with
  `train.muon_momentum`; AdamW as above on the input embedding, the output head, norms and biases. GPT-NeoX's
  fused QKV weight (3H, H) is orthogonalised as its q, k and v blocks (`train.muon_qkv=blocks`, measured
  better in docs/BENCHMARKS.md) or whole (`whole`). The Newton-Schulz iteration runs in fp16 where the run's
  precision is fp16 (a T4 has no bf16 tensor cores), on a CPU in bf16 or fp32 as measured (`newton_schulz_dtype`),
  else in bf16. Both run as one optimizer (`MuonAdamW`):
  one set of param groups, one state, one schedule, one checkpoint file.

The schedule is `make_scheduler(optimizer, plan, step, peaks)`: a `LambdaLR` over `lr_factor`, positioned
after `step` completed optimizer steps; every param group follows the plan's factor times its own peak
(Muon's groups `muon_lr`, AdamW's `lr`).

Learning rate: linear warmup from 0 to `lr`, then cosine to `lr * min_lr_ratio` at the planned horizon
(the same numbers as transformers' `get_cosine_with_min_lr_schedule_with_warmup`). On resume with a
different horizon (or lr settings) the schedule is re-planned: still inside the warmup, the new plan
simply replaces the old one (the LR so far is the same when `lr` and `warmup_steps` are); after the
warmup, the LR continues from the value it had at the checkpoint and follows a new warmup-free half
cosine to `lr * min_lr_ratio` at the new horizon. A longer horizon therefore never continues an
already-decayed schedule and never jumps the LR; a schedule that had fully decayed stays at its
minimum (the loop logs an `lr_replan` event saying so).

`train.schedule=wsd` (warmup-stable-decay; MiniCPM, arXiv 2404.06395): the linear warmup, then the peak LR held
constant, then a decay over the last `train.decay_fraction` of the steps to `lr * min_lr_ratio`. Its decay has
the 1-sqrt shape, lr = min + (peak - min) * (1 - sqrt(progress)): Hägele et al. (arXiv 2405.18392) measured it
better than a linear cooldown and on par with cosine at equal tokens, and Dremov et al. (arXiv 2508.01483) find
that shapes which drop fast early and flatten towards the end (as 1-sqrt does) balance exploration and
exploitation best. Since nothing before the decay depends on the horizon, a longer (or shorter) horizon while
still constant changes nothing already trained. `finish_plan` anneals a run stopped anywhere (`train.finish`):
from the LR it had, the same 1-sqrt decay over the next `decay_fraction` x steps-so-far.

A plan is a JSON-able dict stored in each checkpoint's state.json: `peak`, `warmup`, `total`,
`min_ratio`, `schedule` (absent in older checkpoints: cosine), for wsd `decay_start` (the first decaying step),
after a re-plan `restart` = {"step", "lr"}, and for a finishing run `finish` = the step it was finished from.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch

from . import device
from .config import OPTIMIZERS, TrainConfig
from .muon import Muon


class OptimizerError(RuntimeError):
    """The configured optimizer cannot run here; the message says what to install or change."""


# ---------------------------------------------------------------- optimizers


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, backend: str) -> torch.optim.Optimizer:
    """`cfg.optimizer` over the model's trainable parameters; each param group's `lr` is its peak LR."""
    if cfg.optimizer not in OPTIMIZERS:
        raise OptimizerError(f"train.optimizer: expected {' | '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "muon":
        return _muon(model, params, cfg, backend)
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise OptimizerError("train.optimizer=adamw8bit needs bitsandbytes and a CUDA GPU "
                                 "(pip install bitsandbytes), or use train.optimizer=adamw") from err
        return bnb.optim.AdamW8bit(_decay_groups(params, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
    return _adamw(_decay_groups(params, cfg.weight_decay), cfg, backend)


def _decay_groups(params: list[torch.Tensor], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices, none on biases and norms."""
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _adamw(groups: list[dict[str, Any]], cfg: TrainConfig, backend: str) -> torch.optim.AdamW:
    """torch's AdamW: fused on CPU and CUDA where it can be, else foreach (plain loops on XLA)."""
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas)}
    if backend in ("cpu", "cuda"):
        try:  # one kernel for all parameters, and it can skip a bad step on the device
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.AdamW(groups, foreach=backend != "xla" or None, **kwargs)


def hidden_matrices(model: torch.nn.Module) -> list[torch.Tensor]:
    """The trainable 2-D weights other than the input embedding and the output head: what Muon updates."""
    skip = {id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    return [p for p in model.parameters() if p.requires_grad and p.dim() == 2 and id(p) not in skip]


def _muon(model: torch.nn.Module, params: list[torch.Tensor], cfg: TrainConfig, backend: str) -> MuonAdamW:
    """Muon on `hidden_matrices(model)` (the fused QKV weights in a group of their own), AdamW on the rest."""
    matrices = hidden_matrices(model)
    qkv = {id(p) for name, p in model.named_parameters() if name.endswith("query_key_value.weight")}
    heads = model.config.num_attention_heads if cfg.muon_qkv == "blocks" else 0
    groups = [{"params": [p for p in matrices if id(p) in qkv], "qkv_heads": heads},
              {"params": [p for p in matrices if id(p) not in qkv]}]
    ns_dtype = newton_schulz_dtype(cfg.precision, backend)
    muon = Muon([g for g in groups if g["params"]], lr=cfg.muon_lr or cfg.lr, weight_decay=cfg.weight_decay,
                momentum=cfg.muon_momentum, ns_dtype=ns_dtype)
    chosen = {id(p) for p in matrices}
    adamw = _adamw(_decay_groups([p for p in params if id(p) not in chosen], cfg.weight_decay), cfg, backend)
    return MuonAdamW(muon, adamw)


def newton_schulz_dtype(precision: str, backend: str) -> torch.dtype:
    """The matmul type of Muon's iteration: what the hardware multiplies in natively.

    fp16 where the run is fp16 (a T4: fp16 tensor cores, no bf16); on a CPU, bf16 or fp32 as
    `device.cpu_matmul_probe` measured (an emulated bf16 matmul is about 30x slower than fp32); else bf16 (TPU,
    Ampere and later). DDP ranks take rank 0's choice: ranks that iterated in different types would drift apart.
    """
    if precision == "fp16" and backend != "cpu":
        return torch.float16
    if backend != "cpu":
        return torch.bfloat16
    fast = torch.tensor([device.cpu_matmul_probe().dtype == "bf16"], dtype=torch.int32)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast(fast, src=0)
    return torch.bfloat16 if bool(fast.item()) else torch.float32


class MuonAdamW(torch.optim.Optimizer):
    """`Muon` on the hidden matrices and `torch.optim.AdamW` on the rest, stepped as one optimizer.

    One object, so the loop, the LR schedule, the GradScaler, checkpoints and the XLA sharding see one set of
    param groups and one state (a flag `muon` in each group says whose it is); the two optimizers share those
    group dicts and that state and do the updates.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self._muon, self._adamw = muon, adamw
        for part, flag in ((muon, True), (adamw, False)):
            for group in part.param_groups:
                group["muon"] = flag
        super().__init__(muon.param_groups + adamw.param_groups, defaults={})
        self._share()

    def _share(self) -> None:
        """Point both parts at this optimizer's group dicts and state (again after load_state_dict replaced them)."""
        self._muon.param_groups = [g for g in self.param_groups if g["muon"]]
        self._adamw.param_groups = [g for g in self.param_groups if not g["muon"]]
        self._muon.state = self._adamw.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Optimizer.load_state_dict, then share the new groups and state with both parts."""
        super().load_state_dict(state_dict)
        self._share()

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Muon step on the matrices (which evaluates `closure`, if any) and one AdamW step on the rest."""
        loss = self._muon.step(closure)
        self._adamw.step()
        return loss


# ---------------------------------------------------------------- learning-rate plan


_PLAN_KEYS = ("schedule", "peak", "warmup", "total", "min_ratio", "decay_start")


def decay_start(total: int, warmup: int, decay_fraction: float) -> int:
    """The first decaying step of a wsd plan: the last `decay_fraction` of `total` steps decay (never inside the warmup)."""
    decay = max(1, round(decay_fraction * total)) if decay_fraction > 0 else 0
    return max(min(warmup, total), total - decay)


def wanted_plan(cfg: TrainConfig, horizon: int) -> dict[str, Any]:
    """The plan `cfg` asks for when the schedule ends at step `horizon`."""
    plan = {"schedule": cfg.schedule, "peak": cfg.lr, "warmup": cfg.warmup_steps, "total": horizon,
            "min_ratio": cfg.min_lr_ratio}
    if cfg.schedule == "wsd":
        plan["decay_start"] = decay_start(horizon, cfg.warmup_steps, cfg.decay_fraction)
    return plan


def _wsd_factor(step: int, plan: dict[str, Any], base: float) -> float:
    """Constant `base` until `decay_start`, then 1-sqrt down to `min_ratio` at `total` (see the module docstring)."""
    start, total = plan["decay_start"], plan["total"]
    if step < start:
        return base
    low = min(plan["min_ratio"], base)  # a run finished below the minimum stays where it is
    progress = min(1.0, float(step - start) / float(max(1, total - start)))
    return low + (base - low) * (1.0 - math.sqrt(progress))


def lr_factor(step: int, plan: dict[str, Any]) -> float:
    """LR of optimizer step `step` (0-based) as a fraction of `plan["peak"]`; see the module docstring."""
    peak, warmup, total, min_ratio = plan["peak"], plan["warmup"], plan["total"], plan["min_ratio"]
    restart = plan.get("restart")
    wsd = plan.get("schedule", "cosine") == "wsd"
    if restart is not None and step >= restart["step"]:
        if wsd:
            return _wsd_factor(step, plan, restart["lr"] / peak)
        s0, l0, min_lr = restart["step"], restart["lr"], peak * min_ratio
        progress = min(1.0, float(step - s0) / float(max(1, total - s0)))
        return (min_lr + (l0 - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))) / peak
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if wsd:
        return _wsd_factor(step, plan, 1.0)
    # the same operations as transformers' cosine-with-min-lr lambda, so the numbers agree exactly
    progress = min(1.0, float(step - warmup) / float(max(1, total - warmup)))
    factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
    return max(0.0, factor * (1 - min_ratio) + min_ratio)


def lr_at(plan: dict[str, Any], step: int) -> float:
    """Absolute LR of optimizer step `step` under `plan`."""
    return plan["peak"] * lr_factor(step, plan)


def replan(saved: dict[str, Any] | None, wanted: dict[str, Any], step: int) -> tuple[dict[str, Any], str | None]:
    """The plan to continue with after `step` steps, and a message when it changed (see the module docstring)."""
    if saved is not None and "finish" in saved:  # a finishing run keeps its decay, whatever the settings say now
        return saved, None
    old = dict(saved or {}, schedule=(saved or {}).get("schedule", "cosine"))  # plans without one are cosine's
    new = dict(wanted, schedule=wanted.get("schedule", "cosine"))
    if saved is None or all(old.get(k) == new.get(k) for k in _PLAN_KEYS):
        return (saved or wanted), None
    changed = ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in _PLAN_KEYS if old.get(k) != new.get(k))
    if step < saved["warmup"]:
        return dict(wanted), f"schedule re-planned inside the warmup at step {step} ({changed})"
    wsd_before_decay = (old["schedule"] == new["schedule"] == "wsd" and "restart" not in saved
                        and step < min(saved["decay_start"], wanted["decay_start"])
                        and all(saved[k] == wanted[k] for k in ("peak", "warmup", "min_ratio")))
    if wsd_before_decay:  # still constant at the peak: the new horizon only moves the decay
        return dict(wanted), (f"schedule changed at step {step} ({changed}): constant at the peak until step "
                              f"{wanted['decay_start']}, then the decay to step {wanted['total']}")
    current = lr_at(saved, step)
    plan = dict(wanted, restart={"step": step, "lr": current})
    if new["schedule"] == "wsd":
        plan["decay_start"] = max(step, wanted["decay_start"])
    shape = "1-sqrt decay" if new["schedule"] == "wsd" else "cosine"
    note = (f"schedule changed at step {step} ({changed}): {shape} from the current lr {current:.3g} "
            f"to {wanted['peak'] * wanted['min_ratio']:.3g} at step {wanted['total']}")
    if current <= wanted["peak"] * wanted["min_ratio"] * (1 + 1e-9):
        note += "; the old schedule had fully decayed, so the lr stays at its minimum"
    return plan, note


def finish_plan(saved: dict[str, Any], wanted: dict[str, Any], step: int, decay_fraction: float,
                available: int | None = None) -> tuple[dict[str, Any], str]:
    """The plan that anneals a run stopped after `step` steps: from its LR there, a 1-sqrt decay to the minimum over
    the next `decay_fraction` x `step` steps (at least 1; at most `available` - `step` when the data ends sooner)."""
    steps = max(1, round(decay_fraction * step))
    if available is not None:
        steps = max(1, min(steps, available - step))
    current = lr_at(saved, step)
    plan = {"schedule": "wsd", "peak": wanted["peak"], "warmup": saved["warmup"], "total": step + steps,
            "min_ratio": wanted["min_ratio"], "decay_start": step, "restart": {"step": step, "lr": current},
            "finish": step}
    note = (f"finishing the run stopped at step {step}: lr {current:.3g} decays (1-sqrt) to "
            f"{wanted['peak'] * wanted['min_ratio']:.3g} over the next {steps} steps "
            f"(train.decay_fraction={decay_fraction} of {step}), then final/ is written")
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
