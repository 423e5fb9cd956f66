"""A short text summary of a run's metrics.json: each stage's headline figures, missing stages named."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..layout import RUN_METRICS

STAGE_TITLES = {
    "tokenizer": "01 tokenizer",
    "corpus": "02 corpus",
    "pretrain": "03 pre-training",
    "sft": "04 instruction tuning",
    "chat": "05 chat",
    "eval": "06 evaluation",
}
# Figures shown first when a stage recorded them (the rest follow in recorded order, up to max_figures).
HEADLINES: dict[str, tuple[str, ...]] = {
    "tokenizer": ("vocab_size", "chars_per_token", "unk_rate", "byte_fallback_rate"),
    "corpus": ("train_tokens", "train_blocks", "val_blocks", "block_len", "parts_built", "budget_tokens"),
    "pretrain": ("preset", "parameters", "steps", "tokens_seen", "final_train_loss", "final_eval_loss", "eval_ppl",
                 "eval_bpb", "tokens_per_s", "device"),
    "sft": ("steps", "train_examples", "instruction_loss_before", "instruction_loss_after", "corpus_loss_before",
            "corpus_loss_after"),
    "chat": ("prompts", "ended_with_eos", "mean_new_tokens"),
    "eval": ("perplexity", "bpb", "lm_eval"),
}
SKIP = {"config_fingerprint"}


def _flatten(figures: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_format(v) for v in value[:4])
        return f"[{shown}{', ...' if len(value) > 4 else ''}] ({len(value)})"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def load_metrics(source: Mapping[str, Any] | str | Path | Any) -> dict[str, Any]:
    """metrics.json's content from a dict, a metrics.json path, a run directory or a RunDir."""
    if isinstance(source, Mapping):
        return dict(source)
    if hasattr(source, "metrics") and callable(source.metrics):
        return source.metrics()
    path = Path(source)
    if path.is_dir():
        path = path / RUN_METRICS
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected one JSON object of stages, got {type(data).__name__}")
    return data


def run_summary(source: Mapping[str, Any] | str | Path | Any, max_figures: int = 9) -> str:
    """Each stage's headline figures, one stage per paragraph; stages not run yet are named as such."""
    metrics = load_metrics(source)
    lines = []
    stages = list(STAGE_TITLES) + [s for s in metrics if s not in STAGE_TITLES]
    for stage in stages:
        title = STAGE_TITLES.get(stage, stage)
        figures = metrics.get(stage)
        if figures is None:
            lines.append(f"{title}: not run yet")
            continue
        if not isinstance(figures, Mapping):
            lines.append(f"{title}: {_format(figures)}")
            continue
        flat = {k: v for k, v in _flatten(figures).items() if k.split("/")[0] not in SKIP}
        first = [k for h in HEADLINES.get(stage, ()) for k in flat if k == h or k.startswith(h + "/")]
        order = first + [k for k in flat if k not in first]
        shown = order[:max_figures * 2 if stage == "eval" else max_figures]  # two models' scores in 06
        lines.append(f"{title}:" + ("" if shown else " done (no figures recorded)"))
        lines += [f"  {k}: {_format(flat[k])}" for k in shown]
        if len(order) > len(shown):
            lines.append(f"  ... and {len(order) - len(shown)} more in metrics.json")
    return "\n".join(lines)
