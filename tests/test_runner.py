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


# 03 as its training cell ends when the time budget runs out: the checkpoint saved, the last cell reports it
STOPPED_NB = HEAD + textwrap.dedent('''\

    # %%
    status, step, total = "time_budget", 3, 8

    # %%
    if status == "time_budget":
        print(run.stop("pretrain", step, total))
''')

LATER_NB = HEAD + textwrap.dedent('''\

    # %%
    (run.root / "04_ran").write_text("yes")
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


@pytest.mark.parametrize("only", [",", " ", ", ,"])
def test_only_that_names_no_notebook_is_refused(nb_dir, tmp_path, capsys, only):
    from nbhelpers.__main__ import main

    assert main(["run", "--profile", "smoke", "--run-dir", str(tmp_path / "r"), "--notebooks", str(nb_dir),
                 "--only", only]) == 1
    assert "names no notebook" in capsys.readouterr().err and not (tmp_path / "r").exists()  # all six ran
    with pytest.raises(ValueError, match="names no notebook"):
        runner.run("smoke", tmp_path / "r", only=[" "], notebooks_dir=nb_dir)


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
    for word in ("--profile", "--run-dir", "--only", "--set", "--force", "key=value", "exit status", "75",
                 "NBHELPERS_PLATFORM_ROOT"):
        assert word in proc.stdout.lower() or word in proc.stdout


@pytest.mark.slow
def test_a_budget_stop_ends_the_run_with_its_own_exit_status(tmp_path):
    """03 stopped by the time budget: papermill exits 0 (cells succeed), the runner stops there and exits 75."""
    d = tmp_path / "notebooks"
    d.mkdir()
    (d / "01_tokenizer.py").write_text(TOKENIZER_NB, encoding="utf-8")
    (d / "03_pretrain.py").write_text(STOPPED_NB, encoding="utf-8")
    (d / "04_instruction_tuning.py").write_text(LATER_NB, encoding="utf-8")
    run_dir = tmp_path / "run"
    notebooks.sync(d)
    proc = subprocess.run([sys.executable, "-m", "papermill", str(d / "03_pretrain.ipynb"), str(tmp_path / "o.ipynb"),
                           "-p", "RUN_DIR", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # papermill: a budget stop is no failure
    assert "stopped at step 3 of 8" in (tmp_path / "o.ipynb").read_text()

    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke", "--run-dir", str(run_dir),
                           "--notebooks", str(d)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == runner.EXIT_STOPPED == 75, proc.stdout + proc.stderr
    assert "[2/3] 03_pretrain: stopped at step 3 of 8 (time budget; checkpoint saved): run the " \
           "notebook again / save a new version to continue" in proc.stdout
    assert "stopped, not failed" in proc.stderr and "Traceback" not in proc.stderr
    assert not (run_dir / "04_ran").exists()  # the later notebooks need 03's result: not run
    # a failure still fails, with 1
    (d / "03_pretrain.py").write_text(FAILING_NB, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke", "--run-dir", str(run_dir),
                           "--notebooks", str(d), "--only", "03"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "03_pretrain failed in cell" in proc.stderr
    assert not (run_dir / "pretrain/stopped.json").exists()  # the earlier session's stop is not this one's


@pytest.mark.slow
def test_a_failed_invocation_leaves_config_json_as_it_was(nb_dir, tmp_path):
    run_dir = tmp_path / "run"
    runner.run("smoke", run_dir, only=["01"], notebooks_dir=nb_dir, log=lambda _: None)
    before = (run_dir / "config.json").read_bytes()
    stamp = (run_dir / "config.json").stat().st_mtime_ns
    from nbhelpers.config import ConfigError

    with pytest.raises(ConfigError):  # a bad override
        runner.run("smoke", run_dir, overrides=["train.lrr=1"], notebooks_dir=nb_dir, log=lambda _: None)
    with pytest.raises(runner.NotebookFailed):  # a notebook that raises, with another configuration
        runner.run("smoke", run_dir, only=["02"], overrides=["corpus.block_len=64"], notebooks_dir=nb_dir,
                   log=lambda _: None)
    assert (run_dir / "config.json").read_bytes() == before
    assert (run_dir / "config.json").stat().st_mtime_ns == stamp


def test_notebook_twins_sync(nb_dir):
    stale = notebooks.sync(nb_dir, check=True)
    assert len(stale) == 4  # both sources get the badge/setup template, both twins are missing
    notebooks.sync(nb_dir)
    assert notebooks.sync(nb_dir, check=True) == []
    nb = json.loads((nb_dir / "01_tokenizer.ipynb").read_text())
    assert all(c.get("outputs", []) == [] for c in nb["cells"])
