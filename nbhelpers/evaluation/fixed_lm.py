"""lm-eval's Hugging Face model with fixed shapes: what `run_lm_eval` uses on XLA (a TPU).

lm-eval's `HFLM` pads each batch of log-likelihood requests to its own longest request, scores them one by one
with host reads, and generates through `model.generate`: on XLA that is a new program for almost every batch and
every generated token, and a device-to-host stop per request and per token (4442 JSQuAD generations would take
hours). `FixedShapeLM` keeps lm-eval's requests, prompts, few-shot handling, stop sequences, caching and metrics,
and replaces the two device-facing steps with `nbhelpers.fixed_shapes`: batches of `batch_size` rows padded to
a few width buckets, scores summed on the device and read once at the end, and decoding with a fixed buffer that
the host checks every 16 tokens. On a CPU it gives lm-eval's own answers (tests/test_evaluation.py compares them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from ..decoding import new_tokens
from ..fixed_shapes import Sampling, bucket_width, continuation_scores

Request = tuple[Any, list[int], list[int]]  # ((context, continuation) strings or None, context ids, continuation ids)


class FixedShapeLM(HFLM):
    """HFLM whose log-likelihood scoring and generation run in fixed shapes; `after_batch` cuts the XLA graph."""

    def __init__(self, *args: Any, after_batch: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_size, int):
            raise ValueError(f"batch_size={self.batch_size!r}: fixed shapes need a number of rows, not 'auto'")
        self.after_batch = after_batch

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        """(summed log-probability of the continuation, whether it is the greedy one) per request, in order."""
        rows = max(int(self.batch_size), override_bs or 0)
        items = []  # (input ids, target ids, number of scored continuation tokens at the end)
        for _, context, continuation in requests:
            whole = (context + continuation)[-(self.max_length + 1):]  # the model sees at most its context
            items.append((whole[:-1], whole[1:], min(len(continuation), len(whole) - 1)))
        order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))  # similar widths share a batch
        device = self.device
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # per batch: (R,) sums and (R,) greedy flags
        for start in tqdm(range(0, len(order), rows), desc="log-likelihood (fixed shapes)",
                          disable=disable_tqdm or self.rank != 0, unit="batch"):
            chunk = [items[i] for i in order[start:start + rows]]
            width = bucket_width(max(len(inp) for inp, _, _ in chunk), self.max_length)
            inputs = torch.full((rows, width), self.tokenizer.pad_token_id or 0, dtype=torch.long)  # (R, W)
            targets = torch.zeros((rows, width), dtype=torch.long)  # (R, W)
            scored = torch.zeros((rows, width), dtype=torch.bool)  # (R, W)
            for r, (inp, tgt, n) in enumerate(chunk):
                inputs[r, : len(inp)] = torch.tensor(inp)
                targets[r, : len(tgt)] = torch.tensor(tgt)
                scored[r, len(inp) - n: len(inp)] = True
            with torch.no_grad(), self._autocast():
                pending.append(continuation_scores(self.model, inputs.to(device), targets.to(device),
                                                   scored.to(device)))
            if self.after_batch is not None:
                self.after_batch()
        results: list[tuple[float, bool]] = [(0.0, False)] * len(items)
        for b, (total, greedy) in enumerate(pending):  # the host reads here, once per batch, after all ran
            for r, (value, flag) in enumerate(zip(total.cpu().tolist(), greedy.cpu().tolist())):
                if b * rows + r < len(order):
                    results[order[b * rows + r]] = (float(value), bool(flag))
        for (key, _, _), answer in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return results

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str],
                        **generation_kwargs: Any) -> torch.Tensor:
        """(B, T + new) ids like `model.generate`: the (left-padded) context, then each row's new tokens."""
        mask = generation_kwargs.pop("attention_mask", None)
        ids = context.cpu()  # (B, T): a transfer of the inputs, no program
        keep = mask.cpu().bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        prompts = [row[m].tolist() for row, m in zip(ids, keep)]
        sampling = None
        if generation_kwargs.get("do_sample") and generation_kwargs.get("temperature", 1.0) > 0:
            sampling = Sampling(float(generation_kwargs.get("temperature", 1.0)),
                                int(generation_kwargs.get("top_k") or 0), float(generation_kwargs.get("top_p") or 1.0))

        def stopped(new: list[int]) -> bool:
            text = self.tok_decode(new)
            return any(s in text for s in stop)

        with self._autocast():
            new = new_tokens(self.model, prompts, max_length - ids.shape[1], pad_id=self.tokenizer.pad_token_id or 0,
                             eos_id=self.eot_token_id, fixed=True, sampling=sampling,
                             batch_size=max(int(self.batch_size), len(prompts)), after_step=self.after_batch, stop=stopped)
        eos = self.eot_token_id
        new = [row[: row.index(eos) + 1] if eos in row else row for row in new]  # generate pads after EOS
        out = torch.full((ids.shape[0], ids.shape[1] + max(map(len, new), default=0)),
                         self.tokenizer.pad_token_id or 0, dtype=torch.long)
        out[:, : ids.shape[1]] = ids
        for r, row in enumerate(new):
            out[r, ids.shape[1]: ids.shape[1] + len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def _autocast(self) -> Any:
        """lm-eval's mixed-precision setting, as HFLM applies it around its own forward passes."""
        return torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                              enabled=self.mixed_precision_dtype is not None)
