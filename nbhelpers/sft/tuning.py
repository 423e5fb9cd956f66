"""Instruction tuning's batches (instruction rows with replay of pre-training blocks) and its TrainConfig."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from ..batches import rank_world
from ..collator import IGNORE, Collator
from ..config import RunConfig, SFTConfig, TrainConfig
from .instructions import pad_id, trained_tokens

MIN_STEPS = 50  # fewer optimizer steps than this rarely teach the response format and EOS


class SFTBatches:
    """Micro-batches of instruction rows mixed with pre-training blocks (replay); `batch(i)` is pure in `i`.

    Global micro-batch g holds floor((g+1)·B·r) − floor(g·B·r) replay rows and the rest instruction rows, so the
    realised replay share over any run of batches is `replay_ratio` to within one row. Instruction rows are
    read from a stream of per-pass permutations (seeded by (seed, pass)); replay rows take the first
    `replay_len` tokens of corpus blocks from their own seeded stream; all their tokens are trained. The default
    `replay_len` (0) is the mean trained length of an instruction row, so the trained-token share matches the
    row share instead of long corpus rows drowning the responses. Rank r of w reads global micro-batches j·w + r.
    """

    def __init__(self, rows: Sequence[dict[str, Sequence[int]]], micro_batch: int, collator: Collator, *,
                 replay: Any = None, replay_ratio: float = 0.0, replay_len: int = 0, seed: int = 0,
                 shuffle: bool = True, limit: int = 0, rank: int | None = None, world_size: int | None = None) -> None:
        if not 0.0 <= replay_ratio <= 1.0:
            raise ValueError(f"replay_ratio must be in [0, 1], got {replay_ratio}")
        if replay_ratio > 0 and (replay is None or len(replay) == 0):
            raise ValueError("replay_ratio > 0 needs pre-training blocks (the corpus train reader)")
        if replay_ratio < 1 and not rows:
            raise ValueError("no instruction rows to batch (all dropped as too long? raise sft.max_length)")
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        self.rows, self.B, self.collator, self.replay = list(rows), int(micro_batch), collator, replay
        self.micro_batch = self.B  # the batch-source protocol's size (batches.py)
        self.ratio = Fraction(replay_ratio).limit_denominator(1000)  # exact arithmetic: no float drift in counts
        self.seed, self.shuffle = int(seed), shuffle
        self.rank, self.world = rank_world(micro_batch, rank, world_size)
        mean_trained = trained_tokens(self.rows) / len(self.rows) if self.rows else collator.max_length
        width = min(collator.max_length, len(replay[0]) if replay is not None and len(replay) else collator.max_length)
        self.replay_len = min(width, replay_len or max(1, round(mean_trained)))
        if self.ratio < 1:
            global_batches = math.ceil(len(self.rows) / (self.B * (1 - self.ratio)))
        else:
            global_batches = max(1, len(replay) // self.B)
        per_rank = max(1, math.ceil(global_batches / self.world))
        self._len = min(per_rank, limit) if limit > 0 else per_rank
        self._perms: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return self._len

    def _n_replay_before(self, g: int) -> int:
        return math.floor(g * self.B * self.ratio)

    def _pick(self, kind: str, k: int, n: int) -> int:
        """Item k of an endless stream over n items: pass k // n in a permutation seeded by (seed, kind, pass)."""
        epoch, pos = divmod(k, n)
        if not self.shuffle:
            return pos
        key = (kind, epoch)
        if key not in self._perms:
            if len(self._perms) > 4:  # keep a few passes cached: memory stays bounded, batch(i) stays pure
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, int(kind == "replay"), epoch]).permutation(n)
        return int(self._perms[key][pos])

    def layout(self, index: int) -> tuple[list[int], list[int]]:
        """(instruction row indices, replay block indices) of this rank's micro-batch `index`."""
        if index < 0:
            raise IndexError(f"batch index must be >= 0, got {index}")
        g = index * self.world + self.rank
        r0, r1 = self._n_replay_before(g), self._n_replay_before(g + 1)
        i0, i1 = g * self.B - r0, (g + 1) * self.B - r1
        instr = [self._pick("instr", k, len(self.rows)) for k in range(i0, i1)]
        replay = [self._pick("replay", k, len(self.replay)) for k in range(r0, r1)]
        return instr, replay

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Micro-batch `index`: input_ids, labels, attention_mask (B, T) int64; replay rows last."""
        instr, replay = self.layout(index)
        rows = [self.rows[k] for k in instr]
        for k in replay:
            ids = [int(t) for t in np.asarray(self.replay[k])[: self.replay_len]]
            rows.append({"input_ids": ids, "labels": ids, "attention_mask": [1] * len(ids)})
        return self.collator(rows)


def corpus_eval_batches(reader: Any, micro_batch: int, collator: Collator, limit: int) -> SFTBatches:
    """Held-out corpus blocks (cut to the SFT width), in order: the forgetting side of the eval plot."""
    return SFTBatches([], micro_batch, collator, replay=reader, replay_ratio=1.0, replay_len=collator.max_length,
                      shuffle=False, limit=limit)


# ---------------------------------------------------------------- training configuration


def train_config(cfg: RunConfig, steps_per_epoch: int, fixed_length: bool | None = None) -> TrainConfig:
    """The loop's TrainConfig for tuning: the pre-training one with SFT's lr, batch, steps and eval cadence."""
    s = cfg.sft
    max_steps = max(1, math.ceil(s.epochs * steps_per_epoch / s.grad_accum))
    if max_steps < MIN_STEPS:  # a big batch on a small set: too few updates to learn the format
        warnings.warn(f"instruction tuning gets only {max_steps} optimizer steps ({steps_per_epoch} micro-batches an "
                      f"epoch, sft.epochs={s.epochs}, sft.grad_accum={s.grad_accum}); lower sft.micro_batch or "
                      f"sft.grad_accum, or raise sft.epochs, for at least {MIN_STEPS}", stacklevel=2)
    return dataclasses.replace(
        cfg.train, lr=s.lr, micro_batch=s.micro_batch, grad_accum=s.grad_accum, warmup_steps=min(s.warmup_steps,
        max_steps // 4), max_steps=max_steps, eval_every=min(s.eval_every, max_steps), save_every=min(s.save_every,
        max_steps), eval_batches=s.eval_batches, weight_decay=s.weight_decay, sample_tokens=s.max_new_tokens,
        sample_prompts=(), seed=s.seed, schedule=s.schedule)


def use_fixed_length(cfg: RunConfig, backend: str) -> bool:
    """Pad every batch to max_length when asked, and always on XLA (each new shape is a recompilation)."""
    return cfg.sft.fixed_length or backend == "xla"


def make_batches(cfg: SFTConfig, tokenizer: Any, train_rows: Sequence[dict[str, Sequence[int]]],
                 heldout_rows: Sequence[dict[str, Sequence[int]]], val: Any, replay: Any, fixed_length: bool,
                 ) -> tuple[SFTBatches, dict[str, SFTBatches]]:
    """Training batches (instructions + replay of pre-training blocks) and eval batches: held-out instructions and corpus.

    `val` is the corpus's validation blocks; `replay` the pre-training blocks to replay (the stream's first part,
    `corpus.stream.replay_blocks`), or None when `sft.replay_ratio` is 0.
    """
    collate = Collator(pad_id=pad_id(tokenizer), max_length=cfg.max_length, fixed_length=fixed_length)
    train = SFTBatches(train_rows, cfg.micro_batch, collate, replay=replay if cfg.replay_ratio > 0 else None,
                       replay_ratio=cfg.replay_ratio, replay_len=cfg.replay_len, seed=cfg.seed)
    evals = {"corpus": corpus_eval_batches(val, cfg.micro_batch, collate, cfg.eval_batches)}
    if heldout_rows:  # none when every source is a single example (sft.heldout_fraction cannot split one)
        evals = {"instructions": SFTBatches(heldout_rows, cfg.micro_batch, collate, shuffle=False,
                                            limit=cfg.eval_batches), **evals}
    return train, evals


def replay_share(batches: SFTBatches, n: int = 200) -> dict[str, float]:
    """Realised share of replay rows and of replay trained tokens over the first n micro-batches."""
    rows = [0, 0]
    tokens = [0, 0]
    for i in range(n):
        b = batches.batch(i)["labels"]  # (B, T)
        for r in range(b.shape[0]):
            replay = int(b[r, 0].item() != IGNORE)  # instruction rows open with a masked prompt
            rows[replay] += 1
            tokens[replay] += int((b[r] != IGNORE).sum())
    return {"replay_rows": rows[1] / sum(rows), "replay_tokens": tokens[1] / max(1, sum(tokens))}
