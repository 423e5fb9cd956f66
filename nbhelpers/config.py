"""Run configuration: one frozen dataclass per concern, profiles as functions, `key=value` overrides.

Every field says what it accepts next to its declaration: `setting(default, choices=..., ge=..., check=...)`
(see `Rule`), and rules that tie several fields together are `@cross_rule("section.a", "section.b")`
functions right below their section. `load`, `apply_overrides` and `from_dict` check all of them before
anything runs; a module that receives one section (device.select, model.resolve, the mixer) checks it with
`check_section`, and one value with `check_value`, so each rule lives here once.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any

from . import registry

# Seed corpus mixture: the report mixes Wikipedia, Wikibooks, C4 (ja) and JaMARD by ratio.
SEED_MIXTURE = {"wikipedia_ja": 0.45, "wikibooks_ja": 0.05, "c4_ja": 0.40, "jamard": 0.10}
# The real profiles tune on a Japanese hub instruction set plus the bundled and arithmetic pairs.
REAL_SFT_DATA = ("dolly_ja", "bundled_instructions", "arithmetic_instructions")
SMOKE_MIXTURE = {"bundled_prose": 0.8, "arithmetic": 0.2}


class ConfigError(ValueError):
    """A profile name, override key or value that does not fit the configuration."""


# ---------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """What a field accepts beyond its type. Choices and bounds apply to a scalar, to each item of a tuple
    and to each value of a dict; `check` sees the whole value and returns what was expected, or None."""

    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None  # a callable: names known elsewhere
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    check: Callable[[Any], str | None] | None = None
    note: str = ""  # why, appended to the error

    def bounds(self) -> str:
        """The range in words: '>= 1', 'in [0, 1)'."""
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f"{'>=' if self.ge is not None else '>'} {low[1:]}"
        if high:
            return f"{'<=' if self.le is not None else '<'} {high[:-1]}"
        return ""

    def problems(self, key: str, value: Any) -> list[str]:
        """Every way `value` breaks this rule, each naming the key, the value and what was expected."""
        out = []
        if isinstance(value, dict):
            items = [(f"{key}[{k!r}]", v) for k, v in value.items()]
        elif isinstance(value, tuple):
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(key, value)]
        note = f" ({self.note})" if self.note else ""
        for where, item in items:
            if isinstance(item, float) and not math.isfinite(item):
                out.append(f"{where}: expected a finite number, got {item!r}")
                continue
            if self.choices is not None and isinstance(item, str):
                allowed = tuple(self.choices() if callable(self.choices) else self.choices)
                if item not in allowed:
                    close = difflib.get_close_matches(item, allowed, n=2, cutoff=0.5)
                    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                    out.append(f"{where}: expected {' | '.join(allowed)}, got {item!r}{hint}{note}")
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not (
                    (self.ge is None or item >= self.ge) and (self.gt is None or item > self.gt)
                    and (self.le is None or item <= self.le) and (self.lt is None or item < self.lt)):
                out.append(f"{where}: expected {self.bounds()}, got {item!r}{note}")
        if self.check is not None and not out:
            expected = self.check(value)
            if expected:
                out.append(f"{key}: expected {expected}, got {value!r}{note}")
        return out


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def setting(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **rule: Any) -> Any:
    """A dataclass field with its Rule (keywords of Rule): `micro_batch: int = setting(8, ge=1)`."""
    meta = {"rule": Rule(**rule)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# (keys it reads, function of the RunConfig returning what is wrong or None), in declaration order
CROSS_RULES: list[tuple[tuple[str, ...], Callable[[Any], str | None]]] = []


def cross_rule(*keys: str) -> Callable[[Callable[[Any], str | None]], Callable[[Any], str | None]]:
    """Register a rule over several fields: the function takes the RunConfig and returns what is wrong, or None."""
    def register(fn: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        CROSS_RULES.append((keys, fn))
        return fn
    return register


# ---------------------------------------------------------------- tokenizer

NORMALIZATIONS = ("nfkc", "identity", "nmt_nfkc", "nfkc_cf", "nmt_nfkc_cf")  # SentencePiece's built-in rules
# 4 special pieces + 256 byte pieces + the 94 printable ASCII characters every tokenizer keeps + 1
MIN_VOCAB_SIZE = 4 + 256 + 94 + 1
MAX_VOCAB_SIZE = 65536  # the corpus stores token ids as uint16


@dataclass(frozen=True)
class TokenizerConfig:
    """SentencePiece settings; the defaults are the report's."""

    vocab_size: int = setting(32000, ge=MIN_VOCAB_SIZE, le=MAX_VOCAB_SIZE,
                              note=f"at least {MIN_VOCAB_SIZE}: 4 special pieces, 256 byte pieces and 94 ASCII "
                              "characters; at most 65536: the corpus stores token ids as uint16")
    # unigram: the only type exported exactly to a Hugging Face tokenizer
    model_type: str = setting("unigram", choices=("unigram",))
    character_coverage: float = setting(0.9995, ge=0.98, le=1.0, note="SentencePiece's range")
    normalization: str = setting("nfkc", choices=NORMALIZATIONS)
    remove_extra_whitespaces: bool = True
    split_by_whitespace: bool = False
    split_by_number: bool = False
    split_by_unicode_script: bool = False
    byte_fallback: bool = True
    add_bos: bool = False  # encode() adds BOS: off, documents are joined with EOS instead
    add_eos: bool = False  # encode() adds EOS: off, the packer and the collator add it explicitly
    # characters of mixed corpus text used to train the tokenizer
    sample_chars: int = setting(200_000_000, ge=1)
    heldout_chars: int = setting(200_000, ge=0)  # characters held out for the statistics shown in 01
    # bytes; longer training lines are split, not dropped
    max_sentence_length: int = setting(16384, ge=16, le=1 << 30)
    # 0 = all cores; SentencePiece gives the same model for the same text and thread count
    num_threads: int = setting(0, ge=0)


