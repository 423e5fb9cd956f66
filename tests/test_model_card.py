"""Model cards, the report card and the licence table, all written from a run's records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from run_records import make_run

from nbhelpers import licences, model_card, report, sources


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("card") / "run")


def _split(card: str) -> tuple[dict, str]:
    _, front, body = card.split("---\n", 2)
    return yaml.safe_load(front), body


def test_every_registry_source_and_instruction_set_has_a_checked_licence():
    for name, src in sources.REGISTRY.items():
        lic = licences.licence_of(name)
        assert lic is not licences.UNKNOWN and lic.evidence, name
        if src.kind == "hub":
            assert lic.dataset == src.location, name
    assert licences.licence_of("files:mine/*.jsonl") is licences.UNKNOWN
    assert licences.model_licence(["wikipedia_ja", "c4_ja"]) == "cc-by-sa-4.0"
    assert licences.model_licence(["bundled_prose", "arithmetic"]) == "apache-2.0"
    assert licences.model_licence(["c4_ja", "jamard"]) == "other"


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_card_metadata_and_sections_come_from_the_records(run, stage):
    meta, body = _split(model_card.render_card(run, stage, repo_id="me/model"))
    assert meta["language"] == "ja" and meta["pipeline_tag"] == "text-generation"
    assert meta["library_name"] == "transformers" and meta["license"] == "cc-by-sa-4.0"
    assert {"wikimedia/wikipedia", "allenai/c4", "hpprc/jawiki-books", "elyza/JaMARD"} <= set(meta["datasets"])
    assert ("kunishou/databricks-dolly-15k-ja" in meta["datasets"]) == (stage == "sft")
    arch = json.loads((run / stage / "final" / "config.json").read_text())
    assert f"| hidden_size | {arch['hidden_size']} |" in body and f"| num_hidden_layers | {arch['num_hidden_layers']} |" in body
    assert "| pretrain | 30 | 19,200 | 0.833 | 2 |" in body  # 1800 s + 1200 s over two sessions
    assert ("| sft | 8 | 2,048 |" in body) == (stage == "sft")
    assert "| wikipedia_ja | 0.5 | 0.52 | CC BY-SA 3.0 and GFDL" in body and "| jamard | 0.1 | 0.1 | MIT |" in body
    assert "## Evaluation" in body and f"| {stage} | corpus_val | 1,234 |" in body
    assert "## Limitations" in body and "from_pretrained(\"me/model\")" in body
    if stage == "sft":
        assert "nbhelpers.generate.generate" in body and "### 指示:" in body and "template.format" in body


def test_card_before_06_says_evaluation_is_pending_and_06_refreshes_it(tmp_path):
    run = make_run(tmp_path / "run", evaluated=False)
    paths = model_card.write_cards(run)
    assert [p.parent.parent.name for p in paths] == ["pretrain", "sft"]
    assert "Not evaluated yet" in paths[0].read_text()
    make_run(tmp_path / "run")  # 06 wrote results.json
    model_card.write_cards(run)
    assert "| pretrain | corpus_val | 1,234 | 96.5 | 2.405 |" in paths[0].read_text()


def test_a_stage_without_final_names_the_notebook(tmp_path):
    run = make_run(tmp_path / "run", stages=("pretrain",), evaluated=False)
    with pytest.raises(FileNotFoundError, match="04_instruction_tuning"):
        model_card.write_card(run, "sft")
    assert model_card.write_cards(run) == [run / "pretrain" / "final" / "README.md"]


def test_report_card_holds_every_section(run):
    text = report.write_report(run).read_text()
    for heading in ("## Configuration", "## Data", "## Training", "## Evaluation", "## Sample answers"):
        assert heading in text
    assert "| profile | smoke |" in text and "| parameters | 54,321 |" in text
    assert "| pretrain | 30 | 19,200 | 0.833 | 2 | 9.5 | 5.5 | val: 8.25 -> 4.75 | 1.875 |" in text
    assert "instructions 3.5 -> 1.25" in text
    assert "| pretrain | corpus_val | 1,234 | 96.5 | 2.405 |" in text and "|jcommonsenseqa|1.1|none|3|acc|0.2125|" in text
    assert "| 日本の首都は？ | 東京東京東京 | 東京です。 |" in text


def test_a_torn_metrics_line_and_a_missing_results_file_read_as_what_there_is(tmp_path):
    run = make_run(tmp_path / "run", stages=("pretrain",), evaluated=False)
    with open(run / "pretrain" / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"kind": "train", "step": 3')
    text = report.render_report(run)
    assert "Not evaluated yet (run 06)" in text and "| pretrain | 30 |" in text


def test_sample_answers_from_saved_models(run):
    from loop_tiny import tiny_tokenizer

    rows = report.sample_answers({"pretrain": run / "pretrain" / "final", "sft": run / "sft" / "final"},
                                 tiny_tokenizer(), ["日本の首都は"], template="{prompt}", prefix="none",
                                 max_new_tokens=3)
    assert list(rows[0]) == ["prompt", "pretrain", "sft"] and rows[0]["prompt"] == "日本の首都は"
    assert all(isinstance(rows[0][m], str) for m in ("pretrain", "sft"))


def test_a_read_only_final_gets_its_card_beside_the_results(tmp_path, read_only):
    """A finished stage linked from a Kaggle input is read-only (EROFS): its card goes to eval/ instead."""
    run = make_run(tmp_path / "run", stages=("pretrain",))
    final = run / "pretrain" / "final"
    before = sorted(p.name for p in final.iterdir())
    code = "import sys; from nbhelpers import model_card; print(model_card.write_cards(sys.argv[1]))"
    proc = subprocess.run([*read_only([final]), sys.executable, "-c", code, str(run)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "is read-only" in proc.stdout and "pretrain_README.md" in proc.stdout
    assert "## Evaluation" in (run / "eval" / "pretrain_README.md").read_text()
    assert sorted(p.name for p in final.iterdir()) == before


def _code_blocks(card: str) -> list[str]:
    return [block.split("\n", 1)[1] for block in card.split("```python")[1:] for block in [block.split("```")[0]]]


@pytest.mark.parametrize("chat_template", [False, True], ids=["format-string", "chat-template"])
def test_the_cards_prompt_examples_run_as_written(tmp_path, chat_template, capsys):
    """Each Python block of the sft card, run with the repository name pointing at the saved folder."""
    run = make_run(tmp_path / "run", stages=("pretrain", "sft"), evaluated=False)
    final = run / "sft" / "final"
    if chat_template:  # what the chat-template work writes: the tuning format, EOS first
        cfg = json.loads((final / "tokenizer_config.json").read_text())
        cfg["chat_template"] = ("{{ eos_token }}{% for m in messages %}### 指示:\n{{ m['content'] }}\n\n### 応答:\n"
                                "{% endfor %}")
        (final / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False))
    card = model_card.render_card(run, "sft", repo_id=str(final))
    assert ("apply_chat_template" in card) == chat_template and ("template.format" in card) != chat_template
    blocks = _code_blocks(card)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace("max_new_tokens=128", "max_new_tokens=4"), "card", "exec"), namespace)
    assert isinstance(namespace["answer"], str) and capsys.readouterr().out.count("\n") >= 2


def test_the_base_model_cards_example_runs_as_written(tmp_path, capsys):
    run = make_run(tmp_path / "run", stages=("pretrain",), evaluated=False)
    blocks = _code_blocks(model_card.render_card(run, "pretrain", repo_id=str(run / "pretrain" / "final")))
    assert len(blocks) == 1
    exec(compile(blocks[0].replace("max_new_tokens=40", "max_new_tokens=4"), "card", "exec"), {})
    assert capsys.readouterr().out.strip()
