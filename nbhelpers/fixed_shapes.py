"""Decoding and scoring with a few fixed tensor shapes, so XLA compiles one program per width and reuses it.

On XLA every new tensor shape is a new program to compile, and every value Python reads from the device
(`if tensor:`, `.item()`) stops the pipeline. `transformers`' `generate` grows the sequence by one token per
step and checks its stop condition on the host per token; lm-eval pads each batch of log-likelihood requests to
its longest one and picks results apart request by request. Here instead:

- widths come from a few buckets (`bucket_width`: powers of two from 64 up to the model's context), and the
  number of rows is fixed (short batches get padding rows), so a whole evaluation compiles at most one program
  per bucket;
- `decode` keeps every prompt right-padded in a (rows, width) buffer and writes each step's token at each row's
  own position: a causal model's logits at position t ignore what lies after t, so every step runs the same
  program; the host looks at the buffer only every `check_every` steps, to stop early;
- `continuation_scores` sums the log-probabilities of the scored tokens and checks they are the greedy choice,
  on the device, in the same program as the forward pass.

Nothing here imports torch_xla: `after_step` (torch_xla.sync on XLA) is passed in, and on a CPU or GPU the same
code gives the same answers as the dynamic-shape path (the tests compare them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

MIN_WIDTH = 64


def bucket_width(length: int, limit: int) -> int:
    """The smallest power of two >= `length` (at least MIN_WIDTH), capped at the model's context `limit`."""
    if length > limit:
        raise ValueError(f"{length} tokens do not fit the model's {limit}-token context")
    width = MIN_WIDTH
    while width < length:
        width *= 2
    return min(width, limit)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings for `decode` (greedy when absent): temperature > 0, top_k 0 = off, top_p 1.0 = off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature}: expected > 0 (greedy decoding needs no Sampling)")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"top_k={self.top_k}, top_p={self.top_p}: expected top_k >= 0 and 0 < top_p <= 1")


def _pick(logits: torch.Tensor, sampling: Sampling | None) -> torch.Tensor:
    """(R, V) logits -> (R,) next tokens: argmax, or a sample drawn with the Gumbel-max trick (fixed shapes)."""
    if sampling is None:
        return logits.argmax(-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k:
        kth = logits.topk(min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (R, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (R, V)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > sampling.top_p  # the tokens after the nucleus (the first always stays)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    uniform = torch.rand(logits.shape, device=logits.device).clamp_(1e-10, 1.0)
    return (logits - torch.log(-torch.log(uniform))).argmax(-1)  # argmax(logits + Gumbel noise) ~ softmax(logits)


def decode(model: torch.nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int,
           rows: int | None = None, eos_id: int | None = None, stop: Callable[[list[int]], bool] | None = None,
           sampling: Sampling | None = None, after_step: Callable[[], None] | None = None,
           check_every: int = 16) -> list[list[int]]:
    """New token ids for each prompt (greedy, or sampled with `sampling`), from one program per width bucket.

    Prompts longer than the context allows lose their start. `rows` fixes the batch dimension (padding rows are
    added; default: the number of prompts). Every `check_every` steps the host reads the buffer once and stops
    when each row has produced `eos_id` or `stop(new_ids)` says so; otherwise `max_new_tokens` are generated.
    """
    if not prompts:
        return []
    device = next(model.parameters()).device
    limit = int(getattr(model.config, "max_position_embeddings", 2048))
    max_new_tokens = max(0, min(max_new_tokens, limit - 1))
    longest = max(len(p) for p in prompts)
    width = bucket_width(min(longest, limit - max_new_tokens) + max_new_tokens, limit)
    keep = width - max_new_tokens
    kept = [list(p[-keep:]) or [pad_id] for p in prompts]
    rows = max(rows or len(kept), len(kept))
    kept += [[pad_id]] * (rows - len(kept))  # padding rows: one token each, their output is dropped
    lengths = [len(p) for p in kept]
    buf = torch.full((rows, width), pad_id, dtype=torch.long)  # (R, W), each prompt right-padded
    for r, p in enumerate(kept):
        buf[r, : len(p)] = torch.tensor(p, dtype=torch.long)
    buf = buf.to(device)
    pos = torch.tensor(lengths, dtype=torch.long).to(device)  # (R,) the next position to write
    real = len(prompts)
    done_steps = max_new_tokens
    mask = torch.ones((rows, width), dtype=torch.long, device=device)  # explicit: see `continuation_scores`
    with torch.no_grad():
        for step in range(1, max_new_tokens + 1):
            logits = model(input_ids=buf, attention_mask=mask, use_cache=False).logits  # (R, W, V)
            last = logits.gather(1, (pos - 1).view(rows, 1, 1).expand(rows, 1, logits.shape[-1])).squeeze(1)
            buf = buf.scatter(1, pos.view(rows, 1), _pick(last, sampling).view(rows, 1))
            pos = pos + 1
            if after_step is not None:
                after_step()
            if (eos_id is not None or stop is not None) and step % check_every == 0 and step < max_new_tokens:
                host = buf.cpu()  # one transfer every check_every steps: no new program
                if all(_finished(host[r, lengths[r]: lengths[r] + step].tolist(), eos_id, stop) for r in range(real)):
                    done_steps = step
                    break
        out = buf.cpu()
    return [out[r, lengths[r]: lengths[r] + done_steps].tolist() for r in range(real)]


def _finished(new: list[int], eos_id: int | None, stop: Callable[[list[int]], bool] | None) -> bool:
    return (eos_id is not None and eos_id in new) or (stop is not None and stop(new))


def continuation_scores(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                        scored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R,) summed log-probability of the scored target tokens and (R,) whether each was the greedy choice.

    inputs (R, W) right-padded token ids; targets (R, W) the token that follows each input position; scored
    (R, W) True where a target token belongs to the continuation. Stays on the device (no host read).
    The all-ones attention mask is explicit because transformers' eager attention reads an absent one's
    shape on the host (one device-to-host read per forward on XLA); padding after a row's end is never seen by
    its real positions under the causal mask, so the mask changes no result.
    """
    mask = torch.ones_like(inputs)  # (R, W)
    logits = model(input_ids=inputs, attention_mask=mask, use_cache=False).logits.float()  # (R, W, V)
    logprobs = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (R, W)
    total = (logprobs * scored).sum(-1)  # (R,)
    greedy = ((logits.argmax(-1) == targets) | ~scored).all(-1)  # (R,)
    return total, greedy
