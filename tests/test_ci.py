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


def test_ci_runs_the_release_check():
    run = (CI / "run").read_text(encoding="utf-8")
    assert "python -m nbhelpers release-check" in run
    assert run.index("python -m nbhelpers release-check") < run.index('python -m pytest -q\n')


def test_the_release_check_agrees_on_this_checkout():
    from nbhelpers import release

    found = release.checks()
    assert [c.name for c in found] == ["version", "REPO_REF", "tag", "badges", "twins"]
    assert all(c.ok for c in found), "\n".join(c.line() for c in found)


def test_the_release_check_finds_each_disagreement(tmp_path):
    """A tag on another version, a REPO_REF that is not v + the version, badges of another ref, a stale twin."""
    import shutil

    from nbhelpers import release

    root = tmp_path / "repo"
    shutil.copytree(CI.parent / "notebooks", root / "notebooks")
    shutil.copy(CI.parent / "pyproject.toml", root / "pyproject.toml")
    (root / "nbhelpers").mkdir()
    (root / "nbhelpers/__init__.py").write_text('__version__ = "0.0.9"\n')
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "0.0.9"], check=True)
    subprocess.run([*git, "tag", "v0.1.0"], check=True)  # the tag sits on a commit of another version

    def failed(**kw) -> dict[str, str]:
        return {c.name: c.line() for c in release.checks(root, **kw) if not c.ok}

    assert list(failed()) == ["tag"] and "git tag v0.1.0 holds version 0.0.9" in failed()["tag"]
    assert "git tag -f v0.1.0" in failed()["tag"]
    wrong = failed(version="0.2.0", ref="v0.2.0")  # pyproject says 0.1.0; badges and setup cells name v0.1.0
    assert {"version", "badges"} <= set(wrong) and "01_tokenizer.py" in wrong["badges"]
    assert "REPO_REF" in failed(ref="main")
    twin = root / "notebooks/05_chat.ipynb"
    twin.write_text(twin.read_text(encoding="utf-8").replace("05 ·", "05 -"), encoding="utf-8")
    assert "05_chat.ipynb" in failed()["twins"]
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "release-check", "--root", str(root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "release check: 2 disagreement(s)" in proc.stdout
