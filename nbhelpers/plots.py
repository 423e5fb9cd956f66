"""Matplotlib figures the notebooks show and save; each function returns the figure and saves a PNG when asked."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "ipympl")) else None
import matplotlib.pyplot as plt  # noqa: E402


def save(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Save `fig` as PNG at `path` (parents created) when a path is given; return the figure."""
    if path is not None:
        path = Path(path)
        if path.is_file() and not os.access(path.parent, os.W_OK):
            return fig  # an earlier Kaggle version's plot, in a read-only input: shown, already saved
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


# ---------------------------------------------------------------- 06 evaluation


def _grouped_bars(ax: plt.Axes, groups: list[str], series: dict[str, list[float]], fmt: str) -> None:
    """Bars of each series side by side within each group, values written above the bars."""
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[format(v, fmt) for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), groups, rotation=15 if len(groups) > 3 else 0)
    ax.legend()


def plot_perplexity(table: object, value: str = "token_ppl", path: str | Path | None = None) -> plt.Figure:
    """Perplexity per text set, one bar per model (table: the DataFrame of evaluation.perplexity_table)."""
    groups = list(dict.fromkeys(table["texts"]))
    models = list(dict.fromkeys(table["model"]))
    series = {m: [float(table[(table["model"] == m) & (table["texts"] == g)][value].iloc[0])
                  if ((table["model"] == m) & (table["texts"] == g)).any() else float("nan") for g in groups]
              for m in models}
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(groups) + 2), 3.6))
    _grouped_bars(ax, groups, series, ".1f")
    ax.set_ylabel("perplexity (token-weighted)" if value == "token_ppl" else value)
    ax.set_title("Perplexity on held-out texts (lower is better)")
    if all(v > 0 for vs in series.values() for v in vs if v == v):
        ax.set_yscale("log")  # an untrained and a trained model differ by orders of magnitude
    return save(fig, path)


def plot_lm_eval(scores: dict[str, dict[str, float]], path: str | Path | None = None) -> plt.Figure:
    """lm-eval scores per task, one bar per model (scores: model -> {"task/metric": value})."""
    groups = list(dict.fromkeys(k for s in scores.values() for k in s))
    series = {m: [float(s.get(g, float("nan"))) for g in groups] for m, s in scores.items()}
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(groups) + 2), 3.6))
    _grouped_bars(ax, [g.replace("/", "\n") for g in groups], series, ".3f")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score")
    ax.set_title("lm-evaluation-harness (higher is better)")
    return save(fig, path)


def plot_training(metrics_path: str | Path, path: str | Path | None = None) -> plt.Figure:
    """Train and eval loss (left) and perplexity (right, log scale) by step, from the loop's metrics.jsonl."""
    import json
    import math

    records = []
    for line in Path(metrics_path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a killed process
            continue
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and math.isfinite(r.get("loss", math.nan))]
    evals: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r.get("kind") == "eval" and math.isfinite(r.get("loss", math.nan)):
            evals.setdefault(r["split"], []).append((r["step"], r["loss"]))
    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps, losses = zip(*train)
        ax_loss.plot(steps, losses, label="train", lw=1.2)
        ax_ppl.plot(steps, [math.exp(min(v, 700)) for v in losses], label="train", lw=1.2)
    for split, points in evals.items():
        steps, losses = zip(*sorted(points))
        ax_loss.plot(steps, losses, "o-", label=f"eval: {split}", ms=4)
        ax_ppl.plot(steps, [math.exp(min(v, 700)) for v in losses], "o-", label=f"eval: {split}", ms=4)
    ax_loss.set(xlabel="step", ylabel="loss (nats per token)", title="Loss")
    ax_ppl.set(xlabel="step", ylabel="perplexity", title="Perplexity", yscale="log")
    for ax in (ax_loss, ax_ppl):
        ax.grid(alpha=0.3)
        if train or evals:
            ax.legend()
    fig.tight_layout()
    return save(fig, path)


class LiveCurve:
    """The training curve, redrawn in place at each evaluation while the loop runs (03 and 04).

    Call it (the loop's `on_eval`) or `update()` (between the lines of torchrun workers' output): it draws only
    when metrics.jsonl holds an evaluation it has not drawn, so the training steps never pay for it. In a notebook
    the figure replaces itself through one IPython display handle; elsewhere nothing is shown, and the PNG is
    written when `png` is given.
    """

    def __init__(self, metrics_path: str | Path, png: str | Path | None = None,
                 draw: Callable[..., plt.Figure] | None = None) -> None:
        self.metrics_path, self.png = Path(metrics_path), png
        self.draw = draw or plot_training
        self.handle: Any = None
        self.evals_drawn = 0
        self.seen: tuple[int, int] | None = None  # (mtime_ns, size) of metrics.jsonl when last read
        self.shell = _notebook_shell()
        self.draw_s: list[float] = []  # seconds each redraw took (read, draw, show, save)

    def __call__(self, metrics_path: str | Path | None = None) -> bool:
        return self.update()

    def update(self) -> bool:
        """Redraw when an evaluation was logged since the last draw; True when it drew."""
        import time

        try:
            st = self.metrics_path.stat()
        except FileNotFoundError:
            return False
        if (st.st_mtime_ns, st.st_size) == self.seen:  # unchanged: a stat is all it costs
            return False
        self.seen = (st.st_mtime_ns, st.st_size)
        text = self.metrics_path.read_text(encoding="utf-8")
        evals = text.count('"kind": "eval"')
        if evals == self.evals_drawn or (self.shell is None and self.png is None):
            return False
        started = time.perf_counter()
        self.evals_drawn = evals
        fig = self.draw(self.metrics_path, path=self.png)
        if self.shell is not None:
            from IPython.display import display

            if self.handle is None:
                self.handle = display(fig, display_id=True)
            else:
                self.handle.update(fig)
        plt.close(fig)  # shown or saved: no second copy when the cell ends
        self.draw_s.append(time.perf_counter() - started)
        return True


