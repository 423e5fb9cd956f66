"""Instruction examples to input ids and masked labels: the prompt is context, the response and one EOS are trained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .config import check_value, template_problem

IGNORE = -100  # the label value torch's cross-entropy (and so every HF causal LM) skips

DEFAULT_TEMPLATE = "### 指示:\n{prompt}\n\n### 応答:\n"
DEFAULT_MARKER = "### 応答:"


class TemplateError(ValueError):
    """A prompt template that cannot be used: no {prompt} slot, or no response marker after it."""


def check_template(template: str, marker: str = DEFAULT_MARKER) -> None:
    """Raise TemplateError unless `template` has exactly one {prompt} and `marker` after it."""
    problem = template_problem(template, marker)
    if problem:
        raise TemplateError(problem)


def format_prompt(prompt: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The prompt as the model sees it: the template with {prompt} filled in (str.format is not used: braces stay)."""
    return template.replace("{prompt}", prompt, 1)


def special_id(tokenizer: Any, name: str) -> int:
    """The id of the tokenizer's eos / bos / pad token; pad falls back to EOS; a clear error when absent."""
    value = getattr(tokenizer, f"{name}_token_id", None)
    if value is None and name == "pad":
        value = getattr(tokenizer, "eos_token_id", None)
    if value is None:
        raise ValueError(f"the tokenizer has no {name} token; instruction tuning needs EOS to end each response")
    return int(value)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def prefix_ids(tokenizer: Any, prefix: str = "eos") -> list[int]:
    """Tokens put before every prompt: EOS by default, because pre-training packs each document after an EOS."""
    check_value("sft.prompt_prefix", prefix, ValueError)
    return [] if prefix == "none" else [special_id(tokenizer, prefix)]


def encode_prompt(tokenizer: Any, prompt: str, template: str = DEFAULT_TEMPLATE,
                  prefix: str = "eos") -> tuple[list[int], list[int], list[int]]:
    """Prompt tokens in three parts: head (prefix + template before {prompt}), the prompt itself, tail (with marker).

    The parts are tokenized separately, in training and at inference alike, so that cutting the user's prompt
    from the left never touches the template and the two always see the same ids.
    """
    head, tail = template.split("{prompt}", 1)
    return prefix_ids(tokenizer, prefix) + _ids(tokenizer, head), _ids(tokenizer, prompt), _ids(tokenizer, tail)


@dataclass
class OverflowStats:
    """Counts of examples that did not fit `max_length`: cut from the left, or dropped."""

    examples: int = 0
    truncated: int = 0  # examples whose prompt was cut from the left
    truncated_tokens: int = 0  # prompt tokens removed in all
    dropped: int = 0  # examples left out (overflow="drop", or the response alone does not fit)
    dropped_response_too_long: int = 0  # of `dropped`: the template + response + EOS alone exceed max_length

    def as_dict(self) -> dict[str, int]:
        """Plain dict for tables and metrics."""
        return dict(self.__dict__)


def build_example(
    tokenizer: Any,
    prompt: str,
    target: str,
    max_length: int,
    *,
    template: str = DEFAULT_TEMPLATE,
    prefix: str = "eos",
    overflow: str = "truncate_left",
    pad_to_max: bool = False,
    stats: OverflowStats | None = None,
) -> dict[str, list[int]] | None:
    """One training example: labels are -100 on the prompt and padding; the response and ONE EOS are trained.

    Returns None when the example is dropped (it does not fit and overflow="drop", or even the template and
    the response alone do not fit); `stats` counts what was cut or dropped. With `pad_to_max` the lists are
    right-padded to `max_length` with the pad id; the label of padding is -100 even when pad == EOS, so only
    the EOS that ends the response is learned.
    """
    check_value("sft.overflow", overflow, ValueError)
    eos, pad = special_id(tokenizer, "eos"), special_id(tokenizer, "pad")
    head, body, tail = encode_prompt(tokenizer, prompt, template, prefix)
    response = _ids(tokenizer, target) + [eos]
    if stats is not None:
        stats.examples += 1
    excess = len(head) + len(body) + len(tail) + len(response) - max_length
    if excess > 0:
        if overflow == "drop" or excess > len(body):  # the response must survive whole, or not at all
            if stats is not None:
                stats.dropped += 1
                stats.dropped_response_too_long += int(excess > len(body))
            return None
        body = body[excess:]  # keep the end of the prompt: it sits next to the answer
        if stats is not None:
            stats.truncated += 1
            stats.truncated_tokens += excess
    context = head + body + tail
    input_ids = context + response
    labels = [IGNORE] * len(context) + response
    mask = [1] * len(input_ids)
    if pad_to_max:
        fill = max_length - len(input_ids)
        input_ids, labels, mask = input_ids + [pad] * fill, labels + [IGNORE] * fill, mask + [0] * fill
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def pad_rows(rows: Sequence[dict[str, Sequence[int]]], pad_id: int, length: int | None = None,
             multiple_of: int = 1, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad example dicts into (B, T) int64 tensors: ids with `pad_id`, labels with -100, mask with 0."""
    if not rows:
        raise ValueError("no rows to pad")
    longest = max(len(r["input_ids"]) for r in rows)
    width = length if length is not None else -(-longest // multiple_of) * multiple_of
    if longest > width:
        raise ValueError(f"a row of {longest} tokens does not fit the fixed length {width}")
    out = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
           "labels": torch.full((len(rows), width), IGNORE, dtype=torch.long),
           "attention_mask": torch.zeros((len(rows), width), dtype=torch.long)}
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        out["input_ids"][i, cols] = torch.as_tensor(row["input_ids"], dtype=torch.long)
        out["labels"][i, cols] = torch.as_tensor(row.get("labels", row["input_ids"]), dtype=torch.long)
        out["attention_mask"][i, cols] = torch.as_tensor(row.get("attention_mask", [1] * n), dtype=torch.long)
    return out


@dataclass(frozen=True)
class Collator:
    """Batches example dicts: to `max_length` when `fixed_length` (static shapes for XLA), else to the longest row."""

    pad_id: int
    max_length: int
    fixed_length: bool = False
    multiple_of: int = 8  # dynamic widths are rounded up so fewer distinct shapes reach the kernels

    def __call__(self, rows: Sequence[dict[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        """(B, T) int64 input_ids, labels, attention_mask; rows longer than `max_length` are an error."""
        if self.fixed_length:
            return pad_rows(rows, self.pad_id, self.max_length)
        longest = max(len(r["input_ids"]) for r in rows)
        width = min(self.max_length, -(-longest // self.multiple_of) * self.multiple_of)
        return pad_rows(rows, self.pad_id, width)  # a row over max_length fails in pad_rows, naming it
