"""CI's own scripts: the Python 3.13 job, the interpreter finder, and the torch_xla pair Kaggle's TPU image ships."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from nbhelpers import xla

CI = Path(__file__).resolve().parent.parent / ".ci"


def _pins(script: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", script.read_text(encoding="utf-8"), flags=re.M))


def test_the_xla_suite_runs_the_pair_kaggles_tpu_image_ships():
    pins = _pins(CI / "xla.sh")
    assert (pins["TORCH"], pins["TORCH_XLA"]) == xla.KAGGLE_TPU_PAIR == ("2.8.0", "2.8.0")
    assert pins["PYTHON_VERSION"] == "3.12"  # the image's BASE_IMAGE=python:3.12
    assert ".".join(pins["TORCH_XLA"].split(".")[:2]) in xla.SUPPORTED_RELEASES
    assert "torch_xla==2.8.0" in xla.MISSING_MESSAGE


def test_ci_runs_the_unit_tests_and_the_smoke_run_under_python_313():
    run = (CI / "run").read_text(encoding="utf-8")
    job = (CI / "py313.sh").read_text(encoding="utf-8")
    assert "bash .ci/py313.sh" in run
    assert "bash .ci/python.sh 3.13" in job
    assert 'pytest -q -m "not xla and not gpu and not notebooks"' in job
    assert "nbhelpers run --profile smoke" in job and "--only 01,02,03" in job
    # each large venv is removed before the next one is made
    assert run.index("rm -rf .venv-ci ") < run.index("bash .ci/py313.sh") < run.index("bash .ci/xla.sh")
    assert job.rstrip().endswith('rm -rf "$venv"')


def test_the_interpreter_finder_returns_a_working_python_of_that_version():
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = subprocess.run(["bash", str(CI / "python.sh"), want], capture_output=True, text=True, check=True)
    path = found.stdout.strip()
    version = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == want


def test_the_interpreter_finder_says_what_to_install_when_there_is_none():
    missing = subprocess.run(["bash", str(CI / "python.sh"), "2.5"], capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no Python 2.5 here: install it (pyenv install 2.5)" in missing.stderr


def test_ci_installs_what_the_web_chat_browser_test_needs():
    """The browser test skips without these: CI installs them so it runs there (tests/test_chat.py)."""
    import tomllib

    run = (CI / "run").read_text(encoding="utf-8")
    assert "chromium chromium-driver" in run
    extra = tomllib.loads((CI.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert all(f'"{req}"' in run for req in extra["web"])
