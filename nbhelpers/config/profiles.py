"""The profiles (smoke and the three free platforms) as functions, and `load` / `from_dict`, which resolve one."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable
from typing import Any

from .corpus import SMOKE_MIXTURE, CorpusConfig, TokenizerConfig
from .evaluation import EvalConfig
from .model import ModelConfig
from .overrides import apply_overrides
from .rules import ConfigError
from .run import RunConfig
from .sft import REAL_SFT_DATA, SFTConfig
from .train import TrainConfig


def smoke() -> RunConfig:
    """Everything on a 2-core CPU in minutes, on bundled data."""
    return RunConfig(
        profile="smoke",
        tokenizer=TokenizerConfig(vocab_size=3000, sample_chars=500_000, heldout_chars=20_000),
        corpus=CorpusConfig(
            mixture=dict(SMOKE_MIXTURE),
            block_len=128,
            token_budget=400_000,
            part_tokens=32_768,  # 256 blocks: 150 steps of 8 blocks read about five parts
            val_blocks=32,
            min_chars=20,
        ),
        model=ModelConfig(preset="smoke"),
        train=TrainConfig(
            backend="auto",
            micro_batch=8,
            grad_accum=1,
            lr=2e-3,
            # Muon at 8x lr on the hidden matrices (AdamW at lr on the rest): measured on this profile, the
            # held-out loss at step 150 is 4.47 against AdamW's 4.89 (bpb 1.461 / 1.599, two seeds), for 18%
            # fewer tokens a second on a 2-core CPU; bench/learning_efficiency.py finds 8x best (BENCHMARKS.md)
            optimizer="muon",
            muon_lr=1.6e-2,
            warmup_steps=20,
            # the smoke model's held-out loss falls from ~8.0 (uniform over the vocabulary) to ~4.5 by step 150
            max_steps=150,
            eval_every=50,
            eval_batches=4,
            save_every=100,
            log_every=10,
            sample_tokens=16,
        ),
        # 570 training pairs, batches of 8 with 20% replay: ~90 micro-batches an epoch, ~135 steps in all
        sft=SFTConfig(max_length=128, micro_batch=8, lr=1e-3, epochs=1.5, warmup_steps=10, arithmetic_pairs=300,
                      eval_every=40, eval_batches=4, save_every=100, eval_prompts=24, max_new_tokens=48),
        eval=EvalConfig(ppl_texts=4, ppl_stride=64, local_tasks=True, limit=0, batch_size=4, max_gen_toks=32),
    )


def colab_t4() -> RunConfig:
    """Colab's single T4 (16 GB, fp16): the size dial's d10 (90M), which the planner finishes in three 12-hour sessions.

    The planner (`python -m nbhelpers plan --profile colab_t4 --hours 36`) picks d10: 1.8B tokens in about 33
    training hours at 35% of the 20 TFLOP/s a T4 sustains. Its activations fit without gradient checkpointing,
    which would recompute the forward (about a third more work). The seed's 776M model is
    `model.preset=seed_1b train.gradient_checkpointing=true` (planner.SEED_OVERRIDES): 8-bit AdamW, kept here,
    is what lets its fp32 weights, gradients and moments fit (10.1 of 14.2 usable GiB).
    """
    return RunConfig(
        profile="colab_t4",
        model=ModelConfig(preset="d10"),
        # 4 x 16 x 512 = 32,768 tokens a step, the batch the seed's model fits with (so one override switches).
        # wsd: a stop after any session can be annealed (train.finish); a checkpoint each 30 minutes, one kept on
        # Drive (free: 15 GB; a seed_1b checkpoint with 8-bit AdamW is about 4.7 GB), and a save that cannot fit
        # stops with a message, the previous checkpoint whole
        train=TrainConfig(micro_batch=4, grad_accum=16, gradient_checkpointing=False, optimizer="adamw8bit",
                          max_minutes=0.0, schedule="wsd", save_minutes=30.0, eval_minutes=60.0, keep_last=1),
        sft=SFTConfig(data=REAL_SFT_DATA, micro_batch=4, grad_accum=2),  # rows up to 512 tokens: the pre-training micro-batch fits
    )


def kaggle_t4x2() -> RunConfig:
    """Kaggle's two T4s with DDP under torchrun: d11 (111M), which the planner finishes within a week's 30 GPU hours.

    2.2B tokens in about 25 training hours (`plan --profile kaggle_t4x2 --hours 30`); the seed's model is
    `model.preset=seed_1b train.gradient_checkpointing=true`, with the 8-bit AdamW kept here.
    """
    return RunConfig(
        profile="kaggle_t4x2",
        model=ModelConfig(preset="d11"),
        train=TrainConfig(micro_batch=4, grad_accum=8, gradient_checkpointing=False, optimizer="adamw8bit",
                          schedule="wsd", save_minutes=30.0, eval_minutes=60.0),
        sft=SFTConfig(data=REAL_SFT_DATA, micro_batch=4, grad_accum=1),  # x2 GPUs: 8 rows a step, as the default
    )


def kaggle_tpu_v5e8() -> RunConfig:
    """Kaggle's TPU v5e-8: the seed's model at context 512, torch_xla SPMD over 8 chips, bf16, FSDPv2, fixed shapes."""
    return RunConfig(
        profile="kaggle_tpu_v5e8",
        corpus=CorpusConfig(block_len=512),
        model=ModelConfig(preset="seed_1b"),  # attention "auto": eager on XLA (no host sync per step)
        # 8 sequences per chip per micro-batch (the planner: about 12.8 of 16 GB with FSDP and eager attention),
        # 2 micro-batches per step in one graph: 128 x 512 = 65,536 tokens per optimizer step
        train=TrainConfig(backend="xla", precision="bf16", micro_batch=64, grad_accum=2, fsdp=True,
                          schedule="wsd", save_minutes=30.0, eval_minutes=60.0),
        sft=SFTConfig(data=REAL_SFT_DATA, micro_batch=16, fixed_length=True),  # 2 rows per chip; one static shape for XLA
    )


PROFILES: dict[str, Callable[[], RunConfig]] = {
    "smoke": smoke,
    "colab_t4": colab_t4,
    "kaggle_t4x2": kaggle_t4x2,
    "kaggle_tpu_v5e8": kaggle_tpu_v5e8,
}


def load(profile: str, overrides: typing.Iterable[str] | dict[str, Any] = ()) -> RunConfig:
    """Resolve a profile name plus overrides into a RunConfig."""
    if profile not in PROFILES:
        close = difflib.get_close_matches(profile, PROFILES, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown profile {profile!r}{hint}; known: {', '.join(PROFILES)}")
    return apply_overrides(PROFILES[profile](), overrides)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict()` output (config.json)."""
    flat = {f"{s}.{k}": v for s, sub in data.items() if isinstance(sub, dict) for k, v in sub.items()}
    base = RunConfig(profile=data.get("profile", "custom"))
    return apply_overrides(base, flat)
