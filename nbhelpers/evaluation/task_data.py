"""The offline copies of three Japanese leaderboard tasks: their JSON records, checked field by field, as datasets.

lm-eval's local task YAMLs (data/lm_eval_tasks) load their data through `load_local_dataset` and `with_choices`
(`!function` hooks in local_data.py); `jaqket_json_docs` reads the online JAQKET v2 without its loading script.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LOCAL_TASK_DIR = Path(__file__).resolve().parent.parent / "data" / "lm_eval_tasks"

# Fields each local record must have, with their JSON types; nested dicts hold parallel lists, the
# shape `datasets` gives a sequence of structs (answers["text"][0], ctxs["text"]).
LOCAL_FIELDS: dict[str, dict[str, Any]] = {
    "jaqket_v2": {
        "qid": str,
        "question": str,
        "answers": {"text": [str], "answer_start": [int]},
        "ctxs": {"id": [str], "title": [str], "text": [str], "score": [float], "has_answer": [bool]},
    },
    "jcommonsenseqa": {
        "q_id": int, "question": str, "choice0": str, "choice1": str, "choice2": str, "choice3": str,
        "choice4": str, "label": int,
    },
    "jsquad": {
        "id": str, "title": str, "context": str, "question": str,
        "answers": {"text": [str], "answer_start": [int]}, "is_impossible": bool,
    },
}
LOCAL_SPLITS = ("train", "validation")

class LocalTaskError(ValueError):
    """A local task file (YAML or JSON data) that is not in the expected shape."""


# ---------------------------------------------------------------- local data


def _type_ok(value: Any, kind: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind: Any) -> str:
    if isinstance(kind, dict):
        return "an object {" + ", ".join(f"{k}: {_type_name(v)}" for k, v in kind.items()) + "}"
    if isinstance(kind, list):
        return f"a list of {_type_name(kind[0])}"
    return {str: "string", int: "integer", float: "number", bool: "true/false"}[kind]


def _check_value(value: Any, kind: Any, where: str) -> None:
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            raise LocalTaskError(f"{where}: expected {_type_name(kind)}, got {type(value).__name__}")
        lengths = set()
        for key, sub in kind.items():
            if key not in value:
                raise LocalTaskError(f"{where}: missing field {key!r} (expected {_type_name(kind)})")
            _check_value(value[key], sub, f"{where}.{key}")
            lengths.add(len(value[key]))
        if len(lengths) > 1:
            raise LocalTaskError(f"{where}: the lists {', '.join(kind)} must have the same length")
        return
    if isinstance(kind, list):
        if not isinstance(value, list) or not value:
            raise LocalTaskError(f"{where}: expected a non-empty list of {_type_name(kind[0])}, got {value!r:.60}")
        for i, item in enumerate(value):
            _check_value(item, kind[0], f"{where}[{i}]")
        return
    if not _type_ok(value, kind):
        raise LocalTaskError(f"{where}: expected {_type_name(kind)}, got {value!r:.60} ({type(value).__name__})")


def validate_records(name: str, data: Any, source: str) -> dict[str, list[dict[str, Any]]]:
    """Check a local data object {"train": [...], "validation": [...]} against LOCAL_FIELDS[name]."""
    if name not in LOCAL_FIELDS:
        raise LocalTaskError(f"{source}: unknown local dataset {name!r}; known: {', '.join(LOCAL_FIELDS)}")
    if not isinstance(data, dict):
        raise LocalTaskError(f"{source}: expected an object with keys {', '.join(LOCAL_SPLITS)}")
    fields = LOCAL_FIELDS[name]
    for split in LOCAL_SPLITS:
        rows = data.get(split)
        if not isinstance(rows, list) or not rows:
            raise LocalTaskError(f"{source}: {split!r} must be a non-empty list of records")
        for i, row in enumerate(rows):
            where = f"{source}: {split}[{i}]"
            if not isinstance(row, dict):
                raise LocalTaskError(f"{where}: expected an object, got {type(row).__name__}")
            missing = [k for k in fields if k not in row]
            if missing:
                raise LocalTaskError(f"{where}: missing field(s) {', '.join(missing)}; a record has {', '.join(fields)}")
            for key, kind in fields.items():
                _check_value(row[key], kind, f"{where}.{key}")
            if name == "jcommonsenseqa" and not 0 <= row["label"] <= 4:
                raise LocalTaskError(f"{where}.label: expected 0..4 (the index of choice0..choice4), got {row['label']}")
    return {split: data[split] for split in LOCAL_SPLITS}


def read_local_data(name: str, directory: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Read and check data/<name>.json of the local tasks."""
    path = Path(directory or LOCAL_TASK_DIR) / "data" / f"{name}.json"
    if not path.is_file():
        raise LocalTaskError(f"{path}: local task data not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LocalTaskError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    return validate_records(name, data, str(path))


def load_local_dataset(local_name: str | None = None, data_dir: str | None = None, **_: Any) -> Any:
    """lm-eval custom_dataset hook: the local JSON as a datasets.DatasetDict (extra lm-eval kwargs ignored)."""
    import datasets

    if not local_name:
        raise LocalTaskError("a local task's dataset_kwargs must name its data file: local_name: <name>")
    data = read_local_data(local_name, Path(data_dir) if data_dir else None)
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in data.items()})