# ---------------------------------------------------------------- corpus

ON_BAD_UTF8 = ("error", "skip")
ON_EXHAUSTED = ("repeat", "stop")


def _mixture_problem(mixture: dict[str, float]) -> str | None:
    """Known source names and at least one positive weight (weights are checked >= 0 by the bounds)."""
    if not mixture:
        return "a non-empty dict of source name -> weight"
    for name in mixture:
        try:
            registry.resolve(name)
        except registry.SourceError as err:
            return f"known source names: {err}"
    if sum(mixture.values()) <= 0:
        return "at least one positive weight (all weights are zero)"
    return None


@dataclass(frozen=True)
class CorpusConfig:
    """Sources, mixture weights, cleaning, token budget and packing."""

    mixture: dict[str, float] = setting(factory=lambda: dict(SEED_MIXTURE), ge=0, check=_mixture_problem)
    # 0 keeps every symbol, 1 removes every non-punctuation symbol in prose
    symbol_level: float = setting(0.5, ge=0.0, le=1.0)
    min_chars: int = setting(50, ge=0)  # documents shorter than this after cleaning are dropped
    dedup: bool = True
    block_len: int = setting(512, ge=2)  # tokens per packed block (the training context)
    token_budget: int = setting(0, ge=0)  # 0 = Chinchilla: 20 tokens per model parameter
    tokens_per_param: float = setting(20.0, gt=0)
    # 03 produces the training stream while it trains, in parts of part_tokens (whole blocks): at most
    # parts_ahead parts ready ahead of the one being read, one behind, on local scratch disk
    part_tokens: int = setting(8_000_000, ge=2)
    parts_ahead: int = setting(2, ge=1)
    val_blocks: int = setting(256, ge=1)
    seed: int = setting(1234, ge=0)
    # processes that clean and tokenize: 0 = all cores (02), and while training the spare ones, at most 8
    workers: int = setting(0, ge=0)
    on_bad_utf8: str = setting("error", choices=ON_BAD_UTF8)
    # 0 = source order; > 1 shuffles: files (and the bundled prose, Debian's texts) are read in slices of about 64,000
    # characters, each slice's documents shuffled and the slices in windows of 32; streamed sources (the hub,
    # gzipped files) are read in pieces of up to this many documents (and 1M characters), each piece shuffled
    shuffle_buffer: int = setting(2000, ge=0)
    # repeat (a finite source starts a new epoch) | stop (the stream ends)
    on_exhausted: str = setting("repeat", choices=ON_EXHAUSTED)


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class Preset:
    """The architecture numbers of one named model."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
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

    preset: str = setting("seed_1b", choices=lambda: PRESETS)
    hidden_size: int = setting(0, ge=0)  # 0 = from the preset
    num_hidden_layers: int = setting(0, ge=0)
    num_attention_heads: int = setting(0, ge=0)
    intermediate_size: int = setting(0, ge=0)
    max_position_embeddings: int = setting(0, ge=0)
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


@cross_rule("corpus.part_tokens", "corpus.block_len")
def _parts_hold_a_block(cfg: Any) -> str | None:
    if cfg.corpus.part_tokens < cfg.corpus.block_len:
        return (f"corpus.part_tokens={cfg.corpus.part_tokens} is smaller than one block (corpus.block_len="
                f"{cfg.corpus.block_len}); a part of the training stream holds whole blocks")
    return None


@cross_rule("corpus.val_blocks", "corpus.block_len", "corpus.token_budget")
def _val_within_the_budget(cfg: Any) -> str | None:
    # the validation shard is a sample of the stream: more tokens than the training budget is a typo (with
    # token_budget=0 the budget follows from the model, and 02 checks it when it knows the parameter count)
    val_tokens = cfg.corpus.val_blocks * cfg.corpus.block_len
    if cfg.corpus.token_budget and val_tokens > cfg.corpus.token_budget:
        return (f"corpus.val_blocks={cfg.corpus.val_blocks} makes a validation shard of {val_tokens:,} tokens, more "
                f"than corpus.token_budget={cfg.corpus.token_budget:,}; use corpus.val_blocks <= "
                f"{max(1, cfg.corpus.token_budget // cfg.corpus.block_len):,}")
    return None


# ---------------------------------------------------------------- training

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

    backend: str = setting("auto", choices=BACKENDS)
    precision: str = setting("auto", choices=PRECISIONS)
    micro_batch: int = setting(8, ge=1)
    grad_accum: int = setting(4, ge=1)
    lr: float = setting(3e-4, gt=0)
    min_lr_ratio: float = setting(0.1, ge=0, le=1)
    warmup_steps: int = setting(500, ge=0)
    weight_decay: float = setting(0.1, ge=0)
    betas: tuple[float, float] = setting((0.9, 0.95), ge=0, lt=1)
    grad_clip: float = setting(1.0, ge=0)  # 0 = no clipping
    max_steps: int = setting(0, ge=0)  # 0 = as many as the token budget gives
    eval_every: int = setting(500, ge=0)  # 0 = only at the end
    eval_batches: int = setting(16, ge=0)  # 0 = the whole held-out set
    save_every: int = setting(1000, ge=0)  # 0 = only at the end
    keep_last: int = setting(2, ge=0)  # 0 = keep every checkpoint
    log_every: int = setting(10, ge=1)
    max_minutes: float = setting(0.0, ge=0)  # 0 = no time budget; the platform default is applied by the notebook
    gradient_checkpointing: bool = False
    # adamw | adamw8bit | muon (Muon on the hidden matrices, AdamW on the rest: optim.py, muon.py)
    optimizer: str = setting("adamw", choices=OPTIMIZERS)
    muon_lr: float = setting(0.0, ge=0)  # Muon's peak LR (AdamW-matched update scale); 0 = train.lr
    muon_momentum: float = setting(0.95, ge=0, lt=1)
    muon_qkv: str = setting("blocks", choices=("blocks", "whole"))  # the fused QKV weight: per q / k / v, or whole
    compile: bool = False
    # training processes (torchrun ranks): 0 = one per visible CUDA GPU, else 1; 2+ on a CPU uses gloo
    nproc: int = setting(0, ge=0)
    fsdp: bool = False  # XLA only: FSDPv2 weight and optimizer sharding
    max_bad_steps: int = setting(5, ge=0)  # 0 = never stop on non-finite steps
    seed: int = setting(1234, ge=0)
    sample_prompts: tuple[str, ...] = ("太陽は何色ですか？", "日本の首都は", "1たす2は")
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


# ---------------------------------------------------------------- instruction tuning

PROMPT_PREFIXES = ("eos", "bos", "none")
OVERFLOWS = ("truncate_left", "drop")
ON_INVALID = ("error", "skip")


def template_problem(template: str, marker: str) -> str | None:
    """What is wrong with a prompt template and its response marker, or None (collator.check_template raises it)."""
    if template.count("{prompt}") != 1:
        return f"template {template!r}: needs exactly one {{prompt}} slot, found {template.count('{prompt}')}"
    if not marker:
        return "the response marker is empty: set sft.response_marker to the text that opens the answer"
    if marker not in template.split("{prompt}", 1)[1]:
        where = "before {prompt}" if marker in template else "anywhere"
        return (f"template {template!r}: response marker {marker!r} not found after {{prompt}} (found {where}); "
                "the model needs it to know where the answer starts. Put the marker at the end of the template, "
                "or set sft.response_marker to the template's own marker")
    return None


def _data_problem(names: tuple[str, ...]) -> str | None:
    if not names:
        return "at least one instruction data name"
    for name in names:
        problem = registry.data_name_problem(name)
        if problem:
            return f"instruction data names ({problem})"
    return None


@dataclass(frozen=True)
class SFTConfig:
    """Instruction tuning: data, prompt template, overflow, replay of pre-training blocks, and the tuning schedule."""

    # data names: bundled_instructions | arithmetic_instructions | files:GLOB (JSONL of {"prompt","target"} or {"messages": [...]}) |
    # hub:ID[@CONFIG]#PROMPT[+CONTEXT]>TARGET | hub:ID[@CONFIG]#MESSAGES (a column of conversations) |
    # a hub instruction entry of the source registry
    data: tuple[str, ...] = setting(("bundled_instructions", "arithmetic_instructions"), check=_data_problem)
    template: str = "### 指示:\n{prompt}\n\n### 応答:\n"  # one {prompt}; the same text in training and chat
    response_marker: str = "### 応答:"  # must follow {prompt} in the template
    # token before each prompt (pre-training puts EOS before documents)
    prompt_prefix: str = setting("eos", choices=PROMPT_PREFIXES)
    max_length: int = setting(512, ge=4)  # tokens per example (prompt + response + EOS)
    # truncate_left (cut the prompt from the left) | drop
    overflow: str = setting("truncate_left", choices=OVERFLOWS)
    fixed_length: bool = False  # pad every batch to max_length (always on for the xla backend)
    # error | skip: an invalid line stops loading, or is left out and counted
    on_invalid: str = setting("error", choices=ON_INVALID)
    max_examples: int = setting(0, ge=0)  # per data name; 0 = all
    arithmetic_pairs: int = setting(2000, ge=0)  # generated arithmetic instruction pairs
    # share of each batch's rows taken from pre-training blocks (0 = no replay)
    replay_ratio: float = setting(0.2, ge=0, lt=1)
    replay_len: int = setting(0, ge=0)  # tokens per replay row; 0 = the mean trained length of an instruction row
    heldout_fraction: float = setting(0.05, ge=0, lt=1)  # of each data name, for eval loss and the before/after figures
    micro_batch: int = setting(8, ge=1)
    grad_accum: int = setting(1, ge=1)
    lr: float = setting(2e-5, gt=0)
    weight_decay: float = setting(0.0, ge=0)
    epochs: float = setting(3.0, gt=0)
    warmup_steps: int = setting(20, ge=0)
    eval_every: int = setting(100, ge=0)  # 0 = only at the end
    eval_batches: int = setting(16, ge=0)  # micro-batches per eval, for held-out instructions and the held-out corpus
    save_every: int = setting(200, ge=0)  # 0 = only at the end
    schedule: str = setting("cosine", choices=SCHEDULES)  # the tuning's lr schedule: cosine | wsd (as train.schedule)
    eval_prompts: int = setting(64, ge=0)  # held-out prompts answered before and after tuning (EOS share, arithmetic)
    max_new_tokens: int = setting(64, ge=1)
    # split, order and arithmetic pairs (distinct from the corpus seed: held-out problems stay new)
    seed: int = setting(4321, ge=0)


@cross_rule("sft.template", "sft.response_marker")
def _template_has_marker(cfg: Any) -> str | None:
    return template_problem(cfg.sft.template, cfg.sft.response_marker)


@cross_rule("sft.max_length", "model.max_position_embeddings")
def _examples_fit_the_model(cfg: Any) -> str | None:
    if cfg.model.preset not in PRESETS:
        return None
    limit = model_value(cfg.model, "max_position_embeddings")
    if cfg.sft.max_length > limit:
        return f"sft.max_length={cfg.sft.max_length} is above the model's max_position_embeddings={limit}"
    return None


@cross_rule("sft.arithmetic_pairs", "sft.data")
def _arithmetic_pairs_when_named(cfg: Any) -> str | None:
    if "arithmetic_instructions" in cfg.sft.data and cfg.sft.arithmetic_pairs < 1:
        return "sft.data names arithmetic_instructions but sft.arithmetic_pairs=0: set it >= 1 or drop the name"
    return None


# ---------------------------------------------------------------- evaluation

HUB_SOURCES = ("script_free", "leaderboard")


@dataclass(frozen=True)
class EvalConfig:
    """Perplexity and lm-evaluation-harness."""

    ppl_texts: int = setting(8, ge=1)
    ppl_stride: int = setting(256, ge=0)  # 0 = half the window
    tasks: tuple[str, ...] = (
        "ja_leaderboard_jaqket_v2",
        "ja_leaderboard_jcommonsenseqa",
        "ja_leaderboard_jsquad",
    )
    num_fewshot: dict[str, int] = setting(
        factory=lambda: {
            "ja_leaderboard_jaqket_v2": 1,
            "ja_leaderboard_jcommonsenseqa": 3,
            "ja_leaderboard_jsquad": 2,
        },
        ge=0,
    )
    local_tasks: bool = False  # True: the bundled offline copies of the three tasks
    # script_free: the tasks' data without loading scripts | leaderboard: needs datasets<4
    hub_source: str = setting("script_free", choices=HUB_SOURCES)
    limit: int = setting(0, ge=0)  # 0 = every example
    batch_size: int = setting(8, ge=1)
    ppl_max_length: int = setting(0, ge=0)  # tokens per perplexity window; 0 = the model's context
    max_gen_toks: int = setting(0, ge=0)  # lm-eval generation budget; 0 = 256, or a quarter of a shorter context
    lm_eval: bool = True  # False skips the harness (perplexity only)


@cross_rule("eval.ppl_max_length", "eval.ppl_stride", "model.max_position_embeddings")
def _windows_fit_the_model(cfg: Any) -> str | None:
    if cfg.model.preset not in PRESETS:
        return None
    context = model_value(cfg.model, "max_position_embeddings")
    window = cfg.eval.ppl_max_length or context
    if cfg.eval.ppl_max_length == 1 or window > context:
        return (f"eval.ppl_max_length={cfg.eval.ppl_max_length}: expected 0 (the model's context) or "
                f"2..{context} (the model's max_position_embeddings)")
    if cfg.eval.ppl_stride >= window:
        return f"eval.ppl_stride={cfg.eval.ppl_stride}: expected 0 or 1..{window - 1} (below the window of {window} tokens)"
    return None


@cross_rule("eval.tasks", "eval.lm_eval")
def _tasks_when_lm_eval(cfg: Any) -> str | None:
    # an empty list would fail in 06 only after every perplexity was computed
    if cfg.eval.lm_eval and not cfg.eval.tasks:
        return ("eval.tasks=[] with eval.lm_eval=true: name at least one lm-eval task, or set eval.lm_eval=false "
                "for perplexity only")
    return None


@cross_rule("eval.max_gen_toks", "model.max_position_embeddings")
def _generation_fits_the_model(cfg: Any) -> str | None:
    if cfg.model.preset not in PRESETS:
        return None
    context = model_value(cfg.model, "max_position_embeddings")
    if cfg.eval.max_gen_toks >= context:
        return f"eval.max_gen_toks={cfg.eval.max_gen_toks}: expected 0 or 1..{context - 1} (the model's context is {context})"
    return None


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs."""

    profile: str = "colab_t4"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """Short hash of the named sections (all when none are named)."""
        data = self.to_dict()
        picked = {k: data[k] for k in (sections or tuple(data))}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- profiles


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


