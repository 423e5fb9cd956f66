"""The train section: backend, precision, batch, optimizer and schedule of pre-training, and the rules between them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .rules import cross_rule, setting

BACKENDS = ("auto", "cpu", "cuda", "xla")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit", "muon")
REPORT_TO = ("none", "tensorboard", "wandb", "trackio")  # trackers.py: a live view beside metrics.jsonl


def precision_problem(backend: str, precision: str) -> str | None:
    """Why `precision` cannot train on `backend` (a chosen one, not auto), or None; device.select asks too."""
    if precision == "fp16" and backend == "xla":
        return "train.precision=fp16 is not supported on XLA: TPUs compute in bf16; use bf16, fp32 or auto"
    if precision == "fp16" and backend == "cpu":
        return ("train.precision=fp16 on the CPU: fp16 matmuls are slow there and need loss scaling; "
                "use fp32 (auto) or bf16")
    return None


SCHEDULES = ("cosine", "wsd")  # learning-rate schedules (optim.py)


@dataclass(frozen=True)
class TrainConfig:
    """The pre-training loop."""

    # auto (xla, else cuda, else cpu) | cpu | cuda | xla
    backend: str = setting("auto", choices=BACKENDS)
    # auto (bf16 on XLA and Ampere+, fp16 on older GPUs, on a CPU the faster of bf16 and fp32) | fp32 | fp16 | bf16
    precision: str = setting("auto", choices=PRECISIONS)
    # sequences per forward pass (per process; on XLA across all chips)
    micro_batch: int = setting(8, ge=1)
    # micro-batches summed into one optimizer step
    grad_accum: int = setting(4, ge=1)
    # peak learning rate (AdamW's; Muon's is muon_lr)
    lr: float = setting(3e-4, gt=0)
    # the schedule's floor as a fraction of the peak lr
    min_lr_ratio: float = setting(0.1, ge=0, le=1)
    # optimizer steps of linear warmup from 0 to lr
    warmup_steps: int = setting(500, ge=0)
    # AdamW's decoupled weight decay (matrices only)
    weight_decay: float = setting(0.1, ge=0)
    # AdamW's (beta1, beta2)
    betas: tuple[float, float] = setting((0.9, 0.95), ge=0, lt=1)
    grad_clip: float = setting(1.0, ge=0)  # 0 = no clipping
    max_steps: int = setting(0, ge=0)  # 0 = as many as the token budget gives
    eval_every: int = setting(500, ge=0)  # 0 = only at the end
    eval_batches: int = setting(16, ge=0)  # 0 = the whole held-out set
    save_every: int = setting(1000, ge=0)  # 0 = only at the end
    keep_last: int = setting(2, ge=0)  # 0 = keep every checkpoint
    # optimizer steps between lines of metrics.jsonl
    log_every: int = setting(10, ge=1)
    max_minutes: float = setting(0.0, ge=0)  # 0 = no time budget; the platform default is applied by the notebook
    # recompute each block's activations in the backward: less memory, about a third more compute
    gradient_checkpointing: bool = False
    # adamw | adamw8bit | muon (Muon on the hidden matrices, AdamW on the rest: optim.py, muon.py)
    optimizer: str = setting("adamw", choices=OPTIMIZERS)
    muon_lr: float = setting(0.0, ge=0)  # Muon's peak LR (AdamW-matched update scale); 0 = train.lr
    # Muon's Nesterov momentum
    muon_momentum: float = setting(0.95, ge=0, lt=1)
    muon_qkv: str = setting("blocks", choices=("blocks", "whole"))  # the fused QKV weight: per q / k / v, or whole
    # torch.compile the forward (CUDA and CPU)
    compile: bool = False
    # training processes (torchrun ranks): 0 = one per visible CUDA GPU, else 1; 2+ on a CPU uses gloo
    nproc: int = setting(0, ge=0)
    fsdp: bool = False  # XLA only: FSDPv2 weight and optimizer sharding
    max_bad_steps: int = setting(5, ge=0)  # 0 = never stop on non-finite steps
    # torch, numpy and random seeds (plus the rank): the weights' initialization
    seed: int = setting(1234, ge=0)
    # prompts whose continuations are logged at each evaluation
    sample_prompts: tuple[str, ...] = ("太陽は何色ですか？", "日本の首都は", "1たす2は")
    # tokens generated per sample prompt
    sample_tokens: int = setting(32, ge=1)
    # cosine | wsd (warmup, constant, then a 1-sqrt decay over the last decay_fraction of the steps: optim.py)
    schedule: str = setting("cosine", choices=SCHEDULES)
    decay_fraction: float = setting(0.2, gt=0, le=1)  # wsd's decay, and a finish's: decay_fraction x steps so far
    finish: bool = False  # anneal a stopped run now: decay over the next decay_fraction x its steps, write final/
    save_minutes: float = setting(0.0, ge=0)  # also checkpoint every this many minutes of training; 0 = off
    eval_minutes: float = setting(0.0, ge=0)  # also evaluate every this many minutes of training; 0 = off
    # a live view of metrics.jsonl (which stays the record): none | tensorboard | wandb | trackio, installed on demand
    report_to: str = setting("none", choices=REPORT_TO)


@cross_rule("train.backend", "train.precision")
def _precision_runs_on_backend(cfg: Any) -> str | None:
    return precision_problem(cfg.train.backend, cfg.train.precision)


@cross_rule("train.fsdp", "train.backend")
def _fsdp_is_xla(cfg: Any) -> str | None:
    if cfg.train.fsdp and cfg.train.backend in ("cpu", "cuda"):
        return f"train.fsdp=true shards over XLA devices only, but train.backend={cfg.train.backend}; set train.fsdp=false"
    return None


def nproc_problem(backend: str, nproc: int) -> str | None:
    """Why `nproc` processes cannot train on `backend`, or None; launch.resolve_nproc asks with the chosen backend."""
    if backend == "xla" and nproc > 1:
        return f"train.nproc={nproc}: XLA trains in one process over every chip (SPMD); use train.nproc=0"
    return None


@cross_rule("train.nproc", "train.backend")
def _xla_is_one_process(cfg: Any) -> str | None:
    return nproc_problem(cfg.train.backend, cfg.train.nproc)