def with_choices(dataset: Any) -> Any:
    """JCommonsenseQA's process_docs: choice0..choice4 gathered into one `choices` list."""
    return dataset.map(lambda doc: {"choices": [doc[f"choice{i}"] for i in range(5)]})


# ---------------------------------------------------------------- JAQKET v2 without the loading script


def jaqket_records(raw: Iterable[Mapping[str, Any]], num_contexts: int = 5) -> list[dict[str, Any]]:
    """The hub JAQKET v2 JSON (a list of questions with ranked passages) in the shape lm-eval's task reads.

    Keeps the first `num_contexts` passages and drops questions none of them answers, as the hub
    dataset's loading script does; answers and passages become parallel lists (answers["text"], ctxs["text"]).
    """
    out = []
    for i, q in enumerate(raw):
        try:
            ctxs = list(q["ctxs"])[:num_contexts]
            if not any(bool(c["has_answer"]) for c in ctxs):
                continue
            out.append({
                "qid": str(q["qid"]),
                "question": str(q["question"]),
                "answers": {"text": [str(a) for a in q["answers"]], "answer_start": [-1] * len(q["answers"])},
                "ctxs": {
                    "id": [str(c["id"]) for c in ctxs],
                    "title": [str(c["title"]) for c in ctxs],
                    "text": [str(c["text"]) for c in ctxs],
                    "score": [float(c["score"]) for c in ctxs],
                    "has_answer": [bool(c["has_answer"]) for c in ctxs],
                },
            })
        except (KeyError, TypeError, ValueError) as err:
            raise LocalTaskError(f"JAQKET record {i}: expected qid, question, answers and ctxs[id, title, text, "
                                 f"score, has_answer] ({type(err).__name__}: {err})") from None
    return out


def jaqket_json_docs(repo_id: str = "kumapo/JAQKET", files: Mapping[str, str] | None = None,
                     num_contexts: int = 5, revision: str | None = None, **_: Any) -> Any:
    """lm-eval custom_dataset hook: JAQKET v2 read from the hub repository's JSON files, no loading script."""
    import datasets
    from huggingface_hub import hf_hub_download

    files = dict(files or {"train": "train_jaqket_59.350.json", "validation": "dev_jaqket_59.350.json"})
    splits = {}
    for split, filename in files.items():
        local = hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision)
        with open(local, encoding="utf-8") as fh:
            splits[split] = datasets.Dataset.from_list(jaqket_records(json.load(fh), num_contexts))
    return datasets.DatasetDict(splits)


