"""lm-eval `!function` hooks of the local tasks; the code lives in nbhelpers.evaluation.task_data."""

from nbhelpers.evaluation.task_data import jaqket_json_docs, load_local_dataset, with_choices  # noqa: F401
