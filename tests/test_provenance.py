"""Stage inputs: a stage refuses what was made from other inputs than the run holds, and names what to rerun."""

from __future__ import annotations

import itertools
import shutil

import pytest

from nbhelpers import config, sources
from nbhelpers import tokenizer as T
from nbhelpers.corpus import build_corpus
from nbhelpers.model import build_model
from nbhelpers.provenance import StageMismatch
from nbhelpers.rundir import RunDir

OVERRIDES = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=4",
             "model.intermediate_size=64", "corpus.block_len=64", "corpus.token_budget=6400",
             "corpus.part_tokens=6400", "corpus.val_blocks=4", "corpus.workers=1", "corpus.min_chars=10"]
TEXTS = list(sources.iter_texts("bundled_prose")) + list(itertools.islice(sources.iter_texts("arithmetic"), 200))


def _tokenizer(out, vocab, texts=TEXTS):
    settings = config.TokenizerConfig(vocab_size=vocab, sample_chars=400_000)
    return T.train_tokenizer(texts, out, settings, progress=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A run as 01, 02 and 03 leave it (a 2000-piece tokenizer, a corpus, a model's final folder), and two other
    tokenizers: 2200 pieces, and 2000 pieces trained on other text."""
    root = tmp_path_factory.mktemp("run")
    run = RunDir.open(root / "run", config.load("smoke", OVERRIDES + ["tokenizer.vocab_size=2000"]))
    tok = _tokenizer(run.tokenizer, 2000)
    build_corpus(run.config, run.tokenizer, run.corpus, progress=False)
    run.record("tokenizer", {})
    run.record("corpus", {})
    final = run.pretrain / "final"
    build_model(run.config.model, len(tok), tokenizer=tok).save_pretrained(final)
    tok.save_pretrained(final)
    run.record("pretrain", {})
    _tokenizer(root / "other", 2200)
    _tokenizer(root / "same", 2000, TEXTS[::2])
    return run, root / "other", root / "same"


def _copy(made, tmp_path, tokenizer=None, overrides=()):
    run, *_ = made
    shutil.copytree(run.root, tmp_path / "run")
    if tokenizer is not None:
        shutil.rmtree(tmp_path / "run" / "tokenizer")
        shutil.copytree(tokenizer, tmp_path / "run" / "tokenizer")
    return RunDir(tmp_path / "run", config.apply_overrides(run.config, list(overrides)))


def test_a_consistent_run_passes(made, tmp_path):
    run = _copy(made, tmp_path)
    for stage in ("tokenizer", "corpus", "pretrain"):
        run.require(stage)


def test_a_corpus_of_another_tokenizer_names_02(made, tmp_path):
    run = _copy(made, tmp_path, tokenizer=made[1], overrides=["tokenizer.vocab_size=2200"])
    with pytest.raises(StageMismatch) as err:
        run.require("corpus")  # what 03 does first
    msg = str(err.value)
    assert "corpus/manifest.json: the corpus was tokenized by another tokenizer" in msg
    assert "2000 pieces" in msg and "2200 pieces" in msg and "Rerun notebooks/02_corpus" in msg


def test_a_corpus_built_with_other_settings_names_02(made, tmp_path):
    run = _copy(made, tmp_path, overrides=["corpus.block_len=32"])
    with pytest.raises(StageMismatch, match=r"corpus.block_len=64 when built, 32 now.*Rerun notebooks/02_corpus"):
        run.require("corpus")


def test_a_model_of_another_vocabulary_names_03(made, tmp_path):
    run = _copy(made, tmp_path, tokenizer=made[1], overrides=["tokenizer.vocab_size=2200"])
    with pytest.raises(StageMismatch, match=r"pretrain/final: the model has a 2000-token vocabulary but .* has 2200 "
                                            r"pieces.*Rerun notebooks/03_pretrain"):
        run.require("pretrain")  # what 04 and 06 do first


def test_a_model_of_another_tokenizer_of_the_same_size_names_03(made, tmp_path):
    run = _copy(made, tmp_path, tokenizer=made[2])
    with pytest.raises(StageMismatch, match=r"trained with another tokenizer .*same size, but piece \d+ is"):
        run.require("pretrain")


def test_a_model_cut_short_names_03(made, tmp_path):
    run = _copy(made, tmp_path)
    weights = run.pretrain / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(StageMismatch, match=r"model.safetensors is [\d,]+ bytes but its header describes .*damaged.*"
                                            r"Rerun notebooks/03_pretrain"):
        run.require("pretrain")


def test_a_stage_run_out_of_order_names_the_notebook_to_run_first(tmp_path):
    from nbhelpers.rundir import StageMissing

    run = RunDir.open(tmp_path / "fresh", config.load("smoke"))
    for stage, notebook in (("tokenizer", "01_tokenizer"), ("corpus", "02_corpus"), ("pretrain", "03_pretrain"),
                            ("sft", "04_instruction_tuning")):
        with pytest.raises(StageMissing, match=rf"not found; run notebooks/{notebook} first"):
            run.require(stage)


def test_checkpoints_trained_from_other_inputs_are_not_resumed_silently(made, tmp_path):
    from nbhelpers import provenance

    run = _copy(made, tmp_path)
    provenance.check_resume(run, "sft")  # the first session records what it trains from
    (run.sft / "checkpoints" / "step_00000135").mkdir(parents=True)
    provenance.check_resume(run, "sft")  # the same inputs: resume
    other = RunDir(run.root, config.apply_overrides(run.config, ["sft.max_examples=1"]))
    with pytest.raises(StageMismatch, match=r"sft/checkpoints holds a training run made from other inputs than now: "
                                            r"sft.max_examples 0 then, 1 now.*move .*sft away to train afresh"):
        provenance.check_resume(other, "sft")
    provenance.check_resume(RunDir(run.root, config.apply_overrides(run.config, ["sft.lr=1e-4", "sft.epochs=5"])),
                            "sft")  # a new schedule continues the same run
    provenance.check_resume(run, "pretrain")
    (run.pretrain / "checkpoints" / "step_00000004").mkdir(parents=True)
    with pytest.raises(StageMismatch, match=r"data_seed 1234 then, 5 now"):
        provenance.check_resume(RunDir(run.root, config.apply_overrides(run.config, ["train.seed=5"])), "pretrain")
