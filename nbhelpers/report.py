"""The run's report card, eval/report.md, written from its records only (config.json, metrics.json, metrics.jsonl,
eval/results.json); the model cards take their figures and evaluation section from the same functions."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write_text, read_json
from .layout import CONFIG_FILE, EVAL, REPORT_FILE, RESULTS_FILE, RUN_METRICS, STAGE_METRICS, TRAINING_STAGES
from .licences import licence_of

SAMPLES_KEY = "samples"  # eval/results.json: [{"prompt", "pretrain", "sft"}] written by 06


@dataclass(frozen=True)
class StageRecord:
    """One training stage as its metrics.jsonl tells it: steps, tokens, hours, first and last losses."""

    steps: int = 0
    tokens: int = 0
    hours: float = 0.0
    sessions: int = 0
    first_train_loss: float | None = None
    last_train_loss: float | None = None
    eval_loss: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # split: (first, last)
    eval_bpb: dict[str, float | None] = field(default_factory=dict)  # split: last


@dataclass(frozen=True)
class RunRecords:
    """Everything a report or a card reads, loaded once from a run directory."""

    root: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    stages: dict[str, StageRecord]
    results: dict[str, Any] | None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line from a killed session
            continue
    return out


def stage_record(path: str | Path) -> StageRecord:
    """Steps, tokens, hours (each session's last elapsed_s, summed) and losses of one stage's metrics.jsonl."""
    records = _read_jsonl(Path(path))
    hours_s, session_s, sessions = 0.0, 0.0, 0
    train = []
    evals: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        kind = r.get("kind")
        if kind == "event" and r.get("event") in ("start", "resume"):
            hours_s, session_s, sessions = hours_s + session_s, 0.0, sessions + 1
        elif kind == "train":
            train.append(r)
            session_s = max(session_s, float(r.get("elapsed_s") or 0.0))
        elif kind == "eval":
            evals.setdefault(r.get("split", "val"), []).append(r)
    hours_s += session_s
    return StageRecord(
        steps=max((int(r.get("step", 0)) for r in records), default=0),
        tokens=max((int(r.get("tokens", 0)) for r in train), default=0),
        hours=hours_s / 3600, sessions=max(sessions, 1 if train else 0),
        first_train_loss=train[0].get("loss") if train else None,
        last_train_loss=train[-1].get("loss") if train else None,
        eval_loss={s: (rs[0].get("loss"), rs[-1].get("loss")) for s, rs in evals.items()},
        eval_bpb={s: rs[-1].get("bpb") for s, rs in evals.items()},
    )


def load_records(root: str | Path) -> RunRecords:
    """The run directory's records; a missing file reads as empty (the report says what is not there yet)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run directory")
    cfg_path, metrics_path, results_path = root / CONFIG_FILE, root / RUN_METRICS, root / EVAL / RESULTS_FILE
    config = read_json(cfg_path) if cfg_path.is_file() else {}
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    stages = {s: stage_record(root / s / STAGE_METRICS) for s in TRAINING_STAGES
              if (root / s / STAGE_METRICS).is_file()}
    results = read_json(results_path) if results_path.is_file() else None
    return RunRecords(root, config, metrics, stages, results)


# ---------------------------------------------------------------- formatting


def fmt(value: Any, digits: int = 4) -> str:
    """A figure for a Markdown table: ints with separators, floats to `digits` significant digits, None as '-'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- sections


def data_section(rec: RunRecords, stage: str = "sft") -> str:
    """The pre-training mixture (requested and realised shares) and, for `sft`, the instruction data, with licences."""
    corpus = rec.config.get("corpus", {})
    requested = corpus.get("mixture", {}) or {}
    total = sum(requested.values()) or 1.0
    realised = (rec.metrics.get("corpus") or {}).get("realised_shares", {}) or {}
    rows = [[name, requested[name] / total, realised.get(name), licence_of(name).name, licence_of(name).dataset or "-"]
            for name in requested]
    out = ["Pre-training corpus (shares of tokens; realised = the validation shard, the stream's first blocks):", "",
           table(["source", "requested share", "realised share", "licence", "Hub dataset"], rows)]
    data = (rec.config.get("sft", {}) or {}).get("data", []) if stage == "sft" else []
    if data:
        out += ["", "Instruction tuning data:", "",
                table(["data", "licence", "Hub dataset"],
                      [[n, licence_of(n).name, licence_of(n).dataset or "-"] for n in data])]
    return "\n".join(out)


def training_rows(rec: RunRecords) -> list[list[Any]]:
    """One row per training stage: steps, tokens, hours, sessions, train loss first -> last, val loss, bits per byte."""
    rows = []
    for stage, s in rec.stages.items():
        split = "val" if "val" in s.eval_loss else next(iter(s.eval_loss), None)
        first, last = s.eval_loss.get(split, (None, None)) if split else (None, None)
        rows.append([stage, s.steps, s.tokens, round(s.hours, 3), s.sessions, s.first_train_loss, s.last_train_loss,
                     f"{split}: {fmt(first)} -> {fmt(last)}" if split else "-", s.eval_bpb.get(split) if split else None])
    return rows


TRAINING_HEADER = ["stage", "steps", "tokens", "hours", "sessions", "first train loss", "last train loss",
                   "held-out loss (first -> last)", "bits per byte"]


def evaluation_section(results: Mapping[str, Any] | None, models: Sequence[str] | None = None) -> str | None:
    """Perplexity / bits-per-byte and lm-eval tables from eval/results.json for `models` (all when None)."""
    if not results:
        return None
    from .evaluation.results import results_markdown

    ppl = results.get("perplexity", {}) or {}
    rows = []
    for model, sets in ppl.items():
        if models is not None and model not in models:
            continue
        for name, r in sets.items():
            rows.append([model, name, sum(r.get("tokens") or ()), r.get("token_ppl"), r.get("bpb")])
    parts = []
    if rows:
        parts += ["Perplexity on held-out text (token-weighted) and bits per byte (lower is better):", "",
                  table(["model", "texts", "tokens", "perplexity", "bits per byte"], rows)]
    for model, res in (results.get("lm_eval", {}) or {}).items():
        if (models is not None and model not in models) or not res.get("table"):
            continue
        parts += ["", f"lm-evaluation-harness, {model}" + (" (offline copies of a few examples: these say nothing "
                                                         "about quality)" if results.get("local_tasks") else "")
                  + ":", "", results_markdown(res["table"])]
    return "\n".join(parts).strip() or None


def samples_section(results: Mapping[str, Any] | None, limit: int = 6, width: int = 160) -> str | None:
    """Answers to the same prompts before (pretrain) and after (sft) tuning, from eval/results.json."""
    samples = (results or {}).get(SAMPLES_KEY) or []
    if not samples:
        return None
    models = [k for k in samples[0] if k != "prompt"]
    rows = [[s["prompt"], *[(s.get(m) or "")[:width] for m in models]] for s in samples[:limit]]
    return table(["prompt", *[f"{m} answer" for m in models]], rows)


def configuration_rows(rec: RunRecords) -> list[list[Any]]:
    """The settings a reader asks first: profile, model, context, vocabulary, optimiser, precision, device."""
    cfg, pre = rec.config, rec.metrics.get("pretrain") or {}
    model, train, sft = cfg.get("model", {}), cfg.get("train", {}), cfg.get("sft", {})
    return [["profile", cfg.get("profile")], ["model preset", model.get("preset")],
            ["parameters", pre.get("parameters")], ["vocabulary", (rec.metrics.get("tokenizer") or {}).get("vocab_size")],
            ["context (tokens)", (rec.metrics.get("corpus") or {}).get("block_len")],
            ["optimizer", train.get("optimizer")], ["learning rate", train.get("lr")],
            ["micro batch x accumulation", f"{train.get('micro_batch')} x {train.get('grad_accum')}"],
            ["device", pre.get("device")], ["precision", pre.get("precision")],
            ["tuning prompt template", json.dumps(sft.get("template"), ensure_ascii=False) if sft else None]]


def render_report(root: str | Path) -> str:
    """eval/report.md's text for the run at `root`."""
    rec = load_records(root)
    name = Path(rec.root).name
    out = [f"# Report card: {name}", "",
           "Written by nbhelpers from the run's records (config.json, metrics.json, */metrics.jsonl, "
           "eval/results.json); rerun notebook 06 to refresh it.", "",
           "## Configuration", "", table(["setting", "value"], configuration_rows(rec)), "",
           "## Data", "", data_section(rec), "",
           "## Training", ""]
    out.append(table(TRAINING_HEADER, training_rows(rec)) if rec.stages else "No training recorded yet (run 03).")
    sft = rec.metrics.get("sft") or {}
    if sft:
        out += ["", "Instruction tuning, held-out losses before -> after: instructions "
                f"{fmt(sft.get('instruction_loss_before'))} -> {fmt(sft.get('instruction_loss_after'))}, corpus "
                f"{fmt(sft.get('corpus_loss_before'))} -> {fmt(sft.get('corpus_loss_after'))}."]
    out += ["", "## Evaluation", "", evaluation_section(rec.results) or "Not evaluated yet (run 06).", "",
            "## Sample answers before and after tuning", "",
            samples_section(rec.results) or "No samples yet (06 writes them when both models exist)."]
    return "\n".join(out).rstrip() + "\n"


def write_report(root: str | Path) -> Path:
    """Write eval/report.md for the run at `root`; return its path."""
    path = Path(root) / EVAL / REPORT_FILE
    atomic_write_text(path, render_report(root))
    return path


def sample_answers(models: Mapping[str, str | Path], tokenizer: Any, prompts: Sequence[str], template: str,
                   prefix: str, max_new_tokens: int, device: Any = "cpu") -> list[dict[str, str]]:
    """Greedy answers of each final/ model (loaded one at a time) to `prompts`, one row per prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    from .generate import generate

    answers: dict[str, list[str]] = {}
    for name, path in models.items():
        model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        with torch.no_grad():
            answers[name] = generate(model, tokenizer, list(prompts), template=template, prefix=prefix,
                                     max_new_tokens=max_new_tokens)
        del model
    return [{"prompt": p, **{m: answers[m][i] for m in models}} for i, p in enumerate(prompts)]
