"""The loop's backend seams: where batches reach the device, what runs after a step, how the model is wrapped."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ..config import TrainConfig
from ..decoding import new_tokens


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
        """Greedy continuations of `prompts` (only the new text), one prompt at a time through the one path."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        prompts = list(prompts)
        ids = [tokenizer(p, return_token_type_ids=False)["input_ids"] for p in prompts]
        with autocast():
            new = new_tokens(model, ids, max_new_tokens, pad_id=pad, eos_id=tokenizer.eos_token_id, batch_size=1)
        return [{"prompt": p, "text": tokenizer.decode(row, skip_special_tokens=True)} for p, row in zip(prompts, new)]


def default_hooks(choice: Any, run_root: str | os.PathLike | None = None) -> Hooks:
    """Plain hooks for CPU and CUDA; the XLA adapter's for XLA (the only place torch_xla is imported), which keeps
    compiled programs in `run_root`/xla_cache when given, so the next session does not compile them again."""
    if choice.backend == "xla":
        from .. import xla

        return xla.loop_hooks(choice, run_root)
    return Hooks()