# ---------------------------------------------------------------- overrides


def _parse_value(text: str) -> Any:
    """JSON when it parses, the plain string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _coerce(value, arm, key)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e6 parses as a float
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin is tuple:
        if isinstance(value, str):
            value = [value]  # a single string where a tuple of strings is expected
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        kt, vt = args
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    raise bad


def _all_keys(cfg: RunConfig) -> list[str]:
    keys = []
    for f in fields(cfg):
        sub = getattr(cfg, f.name)
        if is_dataclass(sub):
            keys += [f"{f.name}.{g.name}" for g in fields(sub)]
    return keys


def _sections() -> dict[type, str]:
    """Section dataclass -> its name in RunConfig."""
    return {typing.get_type_hints(RunConfig)[f.name]: f.name for f in fields(RunConfig) if f.name != "profile"}


def _field_problems(section_name: str, section: Any) -> list[str]:
    out = []
    for f in fields(section):
        rule = f.metadata.get("rule")
        if rule is not None:
            out += rule.problems(f"{section_name}.{f.name}", getattr(section, f.name))
    return out


def _cross_problems(cfg: RunConfig, sections: Iterable[str] | None = None) -> list[str]:
    """Cross rules whose keys all lie in `sections` (all when None); skipped when a key they read already failed."""
    out = []
    for keys, rule in CROSS_RULES:
        if sections is None or all(k.split(".")[0] in sections for k in keys):
            problem = rule(cfg)
            if problem:
                out.append(problem)
    return out


def _raise(problems: list[str], error: type[Exception]) -> None:
    if len(problems) == 1:
        raise error(problems[0])
    if problems:
        raise error(f"{len(problems)} configuration problems:\n  " + "\n  ".join(problems))


def validate(cfg: RunConfig, error: type[Exception] = ConfigError) -> RunConfig:
    """`cfg` when every field and cross-field rule holds; otherwise `error` naming every key, value and what was expected."""
    problems = [p for section, name in ((getattr(cfg, n), n) for n in _sections().values())
                for p in _field_problems(name, section)]
    # a cross rule reads resolved values (the preset's numbers): only once every single field is sound
    _raise(problems or _cross_problems(cfg), error)
    return cfg


def check_section(section: Any, error: type[Exception] = ConfigError) -> None:
    """Check one section (a TrainConfig given to device.select, a ModelConfig to model.resolve) by the same rules."""
    name = _sections()[type(section)]
    problems = _field_problems(name, section)
    _raise(problems or _cross_problems(replace(RunConfig(), **{name: section}), [name]), error)


def check_value(key: str, value: Any, error: type[Exception] = ConfigError) -> None:
    """Check one value against the rule declared for `key` ("corpus.workers"), for functions that take it alone."""
    section, name = key.split(".", 1)
    rule = next(f for f in fields(getattr(RunConfig(), section)) if f.name == name).metadata.get("rule")
    _raise(rule.problems(key, value) if rule else [], error)


def apply_overrides(cfg: RunConfig, overrides: typing.Iterable[str] | dict[str, Any]) -> RunConfig:
    """Return `cfg` with `section.field=value` overrides applied, type-checked and validated (see `validate`)."""
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    known = _all_keys(cfg)
    for key, value in items:
        if isinstance(value, str) and not isinstance(overrides, dict):
            value = _parse_value(value)
        if key not in known:
            same_field = [k for k in known if k.split(".")[-1] == key.split(".")[-1]]
            close = same_field + [k for k in difflib.get_close_matches(key, known, n=3, cutoff=0.5) if k not in same_field]
            hint = f"; did you mean {', '.join(close)}?" if close else "; keys look like train.lr"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        section, name = key.split(".", 1)
        sub = getattr(cfg, section)
        hints = typing.get_type_hints(type(sub))
        value = _coerce(value, hints[name], key)
        cfg = replace(cfg, **{section: replace(sub, **{name: value})})
    return validate(cfg)


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (for example train.lr=3e-4)")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


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
