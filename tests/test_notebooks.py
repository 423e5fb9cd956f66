"""The whole pipeline: papermill runs every numbered notebook in order on the smoke profile."""

import json
import os
import subprocess
import sys

import pytest

from nbhelpers import hub, notebooks
from nbhelpers.rundir import STAGES

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

NOTEBOOK_STAGE = {nb: stage for stage, (nb, _, _) in STAGES.items()}
FAKE_TOKEN = "hf_" + "SmokeRunFakeToken0123456789abcdefXYZ"  # set for the run; must appear in no output


def test_every_notebook_has_one_parameters_cell_and_a_synced_twin():
    sources = notebooks.discover()
    assert sources, "no numbered notebooks found"
    for source in sources:
        assert notebooks.parameters_cells(source) == 1, source.name
    assert notebooks.sync(check=True) == [], "run `python -m nbhelpers notebooks` and commit the .ipynb files"


def test_papermill_reads_every_parameter_of_every_notebook():
    """A parameter line papermill cannot parse (a second '=' in its comment) makes it warn 'unknown parameter'."""
    import re

    from papermill.translators import PythonTranslator

    for source in notebooks.discover():
        cell = next(c for c in notebooks.to_notebook(source).cells if "parameters" in c.metadata.get("tags", []))
        assigned = re.findall(r"^([A-Z_][A-Z0-9_]*) =", cell.source, flags=re.M)
        assert {"PROFILE", "RUN_DIR", "OVERRIDES"} <= set(assigned), source.name
        assert [p.name for p in PythonTranslator.inspect(cell)] == assigned, source.name


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke")
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_TOKEN": FAKE_TOKEN})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_dir, proc.stdout, proc.stderr


def test_smoke_pipeline_runs_every_notebook_and_records_each_stage(smoke_run):
    run_dir, out, _ = smoke_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for source in notebooks.discover():
        assert (run_dir / "notebooks" / f"{source.stem}.ipynb").exists()
        stage = NOTEBOOK_STAGE.get(source.stem)
        if stage:
            assert stage in metrics, f"{source.stem} did not record its figures"
            for rel in STAGES[stage][2]:
                assert (run_dir / rel).exists(), rel


def test_06_writes_the_report_card_and_both_model_cards(smoke_run):
    run_dir, _, _ = smoke_run
    report = (run_dir / "eval" / "report.md").read_text(encoding="utf-8")
    for heading in ("## Configuration", "## Data", "## Training", "## Evaluation", "## Sample answers"):
        assert heading in report
    assert "| profile | smoke |" in report and "| pretrain |" in report and "| sft |" in report
    for stage in ("pretrain", "sft"):
        card = (run_dir / stage / "final" / "README.md").read_text(encoding="utf-8")
        assert card.startswith("---\n") and "language: ja" in card and "library_name: transformers" in card
        assert f"| {stage} | corpus_val |" in card  # 06's evaluation, refreshed into the card


def test_executed_notebooks_hold_no_secret(smoke_run):
    run_dir, out, _ = smoke_run
    assert FAKE_TOKEN not in out
    for executed in sorted((run_dir / "notebooks").glob("*.ipynb")):
        assert hub.find_secrets(executed, FAKE_TOKEN) == [], executed.name


def test_the_run_and_its_notebooks_print_no_warnings(smoke_run):
    """What a user reads (the terminal, the saved notebooks) carries no library or kernel warnings."""
    run_dir, out, err = smoke_run
    assert "warn" not in (out + err).lower(), out + err
    for executed in sorted((run_dir / "notebooks").glob("*.ipynb")):
        for cell in json.loads(executed.read_text())["cells"]:
            for output in cell.get("outputs", []):
                if output.get("name") == "stderr":
                    text = "".join(output.get("text", ""))
                    assert "warn" not in text.lower(), f"{executed.name}: {text}"


def test_second_run_skips_complete_stages(smoke_run):
    run_dir, _, _ = smoke_run
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke", "--run-dir", str(run_dir),
                           "--only", "01"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "skipped" in proc.stdout


