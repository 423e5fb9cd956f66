"""The sft section: instruction data, prompt template, overflow, replay of pre-training blocks and the tuning schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import registry
from .model import PRESETS, model_value
from .rules import cross_rule, setting
from .train import SCHEDULES

# The real profiles tune on a Japanese hub instruction set plus the bundled and arithmetic pairs.
REAL_SFT_DATA = ("dolly_ja", "bundled_instructions", "arithmetic_instructions")


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
    # rows per forward pass (per process)
    micro_batch: int = setting(8, ge=1)
    # micro-batches summed into one optimizer step
    grad_accum: int = setting(1, ge=1)
    # peak learning rate of the tuning
    lr: float = setting(2e-5, gt=0)
    # AdamW's decoupled weight decay
    weight_decay: float = setting(0.0, ge=0)
    # passes over the training pairs (a fraction stops midway)
    epochs: float = setting(3.0, gt=0)
    # optimizer steps of linear warmup
    warmup_steps: int = setting(20, ge=0)
    eval_every: int = setting(100, ge=0)  # 0 = only at the end
    eval_batches: int = setting(16, ge=0)  # micro-batches per eval, for held-out instructions and the held-out corpus
    save_every: int = setting(200, ge=0)  # 0 = only at the end
    schedule: str = setting("cosine", choices=SCHEDULES)  # the tuning's lr schedule: cosine | wsd (as train.schedule)
    eval_prompts: int = setting(64, ge=0)  # held-out prompts answered before and after tuning (EOS share, arithmetic)
    # tokens generated per held-out prompt
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


