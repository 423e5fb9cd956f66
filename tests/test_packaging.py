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


def test_the_setup_cells_gpu_requirement_is_the_gpu_extra():
    from nbhelpers import notebooks

    assert PROJECT["optional-dependencies"]["gpu"] == [notebooks.GPU_REQUIREMENT]


@pytest.mark.slow
def test_setup_cell_installs_bitsandbytes_on_a_cuda_machine_only(tmp_path):
    """The T4 profiles' 8-bit AdamW: the setup cell adds bitsandbytes where nvidia-smi exists, nowhere else."""
    import os
    import subprocess
    import sys

    from test_platform import FAKE_PACKAGE, _wheel, offline_cell


    venv, wheels, gpu_bin = tmp_path / "venv", tmp_path / "wheels", tmp_path / "gpu-bin"
    wheels.mkdir()
    gpu_bin.mkdir()
    (gpu_bin / "nvidia-smi").write_text("#!/bin/sh\necho 'Tesla T4'\n")
    (gpu_bin / "nvidia-smi").chmod(0o755)
    _wheel(wheels, "bitsandbytes", "0.43.0", {"bitsandbytes/__init__.py": ""})
    _wheel(wheels, "nbhelpers", "0.1", FAKE_PACKAGE)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_DISABLE_PIP_VERSION_CHECK="1",
               PATH=f"{venv / 'bin'}:/usr/bin:/bin")
    cell = offline_cell()

    def has_bitsandbytes() -> bool:
        probe = "import importlib.util; print(importlib.util.find_spec('bitsandbytes') is not None)"
        return subprocess.run([py, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "True"

    cpu = subprocess.run([py, "-c", cell], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert cpu.returncode == 0 and "setup ran" in cpu.stdout, cpu.stderr[-2000:]
    assert not has_bitsandbytes()  # no GPU: nbhelpers alone
    gpu = subprocess.run([py, "-c", cell], env={**env, "PATH": f"{gpu_bin}:{env['PATH']}"}, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert gpu.returncode == 0 and "setup ran" in gpu.stdout, gpu.stderr[-2000:]
    assert has_bitsandbytes()  # nbhelpers was there already: only bitsandbytes came in


def test_evaluation_is_an_extra_that_only_06_installs():
    """lm-eval's Japanese extra (neologdn compiles from source on 3.12 / 3.13) is 06's alone; CI keeps it."""
    from nbhelpers import notebooks

    assert not [d for d in PROJECT["dependencies"] if canonicalize_name(Requirement(d).name) == "lm-eval"]
    assert PROJECT["optional-dependencies"]["eval"] == [notebooks.EVAL_REQUIREMENT]
    assert notebooks.EVAL_REQUIREMENT in {str(r) for r in requirements_txt()}  # CI installs everything
    for source in notebooks.discover():
        text = source.read_text(encoding="utf-8")
        evaluates = source.stem == "06_eval"
        assert ("nbhelpers[eval] @ git+" in text) == evaluates, source.name
        assert (notebooks.EVAL_REQUIREMENT in text) == evaluates, source.name
        assert ("lm_eval" in text.split("# %% tags=[\"parameters\"]")[0]) == evaluates, source.name


def test_a_missing_lm_eval_is_imported_lazily_and_says_how_to_install_it():
    """Without the extra, nbhelpers.evaluation imports (perplexity works) and lm-eval's use names the extra."""
    import subprocess
    import sys

    probe = """
import sys
sys.modules["lm_eval"] = None  # not installed
import nbhelpers.evaluation as ev, nbhelpers.launch, nbhelpers.runner
assert ev.perplexity and "lm_eval" not in [m for m in sys.modules if sys.modules[m] is not None]
try:
    ev.run_lm_eval("nowhere", tasks=["x"])
except ModuleNotFoundError as err:
    print(err)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lm-eval is not installed" in out.stdout and "pip install 'nbhelpers[eval]'" in out.stdout
