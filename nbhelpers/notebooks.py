"""The numbered notebooks: find them, and keep each `.ipynb` twin in sync with its jupytext `.py` source."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat

NOTEBOOK_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")


def default_dir() -> Path:
    """The repository's notebooks/ folder (next to the package in a checkout or editable install)."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def discover(directory: Path | None = None) -> list[Path]:
    """The numbered notebook sources (`NN_name.py`) in order."""
    directory = Path(directory or default_dir())
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no notebooks folder at {directory}; pass --notebooks DIR (a clone of the repository has one)"
        )
    return sorted(p for p in directory.iterdir() if NOTEBOOK_NAME.match(p.name))


def to_notebook(source: Path) -> nbformat.NotebookNode:
    """Read a jupytext percent source as a notebook with no outputs."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.nbformat, nb.nbformat_minor = 4, 5
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.id = f"cell-{i:02d}"  # stable ids keep the committed twin byte-identical across syncs
    return nb


def render(source: Path) -> str:
    """The exact text of the `.ipynb` twin of `source`."""
    return nbformat.writes(to_notebook(source), version=4) + "\n"


def sync(directory: Path | None = None, check: bool = False) -> list[Path]:
    """Write (or with check=True, only list) the `.ipynb` twins that differ from their sources."""
    stale = []
    for source in discover(directory):
        twin = source.with_suffix(".ipynb")
        text = render(source)
        if not twin.exists() or twin.read_text(encoding="utf-8") != text:
            stale.append(twin)
            if not check:
                twin.write_text(text, encoding="utf-8")
    return stale


def parameters_cells(source: Path) -> int:
    """How many cells of a notebook source are tagged `parameters`."""
    return sum("parameters" in c.metadata.get("tags", []) for c in to_notebook(source).cells)
