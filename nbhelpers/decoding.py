"""The one generation path: prompt token ids in, new token ids out, on any device.

Every caller generates through `new_tokens`: chat and the notebooks (`generate.generate_batch`), instruction
tuning's response checks, lm-eval's generation on XLA (`evaluation.fixed_lm`) and the training loop's samples on
XLA (`xla.XlaHooks.generate`). One choice picks how: `fixed=True` runs `fixed_shapes.decode` (one compiled
program per width bucket, what XLA needs), `fixed=False` runs transformers' `model.generate` on left-padded
batches (dynamic shapes: streaming and repetition_penalty, the CPU and CUDA default). The device-specific part
is passed in, not imported: `after_step` (torch_xla.sync on XLA) and `rows_multiple` (the chips a batch is
split over), so this module needs no torch_xla and sits below the XLA adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .fixed_shapes import Sampling, decode


def new_tokens(model: torch.nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int,
               eos_id: int | None = None, fixed: bool = False, sampling: Sampling | None = None,
               batch_size: int = 16, rows_multiple: int = 1, after_step: Callable[[], None] | None = None,
               stop: Callable[[list[int]], bool] | None = None, pad_to_multiple_of: int = 1,
               repetition_penalty: float = 1.0, streamer: Any = None) -> list[list[int]]:
    """New ids per prompt (greedy, or sampled with `sampling`), `batch_size` prompts at a time.

    fixed: every batch is `batch_size` rows (rounded up to `rows_multiple`) in one fixed-shape program, with
    `after_step` after each token and a host check of `eos_id` / `stop` every 16 tokens. Otherwise
    `model.generate` (rows run past EOS with padding; `stop` is not available there). The caller sets eval mode.
    """
    if not fixed and stop is not None:
        raise ValueError("stop is available with fixed shapes only")
    if fixed and (repetition_penalty != 1.0 or streamer is not None):
        raise ValueError("repetition_penalty and streamer need transformers' generate (fixed=False)")
    rows: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [list(p) for p in prompts[start:start + batch_size]]
        if fixed:
            rows += decode(model, chunk, max_new_tokens, pad_id=pad_id, rows=-(-batch_size // rows_multiple)
                           * rows_multiple, eos_id=eos_id, stop=stop, sampling=sampling, after_step=after_step)
        else:
            rows += _generate(model, chunk, max_new_tokens, pad_id, eos_id, sampling, pad_to_multiple_of,
                              repetition_penalty, streamer)
    return rows


def _generate(model: torch.nn.Module, chunk: list[list[int]], max_new_tokens: int, pad_id: int, eos_id: int | None,
              sampling: Sampling | None, pad_to_multiple_of: int, repetition_penalty: float,
              streamer: Any) -> list[list[int]]:
    """One left-padded batch through transformers' `model.generate`; the prompt's columns cut off."""
    width = -(-max(len(c) for c in chunk) // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, T) left-padded
    mask = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
    for i, c in enumerate(chunk):
        ids[i, width - len(c):] = torch.tensor(c, dtype=torch.long)
        mask[i, width - len(c):] = 1
    options: dict[str, Any] = {"do_sample": sampling is not None}
    if sampling is not None:
        options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    device = next(model.parameters()).device
    with torch.no_grad():
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             eos_token_id=eos_id, pad_token_id=pad_id, repetition_penalty=repetition_penalty,
                             streamer=streamer, **options)
    return gen[:, width:].cpu().tolist()  # (B, <= max_new_tokens)
