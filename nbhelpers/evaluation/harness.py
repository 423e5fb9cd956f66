"""lm-evaluation-harness: which tasks (online, script-free, or the offline copies in `task_data`), and running them."""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import check_value
from .perplexity import check_tokenizer, load_model
from .task_data import LOCAL_FIELDS as LOCAL_FIELDS
from .task_data import LOCAL_TASK_DIR as LOCAL_TASK_DIR
from .task_data import LocalTaskError as LocalTaskError
from .task_data import read_local_data

# Online task -> its offline copy over data/<local_name>.json (same prompt, target, filter and metric).
ONLINE_TO_LOCAL = {
    "ja_leaderboard_jaqket_v2": "ja_local_jaqket_v2",
    "ja_leaderboard_jcommonsenseqa": "ja_local_jcommonsenseqa",
    "ja_leaderboard_jsquad": "ja_local_jsquad",
}
# The online tasks without loading scripts, which datasets>=4 refuses: JAQKET v2 from the hub repository's
# JSON files (jaqket_v2_hub.yaml), JGLUE from SB Intuitions' parquet copies (*_sbintuitions.yaml).
SCRIPT_FREE = {
    "ja_leaderboard_jaqket_v2": "ja_leaderboard_jaqket_v2_json",
    "ja_leaderboard_jcommonsenseqa": "ja_leaderboard_jcommonsenseqa_sbi",
    "ja_leaderboard_jsquad": "ja_leaderboard_jsquad_sbi",
}
JAQKET_JSON_TASK = SCRIPT_FREE["ja_leaderboard_jaqket_v2"]


class UnknownTask(KeyError):
    """A task name lm-eval does not know; the message lists close names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class TaskDataError(RuntimeError):
    """An lm-eval task whose dataset could not be loaded (no network, a refused loading script)."""


LM_EVAL_MISSING = ("lm-eval is not installed: it is nbhelpers' `eval` extra, which only 06 needs. Install it with "
                   "`pip install 'nbhelpers[eval]'` (in a clone: `pip install -e '.[eval]'`), or run 06's setup cell, "
                   "which installs it; then restart the kernel")


def require_lm_eval() -> None:
    """Raise ModuleNotFoundError saying how to install the `eval` extra when lm-eval is absent."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise ModuleNotFoundError(LM_EVAL_MISSING, name="lm_eval")


# ---------------------------------------------------------------- task definitions


REQUIRED_TASK_KEYS = ("task", "output_type", "doc_to_text", "doc_to_target", "metric_list")


def validate_task_dir(directory: str | Path | None = None) -> list[str]:
    """Check every task YAML in a local task folder and its data; return the task names."""
    require_lm_eval()
    from lm_eval.tasks._yaml_loader import load_yaml

    directory = Path(directory or LOCAL_TASK_DIR)
    if not directory.is_dir():
        raise LocalTaskError(f"{directory}: local task folder not found")
    names = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            cfg = load_yaml(path, resolve_func=False, recursive=True)
        except Exception as err:  # yaml.YAMLError and lm-eval's include errors
            raise LocalTaskError(f"{path}: not a valid lm-eval task YAML ({type(err).__name__}: {err})") from None
        if not isinstance(cfg, dict):
            raise LocalTaskError(f"{path}: expected a mapping of task settings, got {type(cfg).__name__}")
        missing = [k for k in REQUIRED_TASK_KEYS if k not in cfg]
        if missing:
            raise LocalTaskError(f"{path}: missing key(s) {', '.join(missing)}; a task needs {', '.join(REQUIRED_TASK_KEYS)}")
        local_name = (cfg.get("dataset_kwargs") or {}).get("local_name")
        if local_name:
            read_local_data(local_name, directory)
        names.append(cfg["task"])
    return names


@functools.lru_cache(maxsize=4)
def _task_manager(include: tuple[str, ...], defaults: bool) -> Any:
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include), include_defaults=defaults)


def task_manager(extra_dirs: Sequence[str | Path] = (), *, defaults: bool = True) -> Any:
    """lm-eval's TaskManager with nbhelpers' local tasks (and `extra_dirs`) registered; cached.

    defaults=False leaves out lm-eval's own tasks: indexing them takes seconds, the local ones do not.
    """
    dirs = [LOCAL_TASK_DIR, *map(Path, extra_dirs)]
    return _task_manager(tuple(str(Path(d).resolve()) for d in dirs), defaults)


