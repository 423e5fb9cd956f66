"""The model section: named GPT-NeoX presets, the size dial (dN), and the parameter count from the configuration alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .rules import cross_rule, setting


@dataclass(frozen=True)
class Preset:
    """The architecture numbers of one named model."""

    # width: dimensions of each token's vector
    hidden_size: int
    # transformer blocks
    num_hidden_layers: int
    # attention heads per block (hidden_size / heads dimensions each)
    num_attention_heads: int
    # width of the MLP's hidden layer
    intermediate_size: int
    # the context: the longest sequence in tokens
    max_position_embeddings: int
    # one line for tables and model cards
    description: str


# The seed report's model: 776M parameters with a 32000-token vocabulary. Its intermediate size 6114
# is not 4 * 1536 = 6144 and not a multiple of 128; neox_1b is the same model with 6144, which matrix
# units (tensor cores, the TPU's MXU) tile without padding.
PRESETS: dict[str, Preset] = {
    "seed_1b": Preset(1536, 24, 16, 6114, 1024, "the seed report's model (776M with vocab 32000)"),
    "neox_1b": Preset(1536, 24, 16, 6144, 1024, "seed_1b with intermediate 6144 (multiple of 128)"),
    "small_160m": Preset(768, 16, 12, 3072, 1024, "~163M with vocab 32000"),
    "tiny": Preset(256, 4, 4, 1024, 512, "~20M with vocab 32000 (~4M with 2000); CPU experiments"),
    "smoke": Preset(128, 4, 4, 512, 256, "~1.3M with vocab 2000; the smoke profile on a 2-core CPU"),
}
# The size dial (nanochat's depth): dN has N layers of width 64N, N heads of 64 dimensions and a 4x MLP, so one
# number scales width and depth together; `python -m nbhelpers plan --hours H` picks N. Heads of 64 (not
# nanochat's 128) let every N divide its width, so the dial moves one layer at a time.
DEPTHS = tuple(range(4, 33))


def depth_preset(depth: int) -> Preset:
    """The dial's shape at `depth`: N layers, width 64N, N heads of 64, MLP 4 x width, context 1024."""
    if depth < 1:
        raise ValueError(f"depth: expected a positive number of layers, got {depth}")
    width = 64 * depth
    return Preset(width, depth, depth, 4 * width, 1024, f"the size dial at depth {depth}: width {width}")


PRESETS.update({f"d{n}": depth_preset(n) for n in DEPTHS})
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager")


@dataclass(frozen=True)
class ModelConfig:
    """GPT-NeoX architecture: a named preset, any field overridable."""

    # a PRESETS name; the fields below override its numbers
    preset: str = setting("seed_1b", choices=lambda: PRESETS)
    hidden_size: int = setting(0, ge=0)  # 0 = from the preset
    # 0 = from the preset
    num_hidden_layers: int = setting(0, ge=0)
    # 0 = from the preset
    num_attention_heads: int = setting(0, ge=0)
    # 0 = from the preset
    intermediate_size: int = setting(0, ge=0)
    # 0 = from the preset; tokens of context
    max_position_embeddings: int = setting(0, ge=0)
    # auto (SDPA on CUDA and CPU, eager on XLA) | sdpa | eager
    attn_implementation: str = setting("auto", choices=ATTN_IMPLEMENTATIONS)


def model_value(cfg: ModelConfig, name: str) -> int:
    """An architecture field of `cfg`, or its preset's value when it is 0 (the preset must be known)."""
    return getattr(cfg, name) or getattr(PRESETS[cfg.preset], name)


def model_parameters(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameter count by part for GPT-NeoX (biases on every linear but the output head, two LayerNorms per layer);
    arithmetic on the configuration, so the corpus budget (tokens per parameter) needs no model built."""
    h, inter, n_layers = (model_value(cfg, n) for n in ("hidden_size", "intermediate_size", "num_hidden_layers"))
    attention = (h * 3 * h + 3 * h) + (h * h + h)  # fused QKV projection and output projection, with biases
    mlp = (h * inter + inter) + (inter * h + h)  # up and down projections, with biases
    norms = 2 * (2 * h)  # input and post-attention LayerNorm: weight + bias each
    parts = {
        "embed_in": vocab_size * h,
        "layers": n_layers * (attention + mlp + norms),
        "final_norm": 2 * h,
        "embed_out": vocab_size * h,  # untied, no bias
    }
    parts["total"] = sum(parts.values())
    return parts


@cross_rule("model.hidden_size", "model.num_attention_heads")
def _heads_divide_hidden(cfg: Any) -> str | None:
    if cfg.model.preset not in PRESETS:
        return None  # the preset's own rule reports it
    hidden, heads = model_value(cfg.model, "hidden_size"), model_value(cfg.model, "num_attention_heads")
    if hidden % heads:
        return (f"model.hidden_size={hidden} is not divisible by model.num_attention_heads={heads}; "
                "each head needs hidden_size / heads dimensions")
    return None


@cross_rule("corpus.block_len", "model.max_position_embeddings")
def _blocks_fit_the_model(cfg: Any) -> str | None:
    if cfg.model.preset not in PRESETS:
        return None
    limit = model_value(cfg.model, "max_position_embeddings")
    if cfg.corpus.block_len > limit:
        return (f"corpus.block_len={cfg.corpus.block_len} is above the model's max_position_embeddings={limit}; "
                f"use corpus.block_len <= {limit} or set model.max_position_embeddings={cfg.corpus.block_len}")
    return None

