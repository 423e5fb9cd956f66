"""The loop's set-up pieces: processes, activation checkpointing, FLOPs per token, the micro-batches of a step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .. import dist
from ..batches import BatchSource
from ..token_bytes import TokenBytes
from .job import TrainingError


def init_distributed(choice: Any) -> tuple[int, int]:
    """(rank, world): joins the torchrun process group (NCCL on CUDA, gloo on the CPU) when WORLD_SIZE > 1."""
    pg = torch.distributed
    if pg.is_available() and pg.is_initialized():
        return pg.get_rank(), pg.get_world_size()
    world = dist.world_size()
    if world > 1 and choice.backend != "xla":  # XLA SPMD is one process over every chip
        pg.init_process_group("nccl" if choice.backend == "cuda" else "gloo")
        return pg.get_rank(), world
    return 0, 1


def enable_checkpointing(model: Any) -> Any:
    """Turn on activation checkpointing (non-reentrant) under either transformers name; returns the model."""
    kwargs = {"use_reentrant": False}  # non-reentrant: works with DDP, compile and frozen inputs
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token, 6N + 12*L*H*T (planner's accounting; N excludes the input embedding)."""
    c = model.config
    if getattr(c, "model_type", "") == "gpt_neox":
        from ..config import ModelConfig
        from ..planner import flops_per_token as planned

        mc = ModelConfig(preset="smoke", hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                         num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                         max_position_embeddings=c.max_position_embeddings)
        return planned(mc, c.vocab_size, seq_len)
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    return 6.0 * n + 12.0 * c.num_hidden_layers * c.hidden_size * seq_len


def check_batch(batch: dict[str, torch.Tensor], index: int, model: torch.nn.Module, tokenizer: Any) -> tuple[int, int]:
    """The micro-batch shape (B, T) of `batch` (micro-batch `index`); clear errors for data and tokenizers that do
    not fit the model."""
    from ..model import check_compatible

    ids = batch["input_ids"]
    if ids.dim() != 2 or ids.dtype != torch.int64 or batch["labels"].shape != ids.shape:
        raise TrainingError(f"batch({index}) must give input_ids and labels int64 of shape (B, T); got input_ids "
                            f"{tuple(ids.shape)} {ids.dtype}, labels {tuple(batch['labels'].shape)}")
    vocab = model.config.vocab_size
    check_compatible(model.config, seq_len=ids.shape[1],
                     tokenizer_vocab=len(tokenizer) if tokenizer is not None else None)
    if int(ids.max()) >= vocab:
        raise TrainingError(f"token id {int(ids.max())} in batch({index}) is outside the model's vocab_size={vocab}: "
                            "the corpus was tokenized with another tokenizer; rebuild it (02_corpus)")
    return int(ids.shape[0]), int(ids.shape[1])


def n_targets(mb: dict[str, torch.Tensor]) -> int:
    """Tokens that carry a loss in a micro-batch (the model shifts labels left by one)."""
    return int((mb["labels"][:, 1:] != -100).sum())


def cpu_groups(source: BatchSource, start: int, group: int, counts: dict[int, int], first_key: int,
               limit: int | None = None, token_bytes: TokenBytes | None = None,
               byte_counts: dict[int, int] | None = None) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Micro-batches `start, start+1, ...` of `source` in groups of `group`; target counts go to `counts[key]`.

    With `token_bytes`, the UTF-8 bytes of the targets go to `byte_counts[key]` (for bits per byte).
    """
    key, index = first_key, start
    while limit is None or key - first_key < limit:
        mbs = [source.batch(index + k) for k in range(group)]
        counts[key] = sum(n_targets(mb) for mb in mbs)  # counted on the CPU, before the device sees the batch
        if token_bytes is not None and byte_counts is not None:
            byte_counts[key] = sum(token_bytes.scored_bytes(mb["input_ids"], mb["labels"]) for mb in mbs)
        yield mbs
        key, index = key + 1, index + group
