"""Instruction examples to input ids and masked labels: the prompt is context, the response and one EOS are trained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .chat_format import check_messages, render, turns
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
    """Ids of `text`, with a special token's text ("</s>" from the chat template) read as that token, whatever the
    tokenizer's split_special_tokens (sft/final's is False, so apply_chat_template reads it the same way)."""
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=False)["input_ids"]) if text else []


def prompt_ids(tokenizer: Any, prompt: str, template: str = DEFAULT_TEMPLATE, prefix: str = "eos",
               max_tokens: int | None = None) -> tuple[list[int], int]:
    """The prompt's ids and how many tokens were cut: the chat template's one user turn with the generation prompt,
    tokenized as `apply_chat_template` does, so training, our generation and any Hugging Face tool see the same ids.

    With `max_tokens`, an over-long prompt loses characters from its start (never the template) until it fits;
    the result is longer than `max_tokens` only when the template alone is.
    """
    def ids(text: str) -> list[int]:
        return _ids(tokenizer, render(tokenizer, [{"role": "user", "content": text}], template, prefix, True))

    full = ids(prompt)
    if max_tokens is None or len(full) <= max_tokens:
        return full, 0
    lo, hi = 1, len(prompt)  # the fewest leading characters to drop; dropping all of them leaves the template
    while lo < hi:
        mid = (lo + hi) // 2
        if len(ids(prompt[mid:])) <= max_tokens:
            hi = mid
        else:
            lo = mid + 1
    kept = ids(prompt[lo:])
    return kept, len(full) - len(kept)


def conversation_ids(tokenizer: Any, messages: Sequence[dict[str, str]], template: str = DEFAULT_TEMPLATE,
                     prefix: str = "eos", add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
    """Ids and labels of a conversation: each context (rendered by the chat template) masked, each answer + EOS trained.

    Contexts and answers are tokenized apart, as one-turn examples are, so the first turn equals `build_example`'s.
    """
    eos = special_id(tokenizer, "eos")
    ids: list[int] = []
    labels: list[int] = []
    for context, answer in turns(tokenizer, messages, template, prefix, add_generation_prompt):
        c = _ids(tokenizer, context)
        ids += c
        labels += [IGNORE] * len(c)
        if answer is not None:
            a = _ids(tokenizer, answer) + [eos]
            ids += a
            labels += a
    return ids, labels


def fit_conversation(tokenizer: Any, messages: Sequence[dict[str, str]], max_tokens: int,
                     template: str = DEFAULT_TEMPLATE, prefix: str = "eos", add_generation_prompt: bool = False,
                     ) -> tuple[list[int], list[int], int]:
    """`conversation_ids` with the oldest user/assistant pairs left out until it fits `max_tokens` (a system message
    stays), and the number of pairs left out; still too long only when the last turn alone is."""
    messages = check_messages(list(messages))
    system = messages[:1] if messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    dropped = 0
    while True:
        ids, labels = conversation_ids(tokenizer, system + rest, template, prefix, add_generation_prompt)
        if len(ids) <= max_tokens or len(rest) <= 2:
            return ids, labels, dropped
        rest, dropped = rest[2:], dropped + 1


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
    eos = special_id(tokenizer, "eos")
    response = _ids(tokenizer, target) + [eos]
    if stats is not None:
        stats.examples += 1
    context, _ = prompt_ids(tokenizer, prompt, template, prefix)
    if len(context) + len(response) > max_length:
        cut = 0
        if overflow == "truncate_left":  # keep the end of the prompt: it sits next to the answer
            context, cut = prompt_ids(tokenizer, prompt, template, prefix, max_length - len(response))
        if overflow == "drop" or len(context) + len(response) > max_length:  # the response survives whole, or not at all
            if stats is not None:
                stats.dropped += 1
                stats.dropped_response_too_long += int(overflow != "drop")
            return None
        if stats is not None:
            stats.truncated += 1
            stats.truncated_tokens += cut
    return _finish(tokenizer, context + response, [IGNORE] * len(context) + response, max_length, pad_to_max)


def build_conversation(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    max_length: int,
    *,
    template: str = DEFAULT_TEMPLATE,
    prefix: str = "eos",
    overflow: str = "truncate_left",
    pad_to_max: bool = False,
    stats: OverflowStats | None = None,
) -> dict[str, list[int]] | None:
    """One training example from several turns: every assistant answer and its EOS trained, the rest -100.

    Too long: with overflow="truncate_left" the oldest user/assistant pairs are left out until it fits (counted as
    truncated); with "drop", or when the last pair alone does not fit, it is dropped (None).
    """
    check_value("sft.overflow", overflow, ValueError)
    if stats is not None:
        stats.examples += 1
    ids, labels = conversation_ids(tokenizer, check_messages(list(messages)), template, prefix)
    full = len(ids)
    if full > max_length:
        if overflow == "truncate_left":
            ids, labels, _ = fit_conversation(tokenizer, messages, max_length, template, prefix)
        if overflow == "drop" or len(ids) > max_length:
            if stats is not None:
                stats.dropped += 1
                stats.dropped_response_too_long += int(overflow != "drop")
            return None
        if stats is not None:
            stats.truncated += 1
            stats.truncated_tokens += full - len(ids)
    return _finish(tokenizer, ids, labels, max_length, pad_to_max)


def _finish(tokenizer: Any, input_ids: list[int], labels: list[int], max_length: int,
            pad_to_max: bool) -> dict[str, list[int]]:
    """The example dict, right-padded to max_length with the pad id and label -100 when `pad_to_max`."""
    mask = [1] * len(input_ids)
    if pad_to_max:
        pad = special_id(tokenizer, "pad")
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
