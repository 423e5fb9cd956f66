"""GPT-NeoX presets (the seed report's 1B and smaller ones), model construction and compatibility checks."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from .config import PRESETS as PRESETS  # re-exported: the presets are declared with model.preset, in config/model.py
from .config import ModelConfig, check_section, model_parameters, model_value
from .config import Preset as Preset

if TYPE_CHECKING:  # torch and transformers load only when a model is built
    from transformers import GPTNeoXForCausalLM


class ModelError(ValueError):
    """A model configuration, sequence length or vocabulary that does not fit."""


_ARCH_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings")


def resolve(cfg: ModelConfig) -> ModelConfig:
    """The config with every 0 field filled from its preset (config's rules checked: preset, sizes, heads)."""
    check_section(cfg, ModelError)
    return replace(cfg, **{name: model_value(cfg, name) for name in _ARCH_FIELDS})


def hf_config(cfg: ModelConfig, vocab_size: int, *, bos_token_id: int | None = None,
              eos_token_id: int | None = None, pad_token_id: int | None = None,
              attn_implementation: str | None = None) -> Any:
    """The transformers GPTNeoXConfig for a (resolved or preset) ModelConfig and a vocabulary size."""
    from transformers import GPTNeoXConfig

    cfg = resolve(cfg)
    if vocab_size <= 0:
        raise ModelError(f"vocab_size: expected a positive integer (the tokenizer's), got {vocab_size}")
    kwargs = {name: getattr(cfg, name) for name in _ARCH_FIELDS}
    hf = GPTNeoXConfig(
        vocab_size=vocab_size,
        **kwargs,
        hidden_act="gelu",
        tie_word_embeddings=False,  # the report keeps input and output embeddings separate
        use_parallel_residual=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        use_cache=True,
        # special ids come from the tokenizer when one is given; transformers' defaults otherwise
        **{k: v for k, v in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id),
                             ("pad_token_id", pad_token_id)) if v is not None},
    )
    if attn_implementation:
        hf._attn_implementation = attn_implementation
    return hf


def choose_attention(cfg: ModelConfig, device_attn: str | None = None) -> str:
    """`sdpa` unless the config names one or the device choice asks for `eager` (XLA)."""
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    return device_attn or "sdpa"


def build_model(cfg: ModelConfig, vocab_size: int, *, tokenizer: Any = None, device_choice: Any = None,
                seed: int | None = None) -> GPTNeoXForCausalLM:
    """A freshly initialised GPTNeoXForCausalLM for `cfg` with the tokenizer's vocabulary size.

    `tokenizer` (optional) supplies the BOS / EOS / PAD ids written into the model config;
    `device_choice` (a `device.DeviceChoice`) supplies the attention kernel when `cfg` says auto;
    `seed` makes the initial weights reproducible.
    """
    import torch
    from transformers import GPTNeoXForCausalLM

    if tokenizer is not None and len(tokenizer) > vocab_size:
        raise ModelError(f"tokenizer has {len(tokenizer)} tokens but vocab_size={vocab_size}: it must hold all of them")
    ids = {}
    if tokenizer is not None:
        ids = {k: getattr(tokenizer, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    attn = choose_attention(cfg, getattr(device_choice, "attn_implementation", None))
    hf = hf_config(cfg, vocab_size, attn_implementation=attn, **ids)
    if seed is not None:
        torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(hf)
    return model


def count_parameters(model_or_cfg: Any, vocab_size: int | None = None, *, trainable_only: bool = False) -> int:
    """Parameters of a built model, or of a ModelConfig with `vocab_size` computed without building it."""
    if isinstance(model_or_cfg, ModelConfig):
        if vocab_size is None:
            raise ModelError("count_parameters(ModelConfig, vocab_size): vocab_size is required for a config")
        return parameter_breakdown(model_or_cfg, vocab_size)["total"]
    params = model_or_cfg.parameters()
    return sum(p.numel() for p in params if p.requires_grad or not trainable_only)


def parameter_breakdown(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameter count by part for GPT-NeoX (config.model_parameters, after the model's rules are checked)."""
    return model_parameters(resolve(cfg), vocab_size)


def check_compatible(cfg: ModelConfig | Any, *, seq_len: int | None = None, vocab_size: int | None = None,
                     tokenizer_vocab: int | None = None) -> None:
    """Raise a clear ModelError when the data's sequence length or the tokenizer's vocabulary do not fit the model.

    `cfg` may be a ModelConfig or a transformers config (a built model's `.config`).
    """
    if isinstance(cfg, ModelConfig):
        cfg = resolve(cfg)
    max_pos = cfg.max_position_embeddings
    if seq_len is not None and seq_len > max_pos:
        raise ModelError(
            f"sequence length {seq_len} is above the model's max_position_embeddings={max_pos}; "
            f"use corpus.block_len <= {max_pos} or set model.max_position_embeddings={seq_len}"
        )
    model_vocab = getattr(cfg, "vocab_size", vocab_size)
    if tokenizer_vocab is not None and model_vocab is not None and tokenizer_vocab > model_vocab:
        raise ModelError(
            f"the tokenizer has {tokenizer_vocab} tokens but the model's vocab_size is {model_vocab}; "
            "token ids past the embedding table would fail: build the model with the tokenizer's vocabulary"
        )


def describe(cfg: ModelConfig, vocab_size: int) -> dict[str, Any]:
    """The resolved architecture and parameter count as a flat dict (for tables and metrics)."""
    c = resolve(cfg)
    out: dict[str, Any] = {f.name: getattr(c, f.name) for f in fields(c)}
    out["vocab_size"] = vocab_size
    out["parameters"] = parameter_breakdown(c, vocab_size)["total"]
    return out
