"""Run configuration: one frozen dataclass per concern, profiles as functions, `key=value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

# Seed corpus mixture: the report mixes Wikipedia, Wikibooks, C4 (ja) and JaMARD by ratio.
SEED_MIXTURE = {"wikipedia_ja": 0.45, "wikibooks_ja": 0.05, "c4_ja": 0.40, "jamard": 0.10}
# The real profiles tune on a Japanese hub instruction set plus the bundled and arithmetic pairs.
REAL_SFT_DATA = ("dolly_ja", "bundled_instructions", "arithmetic_instructions")
SMOKE_MIXTURE = {"bundled_prose": 0.8, "arithmetic": 0.2}


@dataclass(frozen=True)
class TokenizerConfig:
    """SentencePiece settings; the defaults are the report's."""

    vocab_size: int = 32000
    model_type: str = "unigram"  # unigram (the only type exported exactly to a Hugging Face tokenizer)
    character_coverage: float = 0.9995
    normalization: str = "nfkc"  # nfkc | identity | nmt_nfkc
    remove_extra_whitespaces: bool = True
    split_by_whitespace: bool = False
    split_by_number: bool = False
    split_by_unicode_script: bool = False
    byte_fallback: bool = True
    add_bos: bool = False  # encode() adds BOS: off, documents are joined with EOS instead
    add_eos: bool = False  # encode() adds EOS: off, the packer and the collator add it explicitly
    sample_chars: int = 200_000_000  # characters of mixed corpus text used to train the tokenizer
    heldout_chars: int = 200_000  # characters held out for the statistics shown in 01
    max_sentence_length: int = 16384  # longer training lines are split, not dropped
    num_threads: int = 0  # 0 = all cores; SentencePiece gives the same model for the same text and thread count


@dataclass(frozen=True)
class CorpusConfig:
    """Sources, mixture weights, cleaning, token budget and packing."""

    mixture: dict[str, float] = field(default_factory=lambda: dict(SEED_MIXTURE))
    symbol_level: float = 0.5  # 0 keeps every symbol, 1 removes every non-punctuation symbol in prose
    min_chars: int = 50  # documents shorter than this after cleaning are dropped
    dedup: bool = True
    block_len: int = 512  # tokens per packed block (the training context)
    token_budget: int = 0  # 0 = Chinchilla: 20 tokens per model parameter
    tokens_per_param: float = 20.0
    # 03 produces the training stream while it trains, in parts of part_tokens (whole blocks): at most
    # parts_ahead parts ready ahead of the one being read, one behind, on local scratch disk
    part_tokens: int = 8_000_000
    parts_ahead: int = 2
    val_blocks: int = 256
    seed: int = 1234
    workers: int = 0  # processes that clean and tokenize: 0 = all cores (02), and while training the spare ones, at most 8
    on_bad_utf8: str = "error"  # error | skip
    # 0 = source order; > 1 shuffles: files (and the bundled prose, Debian's texts) are read in slices of about 64,000
    # characters, each slice's documents shuffled and the slices in windows of 32; streamed sources (the hub,
    # gzipped files) are read in pieces of up to this many documents (and 1M characters), each piece shuffled
    shuffle_buffer: int = 2000
    on_exhausted: str = "repeat"  # repeat (a finite source starts a new epoch) | stop (the stream ends)


@dataclass(frozen=True)
class ModelConfig:
    """GPT-NeoX architecture: a named preset, any field overridable."""

    preset: str = "seed_1b"  # seed_1b | neox_1b | small_160m | tiny | smoke
    hidden_size: int = 0  # 0 = from the preset
    num_hidden_layers: int = 0
    num_attention_heads: int = 0
    intermediate_size: int = 0
    max_position_embeddings: int = 0
    attn_implementation: str = "auto"  # auto | sdpa | eager


@dataclass(frozen=True)
class TrainConfig:
    """The pre-training loop."""

    backend: str = "auto"  # auto | cpu | cuda | xla
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    micro_batch: int = 8
    grad_accum: int = 4
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 500
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    max_steps: int = 0  # 0 = as many as the token budget gives
    eval_every: int = 500
    eval_batches: int = 16
    save_every: int = 1000
    keep_last: int = 2
    log_every: int = 10
    max_minutes: float = 0.0  # 0 = no time budget; the platform default is applied by the notebook
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"  # adamw | adamw8bit
    compile: bool = False
    nproc: int = 0  # training processes (torchrun ranks): 0 = one per visible CUDA GPU, else 1; 2+ on a CPU uses gloo
    fsdp: bool = False  # XLA only: FSDPv2 weight and optimizer sharding
    max_bad_steps: int = 5
    seed: int = 1234
    sample_prompts: tuple[str, ...] = ("太陽は何色ですか？", "日本の首都は", "1たす2は")
    sample_tokens: int = 32


