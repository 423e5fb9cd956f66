"""Evaluation results: the lm-eval table in the seed's shape, the perplexity table, eval/results.json."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .perplexity import PerplexityResult

TABLE_COLUMNS = ["Tasks", "Version", "Filter", "n-shot", "Metric", "Value", "Stderr"]
PPL_COLUMNS = ["model", "texts", "n_texts", "tokens", "bytes", "mean_ppl", "token_ppl", "bpb"]


def results_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """lm-eval results as rows (Tasks, Version, Filter, n-shot, Metric, Value, Stderr), like its own table."""
    rows = []
    for task, metrics in results.get("results", {}).items():
        version = results.get("versions", {}).get(task, "N/A")
        shots = results.get("n-shot", {}).get(task, "")
        for key, value in sorted(metrics.items()):
            if key in ("alias", "name", "sample_len", "sample_count") or "_stderr" in key or "," not in key:
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({
                "Tasks": metrics.get("alias", task),
                "Version": version,
                "Filter": filt,
                "n-shot": shots,
                "Metric": metric,
                "Value": float(value) if isinstance(value, (int, float)) else value,
                "Stderr": float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else "N/A",
            })
    return rows


def results_table(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
    """pandas DataFrame of lm-eval results (from simple_evaluate, or rows from results_rows / results.json)."""
    import pandas as pd

    rows = results if isinstance(results, (list, tuple)) else results_rows(results)
    return pd.DataFrame(list(rows), columns=TABLE_COLUMNS)


def results_markdown(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """The results table as Markdown (Value and Stderr with 4 decimals)."""
    table = results_table(results)
    lines = ["|" + "|".join(TABLE_COLUMNS) + "|", "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    for row in table.itertuples(index=False):
        cells = [f"{c:.4f}" if isinstance(c, float) and col in ("Value", "Stderr") else
                 f"{c:g}" if isinstance(c, float) else str(c) for col, c in zip(TABLE_COLUMNS, row)]
        lines.append("|" + "|".join(cells) + "|")
    return "\n".join(lines)


def headline_scores(results: Mapping[str, Any]) -> dict[str, float]:
    """One number per task ("task/metric" -> value), for metrics.json and the comparison chart."""
    return {f"{r['Tasks']}/{r['Metric']}": r["Value"] for r in results_rows(results) if isinstance(r["Value"], float)}


def perplexity_table(results: Mapping[str, Mapping[str, PerplexityResult | Mapping[str, Any]]]) -> Any:
    """pandas DataFrame with one row per (model, text set): texts, scored tokens and bytes, PPL and bits per byte."""
    import pandas as pd

    rows = []
    for model, sets in results.items():
        for name, res in sets.items():
            r = res.to_dict() if isinstance(res, PerplexityResult) else dict(res)
            rows.append({"model": model, "texts": name, "n_texts": len(r["per_text"]), "tokens": sum(r["tokens"]),
                         "bytes": sum(r.get("bytes") or ()) or None, "mean_ppl": r["mean_ppl"],
                         "token_ppl": r["token_ppl"], "bpb": r.get("bpb")})
    return pd.DataFrame(rows, columns=PPL_COLUMNS)


def eval_figures(ppl: Mapping[str, Mapping[str, PerplexityResult]],
                 lm_eval: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Headline figures for metrics.json: token-weighted PPL and bits per byte per model and text set, task scores."""
    figures: dict[str, Any] = {
        "perplexity": {m: {name: round(r.token_ppl, 4) for name, r in sets.items()} for m, sets in ppl.items()},
        "bpb": {m: {name: None if r.bpb is None else round(r.bpb, 4) for name, r in sets.items()}
                for m, sets in ppl.items()},
    }
    if lm_eval:
        figures["lm_eval"] = {m: headline_scores(res) for m, res in lm_eval.items() if res}
    return figures


def save_results(path: str | Path, ppl: Mapping[str, Mapping[str, PerplexityResult]],
                 lm_eval: Mapping[str, Mapping[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """Write eval/results.json: perplexities (per text too) and, per model, lm-eval's table rows and versions."""
    from ..files import atomic_write_text

    data: dict[str, Any] = {
        "perplexity": {m: {name: r.to_dict() for name, r in sets.items()} for m, sets in ppl.items()},
        "lm_eval": {},
        **extra,
    }
    for model, res in (lm_eval or {}).items():
        if not res:
            continue
        data["lm_eval"][model] = {
            "table": results_rows(res),
            "results": res.get("results", {}),
            "n-shot": res.get("n-shot", {}),
            "versions": res.get("versions", {}),
            "lm_eval_version": res.get("lm_eval_version"),
        }
    atomic_write_text(Path(path), json.dumps(data, indent=2, ensure_ascii=False, default=str))
    return data
