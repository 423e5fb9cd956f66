"""Evaluation: perplexity, lm-evaluation-harness (online and offline Japanese tasks), results and the run summary."""

from .harness import (
    JAQKET_JSON_TASK,
    ONLINE_TO_LOCAL,
    SCRIPT_FREE,
    TaskDataError,
    UnknownTask,
    resolve_tasks,
    run_lm_eval,
    task_manager,
    validate_task_dir,
)
from .perplexity import ModelMismatch, PerplexityResult, check_tokenizer, load_model, perplexity, windows
from .results import (
    eval_figures,
    headline_scores,
    perplexity_table,
    results_markdown,
    results_rows,
    results_table,
    save_results,
)
from .stage import available_models, eval_device, score_lm_eval, score_perplexity
from .summary import run_summary
from .task_data import LOCAL_TASK_DIR, LocalTaskError, jaqket_records
from .texts import heldout_prose, texts_from_blocks, validation_texts

__all__ = [
    "JAQKET_JSON_TASK", "LOCAL_TASK_DIR", "ONLINE_TO_LOCAL", "SCRIPT_FREE", "LocalTaskError", "ModelMismatch", "PerplexityResult", "TaskDataError",
    "UnknownTask", "check_tokenizer", "eval_figures", "headline_scores", "heldout_prose", "jaqket_records",
    "load_model", "perplexity", "perplexity_table", "resolve_tasks", "results_markdown", "results_rows",
    "results_table", "run_lm_eval", "run_summary", "save_results", "task_manager", "texts_from_blocks",
    "validate_task_dir", "validation_texts", "windows", "available_models", "eval_device", "score_lm_eval",
    "score_perplexity",
]