@dataclass(frozen=True)
class SFTConfig:
    """Instruction tuning: data, prompt template, overflow, replay of pre-training blocks, and the tuning schedule."""

    # data names: bundled_instructions | arithmetic_instructions | files:GLOB (JSONL of {"prompt","target"}) |
    # hub:ID[@CONFIG]#PROMPT[+CONTEXT]>TARGET | a hub instruction entry of the source registry
    data: tuple[str, ...] = ("bundled_instructions", "arithmetic_instructions")
    template: str = "### 指示:\n{prompt}\n\n### 応答:\n"  # one {prompt}; the same text in training and chat
    response_marker: str = "### 応答:"  # must follow {prompt} in the template
    prompt_prefix: str = "eos"  # eos | bos | none: token before each prompt (pre-training puts EOS before documents)
    max_length: int = 512  # tokens per example (prompt + response + EOS)
    overflow: str = "truncate_left"  # truncate_left (cut the prompt from the left) | drop
    fixed_length: bool = False  # pad every batch to max_length (always on for the xla backend)
    on_invalid: str = "error"  # error | skip: an invalid line stops loading, or is left out and counted
    max_examples: int = 0  # per data name; 0 = all
    arithmetic_pairs: int = 2000  # generated arithmetic instruction pairs
    replay_ratio: float = 0.2  # share of each batch's rows taken from pre-training blocks (0 = no replay)
    replay_len: int = 0  # tokens per replay row; 0 = the mean trained length of an instruction row
    heldout_fraction: float = 0.05  # of each data name, for eval loss and the before/after figures
    micro_batch: int = 8
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.0
    epochs: float = 3.0
    warmup_steps: int = 20
    eval_every: int = 100
    eval_batches: int = 16  # micro-batches per eval, for held-out instructions and for the held-out corpus
    save_every: int = 200
    eval_prompts: int = 64  # held-out prompts answered before and after tuning (EOS share, arithmetic accuracy)
    max_new_tokens: int = 64
    seed: int = 4321  # split, order and arithmetic pairs (distinct from the corpus seed: held-out problems stay new)


@dataclass(frozen=True)
class EvalConfig:
    """Perplexity and lm-evaluation-harness."""

    ppl_texts: int = 8
    ppl_stride: int = 256
    tasks: tuple[str, ...] = (
        "ja_leaderboard_jaqket_v2",
        "ja_leaderboard_jcommonsenseqa",
        "ja_leaderboard_jsquad",
    )
    num_fewshot: dict[str, int] = field(
        default_factory=lambda: {
            "ja_leaderboard_jaqket_v2": 1,
            "ja_leaderboard_jcommonsenseqa": 3,
            "ja_leaderboard_jsquad": 2,
        }
    )
    local_tasks: bool = False  # True: the bundled offline copies of the three tasks
    hub_source: str = "script_free"  # script_free: the tasks' data without loading scripts | leaderboard: needs datasets<4
    limit: int = 0  # 0 = every example
    batch_size: int = 8
    ppl_max_length: int = 0  # tokens per perplexity window; 0 = the model's context
    max_gen_toks: int = 0  # lm-eval generation budget; 0 = 256, or a quarter of a shorter context
    lm_eval: bool = True  # False skips the harness (perplexity only)


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
            warmup_steps=20,
            # the smoke model's held-out loss falls from ~7.6 (uniform over the vocabulary) to ~4.6 by step 150
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
    """Colab's single T4 (16 GB, fp16): the report's model with gradient checkpointing."""
    return RunConfig(
        profile="colab_t4",
        train=TrainConfig(micro_batch=4, grad_accum=16, gradient_checkpointing=True, max_minutes=0.0),
        sft=SFTConfig(data=REAL_SFT_DATA, micro_batch=4, grad_accum=2),  # rows up to 512 tokens: the pre-training micro-batch fits
    )


def kaggle_t4x2() -> RunConfig:
    """Kaggle's two T4s with DDP under torchrun."""
    return RunConfig(
        profile="kaggle_t4x2",
        train=TrainConfig(micro_batch=4, grad_accum=8, gradient_checkpointing=True),
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
        train=TrainConfig(backend="xla", precision="bf16", micro_batch=64, grad_accum=2, fsdp=True),
        sft=SFTConfig(data=REAL_SFT_DATA, micro_batch=16, fixed_length=True),  # 2 rows per chip; one static shape for XLA
    )


PROFILES: dict[str, Callable[[], RunConfig]] = {
    "smoke": smoke,
    "colab_t4": colab_t4,
    "kaggle_t4x2": kaggle_t4x2,
    "kaggle_tpu_v5e8": kaggle_tpu_v5e8,
}


# ---------------------------------------------------------------- overrides


class ConfigError(ValueError):
    """A profile name, override key or value that does not fit the configuration."""


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


def apply_overrides(cfg: RunConfig, overrides: typing.Iterable[str] | dict[str, Any]) -> RunConfig:
    """Return `cfg` with `section.field=value` overrides applied and type-checked."""
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
    return cfg


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