def _notebook_shell() -> Any:
    """The IPython kernel's shell when this runs in a notebook (Jupyter, Colab, Kaggle, papermill), else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    in_kernel = shell is not None and ("IPKernelApp" in getattr(shell, "config", {}) or hasattr(shell, "kernel"))
    return shell if in_kernel else None


# ---------------------------------------------------------------- 04 instruction tuning


def plot_sft_eval(metrics_path: str | Path, path: str | Path | None = None,
                  splits: tuple[str, str] = ("instructions", "corpus")) -> plt.Figure:
    """Held-out instruction loss and held-out corpus loss by tuning step on one axis; dashed: the pre-trained model.

    Step 0 is evaluated before the first update, so each curve starts at the pre-trained model's loss: the
    instruction curve falling is tuning working, the corpus curve rising above its dashed line is forgetting.
    """
    import json
    import math

    points: dict[str, list[tuple[int, float]]] = {s: [] for s in splits}
    for line in Path(metrics_path).read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a killed process
            continue
        if r.get("kind") == "eval" and r.get("split") in points and math.isfinite(r.get("loss", math.nan)):
            points[r["split"]].append((r["step"], r["loss"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    for (split, pts), color in zip(points.items(), ("tab:blue", "tab:orange")):
        if not pts:
            continue
        steps, losses = zip(*sorted(dict(pts).items()))  # a resumed run may log a step twice: keep the last
        label = {"instructions": "held-out instructions (response tokens)", "corpus": "held-out corpus"}.get(split, split)
        ax.plot(steps, losses, "o-", ms=3, color=color, label=label)
        if steps[0] == 0:
            ax.axhline(losses[0], ls="--", lw=1, color=color, alpha=0.6)
    ax.set(xlabel="tuning step", ylabel="eval loss (nats per token)",
           title="Instruction tuning: instruction loss vs corpus loss (dashed: pre-trained)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def plot_token_lengths(stats: dict, path: str | Path | None = None) -> plt.Figure:
    """Token length distribution from `tokenizer.tokenizer_stats`: held-out text next to the vocabulary."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, title in ((axes[0], "token_lengths", "tokens in held-out text"),
                           (axes[1], "vocab_lengths", "pieces in the vocabulary")):
        counts = {int(k): v for k, v in stats[key].items()}
        total = sum(counts.values()) or 1
        lengths = sorted(counts)
        ax.bar([str(n) if n else "byte" for n in lengths], [100 * counts[n] / total for n in lengths],
               color=["tab:red" if n == 0 else "tab:blue" for n in lengths])
        ax.set_title(title)
        ax.set_xlabel("length in characters (▁ counts as one)")
        ax.set_ylabel("% of " + ("tokens" if key == "token_lengths" else "pieces"))
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"vocab {stats['vocab_size']}, {stats['chars_per_token']:.2f} characters per token")
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------- 02 corpus


def plot_mixture(requested: dict[str, float], realised: dict[str, float], path: str | Path | None = None) -> plt.Figure:
    """Requested vs realised token share per source (the manifest's `mixture`)."""
    names = list(requested)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names) + 2), 3.6))
    _grouped_bars(ax, names, {"requested": [100 * requested[n] for n in names],
                              "realised": [100 * realised.get(n, 0.0) for n in names]}, ".1f")
    ax.set_ylabel("share of train tokens (%)")
    ax.set_ylim(0, 110)
    ax.set_title("Corpus mixture")
    return save(fig, path)


def plot_cleaning(sources: dict[str, dict], path: str | Path | None = None) -> plt.Figure:
    """Share of each source's characters removed by each cleaning step (the manifest's `sources`)."""
    steps = {"symbols": "symbol_chars", "whitespace": "whitespace_chars", "too short": "short_chars",
             "duplicates": "duplicate_chars"}
    names = list(sources)
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(names) + 1.6))
    left = [0.0] * len(names)
    for label, key in steps.items():
        values = [100 * s["cleaning"][key] / max(1, s["cleaning"]["characters_in"]) for s in sources.values()]
        ax.barh(names, values, left=left, label=label)
        left = [a + b for a, b in zip(left, values)]
    ax.set_xlabel("characters removed (% of characters read)")
    ax.set_title("What cleaning removed, per source")
    ax.legend(fontsize=8, ncol=4, loc="lower right")
    return save(fig, path)
