"""Matplotlib figures the notebooks show and save; each function returns the figure and saves a PNG when asked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "ipympl")) else None
import matplotlib.pyplot as plt  # noqa: E402


def save(fig: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Save `fig` as PNG at `path` (parents created) when a path is given; return the figure."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig
