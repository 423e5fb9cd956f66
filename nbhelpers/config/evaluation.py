"""The eval section: perplexity windows and lm-evaluation-harness tasks, and how they fit the model's context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import PRESETS, model_value
from .rules import cross_rule, setting

HUB_SOURCES = ("script_free", "leaderboard")


@dataclass(frozen=True)
class EvalConfig:
    """Perplexity and lm-evaluation-harness."""

    # held-out corpus texts whose perplexity 06 reports
    ppl_texts: int = setting(8, ge=1)
    ppl_stride: int = setting(256, ge=0)  # 0 = half the window
    # lm-eval task names
    tasks: tuple[str, ...] = (
        "ja_leaderboard_jaqket_v2",
        "ja_leaderboard_jcommonsenseqa",
        "ja_leaderboard_jsquad",
    )
    # task -> examples shown before each question
    num_fewshot: dict[str, int] = setting(
        factory=lambda: {
            "ja_leaderboard_jaqket_v2": 1,
            "ja_leaderboard_jcommonsenseqa": 3,
            "ja_leaderboard_jsquad": 2,
        },
        ge=0,
    )
    local_tasks: bool = False  # True: the bundled offline copies of the three tasks
    # script_free: the tasks' data without loading scripts | leaderboard: needs datasets<4
    hub_source: str = setting("script_free", choices=HUB_SOURCES)
    limit: int = setting(0, ge=0)  # 0 = every example
    # lm-eval rows per forward pass
    batch_size: int = setting(8, ge=1)
    ppl_max_length: int = setting(0, ge=0)  # tokens per perplexity window; 0 = the model's context
    max_gen_toks: int = setting(0, ge=0)  # lm-eval generation budget; 0 = 256, or a quarter of a shorter context
    lm_eval: bool = True  # False skips the harness (perplexity only)


@cross_rule("eval.ppl_max_length", "eval.ppl_stride", "model.max_position_embeddings")
def _windows_fit_the_model(cfg: Any) -> str | None:
    if cfg.model.preset not in PRESETS:
        return None
    context = model_value(cfg.model, "max_position_embeddings")
    window = cfg.eval.ppl_max_length or context
    if cfg.eval.ppl_max_length == 1 or window > context:
        return (f"eval.ppl_max_length={cfg.eval.ppl_max_length}: expected 0 (the model's context) or "
                f"2..{context} (the model's max_position_embeddings)")
    if cfg.eval.ppl_stride >= window:
        return f"eval.ppl_stride={cfg.eval.ppl_stride}: expected 0 or 1..{window - 1} (below the window of {window} tokens)"
    return None


@cross_rule("eval.tasks", "eval.lm_eval")
def _tasks_when_lm_eval(cfg: Any) -> str | None:
    # an empty list would fail in 06 only after every perplexity was computed
    if cfg.eval.lm_eval and not cfg.eval.tasks:
        return ("eval.tasks=[] with eval.lm_eval=true: name at least one lm-eval task, or set eval.lm_eval=false "
                "for perplexity only")
    return None


@cross_rule("eval.max_gen_toks", "model.max_position_embeddings")
def _generation_fits_the_model(cfg: Any) -> str | None:
    if cfg.model.preset not in PRESETS:
        return None
    context = model_value(cfg.model, "max_position_embeddings")
    if cfg.eval.max_gen_toks >= context:
        return f"eval.max_gen_toks={cfg.eval.max_gen_toks}: expected 0 or 1..{context - 1} (the model's context is {context})"
    return None

