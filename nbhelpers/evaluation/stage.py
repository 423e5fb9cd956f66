"""The 06 notebook's steps: which models a run has, where to score them, perplexity and lm-eval for each."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import EvalConfig, RunConfig
from ..layout import FINAL, TRAINING_STAGES
from .harness import run_lm_eval
from .perplexity import PerplexityResult, load_model, model_dir_error, perplexity

MODEL_STAGES = TRAINING_STAGES  # the pre-trained model and the instruction-tuned one, in this order


def available_models(run: Any) -> dict[str, Path]:
    """The run's final models: pretrain/final (required) and sft/final when 04 has written it."""
    models = {}
    for stage in MODEL_STAGES:
        final = Path(getattr(run, stage)) / FINAL
        if not model_dir_error(final):
            models[stage] = final
    if "pretrain" not in models:
        raise FileNotFoundError(f"{model_dir_error(Path(run.pretrain) / 'final')}; run notebooks/03_pretrain first")
    return models


def _tokenizer_path(model_dir: Path, run: Any) -> Path | None:
    """The model's own tokenizer when saved with it (the loop does), else the run's tokenizer/."""
    has_own = (model_dir / "tokenizer.json").is_file() or (model_dir / "tokenizer_config.json").is_file()
    return None if has_own else Path(run.tokenizer)


def eval_device(cfg: RunConfig, run_root: Any = None) -> tuple[Any, Any]:
    """(torch device, after-batch hook) for evaluation: the training backend, through the loop's hooks (on XLA with
    `run_root`, compiled programs persist in the run's xla_cache/)."""
    from ..device import select
    from ..train.hooks import default_hooks

    choice = select(cfg.train)
    hooks = default_hooks(choice, run_root)
    after = hooks.after_eval_batch if choice.backend == "xla" else None
    return hooks.device(choice), after


def score_perplexity(run: Any, models: Mapping[str, Path], texts: Mapping[str, list[str]], cfg: EvalConfig,
                     device: Any = None, after_batch: Any = None) -> dict[str, dict[str, PerplexityResult]]:
    """Perplexity of every model on every text set (models loaded one at a time)."""
    out: dict[str, dict[str, PerplexityResult]] = {}
    for name, path in models.items():
        model, tokenizer = load_model(path, tokenizer_path=_tokenizer_path(path, run), device=device)
        out[name] = {
            set_name: perplexity(model, tokenizer, set_texts, stride=cfg.ppl_stride or None,
                                 max_length=cfg.ppl_max_length or None, batch_size=cfg.batch_size,
                                 after_batch=after_batch)
            for set_name, set_texts in texts.items()
        }
        del model
    return out


def score_lm_eval(run: Any, models: Mapping[str, Path], cfg: EvalConfig, device: Any = None) -> dict[str, Any]:
    """lm-eval results of every model on cfg.tasks (local copies when cfg.local_tasks)."""
    out = {}
    for name, path in models.items():
        model, tokenizer = load_model(path, tokenizer_path=_tokenizer_path(path, run), device=device)
        out[name] = run_lm_eval(model, tokenizer, tasks=cfg.tasks, num_fewshot=cfg.num_fewshot,
                                local=cfg.local_tasks, hub_source=cfg.hub_source, limit=cfg.limit or None,
                                batch_size=cfg.batch_size, max_gen_toks=cfg.max_gen_toks or None)
        del model
    return out
