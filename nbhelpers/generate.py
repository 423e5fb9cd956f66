"""Chat generation: apply the template, generate (left-padded batches), stop at EOS, return only the response."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .collator import DEFAULT_TEMPLATE, fit_conversation, prompt_ids, special_id
from .decoding import new_tokens
from .fixed_shapes import Sampling


@dataclass(frozen=True)
class Response:
    """One generated answer: its text, whether EOS ended it before the token budget, and its length."""

    text: str
    ended: bool  # True: the model emitted EOS before max_new_tokens
    new_tokens: int  # tokens generated, the EOS included


Prompt = str | Sequence[dict[str, str]]  # one user message, or a conversation of {"role", "content"} messages


def prompt_tokens(tokenizer: Any, prompt: Prompt, template: str = DEFAULT_TEMPLATE, prefix: str = "eos",
                  max_tokens: int | None = None) -> list[int]:
    """The ids the model is given: exactly those training used (the chat template's rendering).

    An over-long prompt loses its start, not the template; a conversation loses its oldest turns first (see
    `trimmed_turns` to tell the user), then, when its last message alone is too long, its first tokens.
    """
    if isinstance(prompt, str):
        return prompt_ids(tokenizer, prompt, template, prefix, max_tokens)[0]
    ids, _, _ = fit_conversation(tokenizer, prompt, max_tokens or 1 << 62, template, prefix, add_generation_prompt=True)
    return ids[-max_tokens:] if max_tokens is not None and len(ids) > max_tokens else ids


def trimmed_turns(tokenizer: Any, messages: Sequence[dict[str, str]], max_tokens: int,
                  template: str = DEFAULT_TEMPLATE, prefix: str = "eos") -> int:
    """How many of the oldest user/assistant pairs `prompt_tokens` leaves out to fit `max_tokens`."""
    return fit_conversation(tokenizer, messages, max_tokens, template, prefix, add_generation_prompt=True)[2]


def prompt_budget(model: Any, max_new_tokens: int) -> int | None:
    """The most prompt tokens that leave room for `max_new_tokens` in the model's context (None: no limit known)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit and limit - max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for the prompt in a {limit}-token context")
    return limit - max_new_tokens if limit else None


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    template: str = DEFAULT_TEMPLATE,
    prefix: str = "eos",
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    seed: int | None = None,
    batch_size: int = 16,
    pad_to_multiple_of: int = 1,
    fixed_shapes: bool | None = None,
    streamer: Any = None,
) -> list[Response]:
    """Answers to `prompts` (greedy unless do_sample) as Response objects, in order.

    Every answer comes from `decoding.new_tokens`, the one generation path. fixed_shapes (default: on for XLA)
    decodes with `fixed_shapes.decode`: a few prompt-width buckets and a fixed batch, one compiled program per
    bucket and a host check every 16 tokens, instead of `model.generate` (a new shape and a host read per token). Its sampling draws from the same distribution with another random stream.
    A prompt is a user message or a conversation (a list of {"role", "content"} messages, answered as its next turn).
    `streamer` (transformers' TextStreamer or TextIteratorStreamer, one prompt) receives the tokens as they come.
    """
    eos, pad = special_id(tokenizer, "eos"), special_id(tokenizer, "pad")
    device = _device_of(model)
    fixed = device.type == "xla" if fixed_shapes is None else fixed_shapes
    max_prompt = prompt_budget(model, max_new_tokens)
    if fixed and repetition_penalty != 1.0:
        raise ValueError("repetition_penalty is not available with fixed shapes (the XLA default): pass "
                         "fixed_shapes=False to use transformers' generate, which compiles a program per token there")
    if streamer is not None and (fixed or len(prompts) != 1):
        raise ValueError("a streamer takes one prompt on transformers' generate (fixed_shapes=False)")
    if seed is not None:
        torch.manual_seed(seed)
        if device.type == "xla":  # the XLA device draws from its own generator
            from . import xla

            xla.set_seed(seed)
    after_step = None
    if fixed and device.type == "xla":
        from . import xla

        xla.use_xla_attention(model)
        after_step = xla.sync
    chunks = [prompt_tokens(tokenizer, p, template, prefix, max_prompt) for p in prompts]
    was_training = model.training
    model.eval()
    try:
        rows = new_tokens(model, chunks, max_new_tokens, pad_id=pad, eos_id=eos, fixed=fixed,
                          sampling=Sampling(temperature, top_k, top_p) if do_sample else None, batch_size=batch_size,
                          after_step=after_step, pad_to_multiple_of=pad_to_multiple_of,
                          repetition_penalty=repetition_penalty, streamer=streamer)
    finally:
        model.train(was_training)
    return [_response(tokenizer, row, eos) for row in rows]


def _response(tokenizer: Any, row: list[int], eos: int) -> Response:
    """The text up to the first EOS (after EOS, generate pads; pad may equal EOS)."""
    end = row.index(eos) if eos in row else None
    body = row[:end] if end is not None else row
    text = tokenizer.decode(body, skip_special_tokens=True).strip()
    return Response(text, end is not None, (end + 1) if end is not None else len(row))


def generate(model: Any, tokenizer: Any, prompt: str | Sequence[Prompt], **kwargs: Any) -> str | list[str]:
    """The response text for one prompt (a str, or a conversation: a list of message dicts) or for each of several
    (a list of those); kwargs as generate_batch."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], dict)):
        return generate_batch(model, tokenizer, [prompt], **kwargs)[0].text
    return [r.text for r in generate_batch(model, tokenizer, list(prompt), **kwargs)]


def compare(models: dict[str, Any], tokenizer: Any, prompts: Sequence[str], **kwargs: Any) -> list[dict[str, str]]:
    """One row per prompt with each model's response side by side (for a table)."""
    answers = {name: generate(m, tokenizer, list(prompts), **kwargs) for name, m in models.items()}
    return [{"prompt": p, **{name: answers[name][i] for name in models}} for i, p in enumerate(prompts)]


DEMO_PROMPTS = (
    "日本の首都はどこですか？",
    "健康のために毎日できることを三つ挙げてください。",
    "「ありがとう」を英語に訳してください。",
    "春の季節について短く説明してください。",
)


def demo_prompts(seed: int = 0, arithmetic_problems: int = 2) -> list[str]:
    """The fixed chat prompts plus a few arithmetic word problems (seeded apart from the tuning data's seed)."""
    from . import arithmetic

    return [*DEMO_PROMPTS, *(p.question for p in arithmetic.problems(seed + 10_007, arithmetic_problems))]


def chat_figures(model: Any, tokenizer: Any, prompts: Sequence[str], table: Sequence[dict[str, str]],
                 **kwargs: Any) -> dict[str, Any]:
    """Headline chat figures: how many answers ended with EOS, their mean length, and the side-by-side answers."""
    responses = generate_batch(model, tokenizer, list(prompts), **kwargs)
    return {
        "prompts": len(responses),
        "ended_with_eos": sum(r.ended for r in responses) / max(1, len(responses)),
        "mean_new_tokens": sum(r.new_tokens for r in responses) / max(1, len(responses)),
        "answers": [dict(row) for row in table],
    }