def test_03_trained_through_several_parts_of_the_stream_with_few_on_disk(smoke_run):
    """One run of 03 reads every part its steps need (the producer makes them meanwhile); few stay on disk."""
    from pathlib import Path

    from nbhelpers import config

    run_dir, _, _ = smoke_run
    data = json.loads((run_dir / "pretrain" / "data_stats.json").read_text())
    assert data["parts_read"] >= 4 and data["producer_restarts"] == 0, data
    assert Path(data["parts_dir"]).is_relative_to(run_dir / "corpus")  # no scratch on a local machine: the run dir
    on_disk = list(Path(data["parts_dir"]).glob("part-*.json"))
    assert len(on_disk) <= config.load("smoke").corpus.parts_ahead + 2, on_disk


def test_the_tuned_model_chats_from_its_template_the_cli_and_05s_scripted_turns(smoke_run):
    """sft/final's chat template gives the collator's prompt for every bundled prompt on the run's real tokenizer;
    the CLI answers on stdin; 05 answered its scripted turns in one conversation."""
    from transformers import AutoTokenizer

    from nbhelpers import config, sft
    from nbhelpers.collator import prompt_ids

    run_dir, _, _ = smoke_run
    cfg = config.from_dict(json.loads((run_dir / "config.json").read_text()))
    run_tok, final_tok = (AutoTokenizer.from_pretrained(p) for p in (run_dir / "tokenizer", run_dir / "sft" / "final"))
    for ex in sft.load_source("bundled_instructions", cfg.sft):
        out = final_tok.apply_chat_template([{"role": "user", "content": ex.prompt}], add_generation_prompt=True)
        ids = list(out["input_ids"]) if isinstance(out, dict) or hasattr(out, "keys") else list(out)
        assert ids == prompt_ids(run_tok, ex.prompt, cfg.sft.template, cfg.sft.prompt_prefix)[0], ex.where
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "chat", "--run-dir", str(run_dir), "--temperature", "0"],
                          input="日本の首都はどこですか？\n/reset\n1足す1は？\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("model> ") == 2 and "(conversation reset)" in proc.stdout
    turns = json.loads((run_dir / "metrics.json").read_text())["chat"]["conversation"]
    assert [t["turn"] for t in turns] == [1, 2, 3] and all(isinstance(t["model"], str) for t in turns)


@pytest.fixture
def finished_copy(smoke_run, tmp_path):
    """A copy of the finished smoke run: the tests below change it, the other tests share the original."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run[0], run_dir, symlinks=True)
    return run_dir


def test_a_read_only_finished_run_chats_and_06_names_where_it_would_write(finished_copy, read_only):
    """A finished run on a read-only disk: 05 runs (figures shown, not recorded); 06 stops before scoring."""
    import hashlib

    def tree():
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(finished_copy.rglob("*"))
                if p.is_file()}

    before = tree()
    chat = subprocess.run([*read_only([finished_copy]), sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke",
                           "--run-dir", str(finished_copy), "--only", "05", "--force"],
                          capture_output=True, text=True, timeout=900)
    assert chat.returncode == 0, chat.stdout + chat.stderr
    assert "is read-only: executed notebooks go to" in chat.stdout
    evaluation = subprocess.run([*read_only([finished_copy]), sys.executable, "-m", "nbhelpers", "run", "--profile",
                                 "smoke", "--run-dir", str(finished_copy), "--only", "06", "--force"],
                                capture_output=True, text=True, timeout=900)
    assert evaluation.returncode == 1
    assert f"06_eval writes {finished_copy / 'eval'}" in evaluation.stderr and "read-only" in evaluation.stderr
    assert tree() == before


def test_04_stopped_by_the_time_budget_ends_cleanly(finished_copy):
    import shutil

    shutil.rmtree(finished_copy / "sft")  # tuning from its start: the finished run's checkpoints would resume at the end
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke", "--run-dir",
                           str(finished_copy), "--only", "04,05", "--force", "--set", "train.max_minutes=0.001"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "04_instruction_tuning: stopped at step 1 of" in proc.stdout and "05_chat" not in proc.stdout
    executed = json.loads((finished_copy / "notebooks/04_instruction_tuning.ipynb").read_text())
    assert not [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert "stopped at step 1 of" in json.dumps(executed["cells"][-1]["outputs"])
    assert json.loads((finished_copy / "sft/stopped.json").read_text())["step"] == 1
