"""The package's declared Python range and requirements: what pip reads on Colab, Kaggle and a laptop."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # standard library from Python 3.11

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirements_txt() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [Requirement(line) for line in (ln.split("#", 1)[0].strip() for ln in lines) if line]


def declared() -> list[Requirement]:
    """Every requirement pip may read: the package's dependencies, its extras, requirements.txt."""
    extras = [r for group in PROJECT.get("optional-dependencies", {}).values() for r in group]
    return [Requirement(r) for r in [*PROJECT["dependencies"], *extras]] + requirements_txt()


@pytest.mark.parametrize("version", ["3.10.0", "3.11.9", "3.12.12", "3.13.0", "3.13.9"])
def test_supported_pythons_may_install_the_package(version):
    """Colab runs 3.13 since 2026-08, Kaggle's TPU image 3.12: pip must accept every Python from 3.10 on."""
    assert SpecifierSet(PROJECT["requires-python"]).contains(version)


def test_no_upper_bound_on_python_that_a_platform_upgrade_would_hit():
    spec = SpecifierSet(PROJECT["requires-python"])
    assert spec.contains("3.14.0") and spec.contains("3.20.0"), f"requires-python {spec} caps future Pythons"
    assert not spec.contains("3.9.18"), "3.10 is the oldest Python the project supports and tests"


def test_no_requirement_or_classifier_caps_python():
    """An upper bound can hide in a dependency's marker or a classifier as well as in requires-python."""
    for req in declared():
        marker = str(req.marker or "")
        assert not re.search(r"python_(full_)?version\s*<", marker), f"{req}: a Python upper bound in its marker"
    classifiers = [c for c in PROJECT.get("classifiers", []) if c.startswith("Programming Language :: Python :: 3.")]
    if classifiers:  # when the versions are listed, the newest supported one is among them
        assert "Programming Language :: Python :: 3.13" in classifiers


def test_requirements_txt_repeats_the_package_dependencies():
    """The README installs from requirements.txt, Kaggle and Colab from pyproject: the two agree."""
    txt = {str(r) for r in requirements_txt()}
    missing = [d for d in PROJECT["dependencies"] if str(Requirement(d)) not in txt]
    assert not missing, f"requirements.txt lacks (or spells differently) {missing}"


def test_extras_are_spelled_as_their_distribution_declares_them():
    """lm-eval's extra is `japanese-leaderboard`: the name its metadata gives, which every installer matches."""
    checked = 0
    for req in declared():
        if not req.extras:
            continue
        try:
            provided = md.metadata(req.name).get_all("Provides-Extra") or []
        except md.PackageNotFoundError:
            continue  # not installed here (bitsandbytes has no extras anyway)
        for extra in req.extras:
            assert extra in provided, (f"{req}: extra {extra!r} is not declared by {req.name} "
                                       f"(it declares {sorted(provided)})")
            assert extra == canonicalize_name(extra), f"{req}: write the extra as {canonicalize_name(extra)!r}"
            checked += 1
    assert checked, "no requirement with extras was checked: lm-eval should be installed"
