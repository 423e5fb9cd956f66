"""What tuning changed: greedy answers to held-out prompts (EOS share, arithmetic accuracy) and the headline figures."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..collator import OverflowStats
from ..config import SFTConfig
from ..train.hooks import default_hooks
from ..train.metrics import read_metrics
from .instructions import Example, InstructionData, interleave
from .tuning import SFTBatches

_ANSWER = re.compile(r"答えは\s*(-?[\d,]+)")
_NUMBER = re.compile(r"-?\d[\d,]*")


def extract_answer(text: str) -> int | None:
    """The number after 答えは, else the last number in the text; None when there is none."""
    m = _ANSWER.search(text)
    found = m.group(1) if m else (_NUMBER.findall(text) or [None])[-1]
    if found is None:
        return None
    try:
        return int(found.replace(",", ""))
    except ValueError:
        return None


def response_figures(model: Any, tokenizer: Any, examples: Sequence[Example], cfg: SFTConfig,
                     batch_size: int = 16) -> dict[str, Any]:
    """Greedy answers to held-out prompts: share ending with EOS before max_new_tokens, arithmetic accuracy."""
    from ..generate import generate_batch

    pick = interleave(examples, cfg.eval_prompts)
    arith = [ex for ex in examples if ex.answer is not None][: cfg.eval_prompts]
    kw = {"template": cfg.template, "prefix": cfg.prompt_prefix, "max_new_tokens": cfg.max_new_tokens,
          "batch_size": batch_size}
    outs = generate_batch(model, tokenizer, [ex.prompt for ex in pick], **kw) if pick else []
    figures: dict[str, Any] = {
        "eos_share": sum(o.ended for o in outs) / len(outs) if outs else float("nan"),
        "eos_prompts": len(outs),
        "mean_response_tokens": float(np.mean([o.new_tokens for o in outs])) if outs else float("nan"),
    }
    if arith:
        answers = generate_batch(model, tokenizer, [ex.prompt for ex in arith], **kw)
        correct = [extract_answer(a.text) == ex.answer for a, ex in zip(answers, arith)]
        figures.update(arithmetic_accuracy=sum(correct) / len(correct), arithmetic_prompts=len(correct))
    samples = [{"prompt": ex.prompt, "target": ex.target, "response": o.text, "ended_with_eos": o.ended}
               for ex, o in zip(pick, outs)]
    return {"figures": figures, "samples": samples}


def inference_device(choice: Any, run_root: Any = None) -> torch.device:
    """Where to generate: the training device (through the loop's hooks, so torch_xla stays in its adapter); on XLA
    with `run_root`, compiled programs persist in the run's xla_cache/."""
    return default_hooks(choice, run_root).device(choice)


def record_figures(data: InstructionData, overflow: dict[str, OverflowStats], batches: SFTBatches, result: Any,
                   before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of tuning for metrics.json: data, overflow, eval losses at the start and end, before/after."""
    evals = [r for r in read_metrics(result.metrics_path) if r.get("kind") == "eval"]
    first = {r["split"]: r["loss"] for r in sorted(evals, key=lambda r: -r["step"])}  # the earliest wins
    last = {r["split"]: r["loss"] for r in sorted(evals, key=lambda r: r["step"])}  # the latest wins
    figures: dict[str, Any] = {
        "train_examples": len(data.train), "heldout_examples": len(data.heldout),
        "skipped_invalid": len(data.errors), "duplicates_dropped": sum(data.duplicates.values()),
        "truncated": sum(s.truncated for s in overflow.values()), "dropped": sum(s.dropped for s in overflow.values()),
        "steps": result.step, "replay_ratio": float(batches.ratio),
        "instruction_loss_before": first.get("instructions"), "instruction_loss_after": last.get("instructions"),
        "corpus_loss_before": first.get("corpus"), "corpus_loss_after": last.get("corpus"),
    }
    for key in ("eos_share", "arithmetic_accuracy", "mean_response_tokens"):
        if key in before or key in after:
            figures[f"{key}_before"], figures[f"{key}_after"] = before.get(key), after.get(key)
    figures["eos_prompts"] = after.get("eos_prompts")
    figures["arithmetic_prompts"] = after.get("arithmetic_prompts")
    return figures
