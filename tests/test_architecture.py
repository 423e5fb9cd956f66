"""docs/ARCHITECTURE.md's module table is the package as it is: every module listed once, each in the layer that
pyproject.toml's import-linter contract gives it (the contract is what CI enforces)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]
# The layers contract's entries, top to bottom, by the names the page uses.
LAYER_NAMES = ["entry", "orchestration", "provenance", "use", "compute", "data", "config", "base"]


def _contract_layers() -> dict[str, str]:
    """module -> layer name, from pyproject.toml's layers contract."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    [layers] = [c["layers"] for c in tool["contracts"] if c["type"] == "layers"]
    assert len(layers) == len(LAYER_NAMES), "a layer was added or removed: name it here and on the page"
    return {m.strip("() "): name for entry, name in zip(layers, LAYER_NAMES) for m in re.split(r"[:|]", entry)}


def _page_layers() -> dict[str, str]:
    rows = re.findall(r"^\| `([\w_]+)/?` \| (\w+) \|", (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"),
                      flags=re.M)
    names = [m for m, _ in rows]
    assert len(names) == len(set(names)), f"listed twice: {sorted({n for n in names if names.count(n) > 1})}"
    return dict(rows)


def _package_modules() -> set[str]:
    pkg = ROOT / "nbhelpers"
    return ({p.stem for p in pkg.glob("*.py") if p.name != "__init__.py"}
            | {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()})


def test_the_page_lists_every_module_in_its_contract_layer():
    page, contract = _page_layers(), _contract_layers()
    assert set(page) == _package_modules()
    assert set(contract) == _package_modules()  # import-linter's exhaustive check, seen from here
    assert {m: page[m] for m in page if page[m] != contract[m]} == {}


def test_a_misplaced_module_is_caught():
    """The comparison above fails when the page and the contract disagree (so it is not vacuous)."""
    page = _page_layers()
    page["loop"] = "base"
    assert {m for m in page if page[m] != _contract_layers()[m]} == {"loop"}


def test_the_package_docstring_names_the_layers_in_the_contracts_order():
    import nbhelpers

    doc = " ".join(nbhelpers.__doc__.split())
    words = [("command line" if name == "entry" else name) for name in reversed(LAYER_NAMES)]
    places = [doc.find(w) for w in words]
    assert -1 not in places and places == sorted(places), dict(zip(words, places))