def resolve_tasks(names: Sequence[str], *, local: bool = False, hub_source: str = "script_free",
                  manager: Any = None) -> list[str]:
    """Map task names to their offline copies when `local`, and check lm-eval knows each one.

    Online, hub_source="script_free" swaps the three leaderboard tasks for copies that read the same data
    without a loading script (SCRIPT_FREE); "leaderboard" keeps lm-eval's own tasks, whose datasets'
    loading scripts need datasets<4 and HF_DATASETS_TRUST_REMOTE_CODE=1.
    """
    if isinstance(names, str):
        names = [names]
    check_value("eval.hub_source", hub_source, ValueError)
    manager = manager or task_manager()
    known = set(manager.all_tasks)
    out = []
    for name in names:
        if local:
            target = ONLINE_TO_LOCAL.get(name, name)
        elif hub_source == "script_free":
            target = SCRIPT_FREE.get(name, name)
        else:
            target = name
        if target not in known:
            close = difflib.get_close_matches(target, sorted(known), n=5, cutoff=0.6)
            if not close:
                close = sorted(k for k in known if k.startswith(target.split("_")[0]))[:5]
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise UnknownTask(f"unknown lm-eval task {target!r}{hint}")
        out.append(target)
    return out


@contextlib.contextmanager
def _quiet(logger_name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise a logger's level for the duration (lm-eval's modules log through children of "lm_eval")."""
    logger = logging.getLogger(logger_name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def run_lm_eval(
    model: Any,
    tokenizer: Any = None,
    *,
    tasks: Sequence[str],
    num_fewshot: Mapping[str, int] | None = None,
    local: bool = False,
    hub_source: str = "script_free",
    limit: int | float | None = None,
    batch_size: int = 8,
    max_gen_toks: int | None = None,
    device: Any = None,
    extra_task_dirs: Sequence[str | Path] = (),
    fixed_shapes: bool | None = None,
) -> dict[str, Any]:
    """Evaluate a model (object or save_pretrained directory) on lm-eval tasks through HFLM.

    `num_fewshot` maps task names (online or local) to shots; tasks not in it keep their YAML's value.
    fixed_shapes (default: on for a model on XLA) scores and generates through `FixedShapeLM`: a few compiled
    programs for the whole evaluation instead of one per batch width and per generated token.
    Returns lm-eval's result dict (results, versions, n-shot, higher_is_better, ...).
    """
    require_lm_eval()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    if isinstance(model, (str, Path)):
        model, loaded_tok = load_model(model, device=device)
        tokenizer = tokenizer or loaded_tok
    if tokenizer is None:
        raise ValueError("run_lm_eval: pass the tokenizer with a model object")
    check_tokenizer(model, tokenizer)
    given = [tasks] if isinstance(tasks, str) else list(tasks)
    try:  # nbhelpers' task folder alone indexes in a moment; lm-eval's own thousands of tasks take seconds
        manager = task_manager(extra_task_dirs, defaults=False)
        names = resolve_tasks(given, local=local, hub_source=hub_source, manager=manager)
    except UnknownTask:
        manager = task_manager(extra_task_dirs, defaults=True)
        names = resolve_tasks(given, local=local, hub_source=hub_source, manager=manager)
    fewshot = dict(num_fewshot or {})  # keyed by the name given or the name run
    shots = {name: fewshot.get(g, fewshot.get(name)) for g, name in zip(given, names)}
    try:
        with _quiet("lm_eval"):  # custom_dataset tasks warn about --metadata, which does not apply here
            loaded = manager.load(names)["tasks"]
    except (LocalTaskError, KeyboardInterrupt):
        raise
    except Exception as err:  # datasets and huggingface_hub raise many kinds; the advice is the same
        raise TaskDataError(
            f"lm-eval could not load the data of {', '.join(names)}: {type(err).__name__}: {err}\n"
            "Without hub access, eval.local_tasks=true runs the bundled offline copies; a 'loading script' or "
            "trust_remote_code error goes away with eval.hub_source=script_free."
        ) from err
    for name, task in loaded.items():
        if shots.get(name) is not None:
            task.set_config(key="num_fewshot", value=int(shots[name]))
    on_xla = next(model.parameters()).device.type == "xla"
    with _quiet("lm_eval"):  # HFLM warns that a model object ignores model_args: there are none
        if on_xla if fixed_shapes is None else fixed_shapes:
            from .. import xla
            from .fixed_lm import FixedShapeLM
            from .perplexity import _xla_sync

            if on_xla:
                xla.use_xla_attention(model)
            lm = FixedShapeLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                              after_batch=_xla_sync if on_xla else None)
        else:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    # lm-eval generates up to 256 tokens and keeps context + generation within the model's window:
    # a short-context model (the smoke one has 256) gets a quarter of its window instead.
    gen_toks = int(max_gen_toks or min(256, lm.max_length // 4))
    if not 0 < gen_toks < lm.max_length:
        raise ValueError(f"max_gen_toks={gen_toks}: expected 1..{lm.max_length - 1} (the model's context is {lm.max_length})")
    with _quiet("lm_eval"):  # not one truncation warning per request
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(loaded.values()),
            gen_kwargs={"max_gen_toks": gen_toks},
            limit=limit or None,
            task_manager=manager,
            log_samples=False,
            verbosity="ERROR",
        )
    if results is None:  # non-zero ranks under torchrun get nothing back
        return {}
    return results
