"""The stages of a run: which notebook makes each, from which settings, with which files; and the errors a run directory raises."""

from __future__ import annotations

import json
from typing import Any

from .. import platform
from ..layout import (
    CONFIG_FILE,
    CORPUS,
    EVAL,
    FINAL,
    MANIFEST,
    PRETRAIN,
    RESULTS_FILE,
    SFT,
    SPM_FILE,
    TOKENIZER,
)

# Stage name -> (notebook, config sections its output depends on, files that must exist when done).
# The stage names are also the stages' folder names (layout); the sections are config.RunConfig's.
STAGES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    TOKENIZER: ("01_tokenizer", ("tokenizer", "corpus"), (f"{TOKENIZER}/tokenizer.json", f"{TOKENIZER}/{SPM_FILE}")),
    CORPUS: ("02_corpus", ("tokenizer", "corpus", "model"), (f"{CORPUS}/{MANIFEST}",)),
    PRETRAIN: ("03_pretrain", ("tokenizer", "corpus", "model", "train"), (f"{PRETRAIN}/{FINAL}/{CONFIG_FILE}",)),
    SFT: ("04_instruction_tuning", ("tokenizer", "corpus", "model", "train", "sft"), (f"{SFT}/{FINAL}/{CONFIG_FILE}",)),
    "chat": ("05_chat", ("tokenizer", "corpus", "model", "train", "sft"), ()),
    EVAL: ("06_eval", ("tokenizer", "corpus", "model", "train", "sft", "eval"), (f"{EVAL}/{RESULTS_FILE}",)),
}
TRAINING_STAGES = (PRETRAIN, SFT)  # the stages that checkpoint and resume (03, 04)
IDENTITY = ("tokenizer", "corpus", "model")  # sections that make an input's checkpoints this run's


class StageMissing(RuntimeError):
    """A stage's input is absent: the message names the notebook to run first."""


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked: one line saying what is wrong and what to do."""


class RunDirBusy(RunDirError):
    """Another run holds the run directory's lock: the message names its pid, host and start."""


def config_diff(theirs: dict[str, Any], ours: dict[str, Any], sections: tuple[str, ...] | None = None) -> list[str]:
    """`section.field=THEIRS there, OURS here` for every setting (of `sections`, all when None) that differs."""
    theirs, ours = json.loads(json.dumps(theirs)), json.loads(json.dumps(ours))  # tuples and lists alike
    out = []
    for section in sections or sorted(set(theirs) | set(ours)):
        a, b = theirs.get(section), ours.get(section)
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                out.append(f"{section}={json.dumps(a, ensure_ascii=False)} there, {json.dumps(b, ensure_ascii=False)} here")
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{section}.{key}={json.dumps(a.get(key), ensure_ascii=False)} there, "
                           f"{json.dumps(b.get(key), ensure_ascii=False)} here")
    return out


class StaleResume(RunDirError):
    """The inputs hold an older output of this run than a session is known to have written: says what to attach."""


def continue_hint(plat: platform.Platform | None = None) -> str:
    """How the user continues a stage stopped by the session's time budget, on this platform."""
    plat = plat or platform.detect()
    if plat.name == "kaggle":
        return ("run the notebook again / save a new version to continue (Save Version, or `kaggle kernels push`: "
                "the new version reads this version's output and resumes from its checkpoint)")
    if plat.name == "colab":
        return ("run the notebook again / save a new version to continue (in a new runtime: the checkpoint is on "
                "Drive and the notebook resumes from it)")
    return "run the notebook again / save a new version to continue (it resumes from the checkpoint)"
