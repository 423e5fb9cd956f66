"""The notebook runner on throwaway notebooks: order, parameters, skipping, and the failure message."""

import json
import subprocess
import sys
import textwrap

import pytest

from nbhelpers import notebooks, runner

HEAD = textwrap.dedent('''\
    # %% [markdown]
    # # test notebook

    # %% tags=["parameters"]
    PROFILE = "smoke"  # smoke
    RUN_DIR = ""  # run directory
    OVERRIDES = []  # overrides

    # %%
    import nbhelpers
    cfg = nbhelpers.config.load(PROFILE, OVERRIDES)
    run = nbhelpers.rundir.RunDir.open(RUN_DIR, cfg)
''')

TOKENIZER_NB = HEAD + textwrap.dedent('''\

    # %%
    (run.tokenizer).mkdir(exist_ok=True)
    (run.tokenizer / "tokenizer.json").write_text("{}")
    (run.tokenizer / "spm.model").write_text("x")
    with open(run.root / "log.txt", "a") as fh:
        fh.write(f"01 {cfg.train.lr}\\n")
    run.record("tokenizer", {"lr_seen": cfg.train.lr})
''')

FAILING_NB = HEAD + textwrap.dedent('''\

    # %%
    x = 1

    # %%
    raise ValueError("the corpus is empty")
''')


@pytest.fixture
def nb_dir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    (d / "01_tokenizer.py").write_text(TOKENIZER_NB, encoding="utf-8")
    (d / "02_corpus.py").write_text(FAILING_NB, encoding="utf-8")
    (d / "README.md").write_text("not a notebook")
    return d


def test_discover_orders_numbered_sources(nb_dir):
    assert [p.name for p in notebooks.discover(nb_dir)] == ["01_tokenizer.py", "02_corpus.py"]
    assert notebooks.parameters_cells(nb_dir / "01_tokenizer.py") == 1


@pytest.mark.slow
def test_run_injects_parameters_skips_complete_stages_and_reports_failures(nb_dir, tmp_path):
    run_dir = tmp_path / "run"
    lines = []
    results = runner.run("smoke", run_dir, only=["01"], overrides=["train.lr=0.125"], notebooks_dir=nb_dir,
                         log=lines.append)
    assert [r.status for r in results] == ["ran"]
    assert (run_dir / "notebooks" / "01_tokenizer.ipynb").exists()
    assert (run_dir / "log.txt").read_text() == "01 0.125\n"
    assert json.loads((run_dir / "metrics.json").read_text())["tokenizer"]["lr_seen"] == 0.125
    assert lines[0].startswith("[1/1] 01_tokenizer: running")

    # same configuration: skipped; --force: rerun; a changed tokenizer setting: rerun
    assert runner.run("smoke", run_dir, only=["01"], overrides=["train.lr=0.125"], notebooks_dir=nb_dir,
                      log=lines.append)[0].status == "skipped"
    assert runner.run("smoke", run_dir, only=["01"], overrides=["train.lr=0.125"], notebooks_dir=nb_dir,
                      force=True, log=lines.append)[0].status == "ran"
    assert runner.run("smoke", run_dir, only=["01"], overrides=["tokenizer.vocab_size=999"], notebooks_dir=nb_dir,
                      log=lines.append)[0].status == "ran"

    with pytest.raises(runner.NotebookFailed) as err:
        runner.run("smoke", run_dir, notebooks_dir=nb_dir, log=lines.append)
    msg = str(err.value)
    assert "02_corpus failed in cell" in msg and "ValueError: the corpus is empty" in msg
    assert "raise ValueError" in msg and str(run_dir / "notebooks" / "02_corpus.ipynb") in msg


def test_bad_only_and_bad_override_fail_before_running(nb_dir, tmp_path):
    with pytest.raises(ValueError, match="--only 07"):
        runner.run("smoke", tmp_path / "r", only=["07"], notebooks_dir=nb_dir)
    from nbhelpers.config import ConfigError

    with pytest.raises(ConfigError, match="train.lrr"):
        runner.run("smoke", tmp_path / "r2", overrides=["train.lrr=1"], notebooks_dir=nb_dir)
    assert not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_cli_exit_code_and_message(nb_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke", "--run-dir",
                           str(tmp_path / "r"), "--notebooks", str(nb_dir)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "[1/2] 01_tokenizer: done" in proc.stdout
    assert "error: 02_corpus failed in cell" in proc.stderr and "the corpus is empty" in proc.stderr


def test_cli_help_documents_run():
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("--profile", "--run-dir", "--only", "--set", "--force", "key=value"):
        assert word in proc.stdout.lower() or word in proc.stdout


def test_notebook_twins_sync(nb_dir):
    stale = notebooks.sync(nb_dir, check=True)
    assert len(stale) == 4  # both sources get the badge/setup template, both twins are missing
    notebooks.sync(nb_dir)
    assert notebooks.sync(nb_dir, check=True) == []
    nb = json.loads((nb_dir / "01_tokenizer.ipynb").read_text())
    assert all(c.get("outputs", []) == [] for c in nb["cells"])
