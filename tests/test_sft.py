"""Instruction data validation, held-out split, replay batches and the derived training configuration."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from char_tokenizer import char_tokenizer as make_char_tokenizer
from transformers import PreTrainedTokenizerFast

from nbhelpers import config, sft
from nbhelpers.collator import IGNORE, Collator, TemplateError
from nbhelpers.sft import Example, InstructionDataError, SFTBatches

CHARS = "QAab12xyz"


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of CHARS."""
    return make_char_tokenizer(CHARS)


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"prompt": "ab", "target": "12"})


def test_reads_valid_jsonl(tmp_path):
    path = write(tmp_path, [GOOD, "", json.dumps({"prompt": "", "target": "x", "extra": 1})])
    got = sft.read_jsonl(path)
    assert [(e.prompt, e.target) for e in got] == [("ab", "12"), ("", "x")]
    assert got[1].where == f"{path} line 3"


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not JSON"),
    (json.dumps({"target": "x"}), "line 2: missing field 'prompt'"),
    (json.dumps({"prompt": "x"}), "line 2: missing field 'target'"),
    (json.dumps({"prompt": 3, "target": "x"}), "line 2: field 'prompt' must be a string, got int"),
    (json.dumps({"prompt": "x", "target": ["y"]}), "line 2: field 'target' must be a string, got list"),
    (json.dumps({"prompt": "x", "target": "  "}), "line 2: empty target"),
    (json.dumps(["x", "y"]), "line 2: expected a JSON object"),
])
def test_invalid_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path, [GOOD, line, GOOD])
    with pytest.raises(InstructionDataError) as err:
        sft.read_jsonl(path)
    assert f"{path} {message}" in str(err.value)
    assert "nothing was trained" in str(err.value)


def test_skip_mode_leaves_invalid_lines_out_and_counts_them(tmp_path):
    path = write(tmp_path, [GOOD, "{bad", json.dumps({"prompt": "x", "target": ""}), GOOD])
    errors: list[str] = []
    got = sft.read_jsonl(path, on_invalid="skip", errors=errors)
    assert len(got) == 2 and len(errors) == 2
    assert "line 2" in errors[0] and "line 3" in errors[1]


def test_all_errors_listed_at_once(tmp_path):
    path = write(tmp_path, ["{bad"] * 7)
    with pytest.raises(InstructionDataError, match=r"7 invalid example\(s\)(.|\n)*and 2 more"):
        sft.read_jsonl(path)


def test_not_utf8_is_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"prompt": "\xff", "target": "a"}\n')
    with pytest.raises(InstructionDataError, match="line 2: not UTF-8"):
        sft.read_jsonl(path)


def test_load_instructions_splits_per_source_and_checks_template(tmp_path):
    path = write(tmp_path, [json.dumps({"prompt": f"p{i}", "target": f"t{i}"}) for i in range(40)])
    cfg = config.SFTConfig(data=(f"files:{path}", "arithmetic_instructions"), arithmetic_pairs=60,
                           heldout_fraction=0.1)
    data = sft.load_instructions(cfg)
    assert data.counts[f"files:{path}"] == {"examples": 40, "train": 36, "heldout": 4}
    assert data.counts["arithmetic_instructions"] == {"examples": 60, "train": 54, "heldout": 6}
    assert {e.prompt for e in data.train}.isdisjoint({e.prompt for e in data.heldout})
    assert all(e.answer is not None for e in data.heldout if e.source == "arithmetic_instructions")
    assert sft.load_instructions(cfg).heldout == data.heldout  # seeded: the same split every time
    with pytest.raises(TemplateError, match="response marker"):
        sft.load_instructions(dataclasses.replace(cfg, template="### 指示:\n{prompt}\n"))
    with pytest.raises(InstructionDataError, match="no files match"):
        sft.load_instructions(dataclasses.replace(cfg, data=(f"files:{tmp_path}/none*.jsonl",)))


def test_bad_file_stops_loading(tmp_path):
    path = write(tmp_path, [GOOD, json.dumps({"prompt": "x"})])
    with pytest.raises(InstructionDataError, match="line 2: missing field 'target'"):
        sft.load_instructions(config.SFTConfig(data=(f"files:{path}",)))


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'kunishou/databricks-dolly-15k-ja' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg = config.SFTConfig(data=("hub:kunishou/databricks-dolly-15k-ja#instruction+input>output",))
    with pytest.raises(InstructionDataError, match=r"kunishou/databricks-dolly-15k-ja.*could not be loaded.*files:PATH"):
        sft.load_instructions(cfg)


def test_hub_rows_are_mapped_and_validated(monkeypatch):
    import datasets

    rows = [{"instruction": "足して", "input": "1と2", "output": "3"},
            {"instruction": "答えて", "input": "", "output": "はい"},
            {"instruction": "空", "input": "", "output": ""}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    src = "hub:someone/ja-instruct#instruction+input>output"
    with pytest.raises(InstructionDataError, match="someone/ja-instruct row 2: empty target"):
        sft.load_source(src, config.SFTConfig())
    got = sft.load_source(src, config.SFTConfig(on_invalid="skip"))
    assert [(e.prompt, e.target) for e in got] == [("足して\n\n1と2", "3"), ("答えて", "はい")]
    with pytest.raises(InstructionDataError, match=r"no field\(s\) \['response'\]"):
        sft.load_source("hub:someone/ja-instruct#instruction>response", config.SFTConfig())
    with pytest.raises(InstructionDataError, match="text corpus, not an instruction dataset"):
        sft.load_source("wikipedia_ja", config.SFTConfig())


def rows_for(n: int, tok=None) -> list[dict]:
    tok = tok or char_tokenizer()
    exs = [Example(["a", "ab", "xyz"][i % 3], ["1", "12", "2"][i % 3], "t") for i in range(n)]
    rows, stats = sft.encode(tok, exs, config.SFTConfig(template="Q{prompt}A", response_marker="A", max_length=16))
    assert stats.examples == n and not stats.dropped
    return rows


def blocks(n: int, length: int = 12) -> np.ndarray:
    return (np.arange(n * length).reshape(n, length) % 7 + 4).astype(np.uint16)


def is_replay(row_labels: torch.Tensor) -> bool:
    return row_labels[0].item() != IGNORE  # instruction rows start with a masked prompt, replay rows do not


def test_replay_ratio_is_realised_in_rows_and_tokens():
    rows = rows_for(50)
    col = Collator(pad_id=1, max_length=16)
    src = SFTBatches(rows, 8, col, replay=blocks(30), replay_ratio=0.2, seed=1)
    batches = [src.batch(i) for i in range(40)]
    n_replay = sum(is_replay(b["labels"][r]) for b in batches for r in range(b["labels"].shape[0]))
    assert n_replay == 64  # exactly 0.2 of 320 rows, spread over batches of 1 or 2
    assert all(b["input_ids"].shape[0] == 8 for b in batches)
    trained = {True: 0, False: 0}
    for b in batches:
        for r in range(8):
            trained[is_replay(b["labels"][r])] += int((b["labels"][r] != IGNORE).sum())
    share = trained[True] / (trained[True] + trained[False])
    assert 0.15 < share < 0.25  # replay rows are as long as a mean response: tokens follow the row ratio
    assert len(src) == 8  # ceil(50 / (8 * 0.8)): one pass over the instruction rows


def test_batches_are_pure_and_cover_each_row_once_per_pass():
    rows = rows_for(24)
    col = Collator(pad_id=1, max_length=16, fixed_length=True)
    a = SFTBatches(rows, 4, col, replay=blocks(10), replay_ratio=0.25, seed=5)
    b = SFTBatches(rows, 4, col, replay=blocks(10), replay_ratio=0.25, seed=5)
    for i in [7, 0, 3, 30, 7]:
        for key in ("input_ids", "labels", "attention_mask"):
            assert torch.equal(a.batch(i)[key], b.batch(i)[key])  # any order, any instance: same batch
        assert a.batch(i)["input_ids"].shape == (4, 16)  # fixed length: static shapes
    seen = [k for i in range(len(a)) for k in a.layout(i)[0]]
    assert sorted(seen[:24]) == list(range(24))  # the first pass visits every instruction row once
    assert a.layout(100) != SFTBatches(rows, 4, col, replay=blocks(10), replay_ratio=0.25, seed=6).layout(100)


def test_ranks_read_disjoint_rows():
    rows = rows_for(32)
    col = Collator(pad_id=1, max_length=16)
    parts = [SFTBatches(rows, 4, col, seed=2, rank=r, world_size=2) for r in range(2)]
    assert len(parts[0]) == 4
    got = [set(k for i in range(len(p)) for k in p.layout(i)[0]) for p in parts]
    assert got[0].isdisjoint(got[1]) and got[0] | got[1] == set(range(32))


def test_no_replay_and_pure_corpus_eval():
    rows = rows_for(10)
    col = Collator(pad_id=1, max_length=16)
    plain = SFTBatches(rows, 4, col, shuffle=False)
    assert not any(is_replay(lab) for i in range(len(plain)) for lab in plain.batch(i)["labels"])
    val = blocks(9)
    corpus = sft.corpus_eval_batches(val, 4, col, limit=5)
    assert len(corpus) == 2  # 9 blocks make two full batches of 4
    first = corpus.batch(0)
    assert torch.equal(first["input_ids"][:, :12], torch.from_numpy(val[:4].astype(np.int64)))
    assert torch.equal(first["labels"][:, :12], first["input_ids"][:, :12])  # every corpus token is scored
    assert (first["labels"][:, 12:] == IGNORE).all() and (first["attention_mask"][:, 12:] == 0).all()
    with pytest.raises(ValueError, match="pre-training blocks"):
        SFTBatches(rows, 4, col, replay_ratio=0.3)


def test_train_config_is_derived_from_sft():
    cfg = config.load("smoke")
    tc = sft.train_config(cfg, steps_per_epoch=50)
    assert tc.lr == cfg.sft.lr and tc.micro_batch == cfg.sft.micro_batch
    assert tc.max_steps == int(np.ceil(cfg.sft.epochs * 50 / cfg.sft.grad_accum))
    assert tc.backend == cfg.train.backend and tc.max_minutes == cfg.train.max_minutes
    assert sft.use_fixed_length(cfg, "xla") and not sft.use_fixed_length(cfg, "cpu")


@pytest.mark.parametrize("text, answer", [("12 + 3 = 15。 答えは15です。", 15), ("答えは 1,200です", 1200),
                                          ("まず 3 と 4 で 7", 7), ("わかりません", None)])
def test_extract_answer(text, answer):
    assert sft.extract_answer(text) == answer


def test_response_figures_count_eos_endings_and_exact_answers():
    from test_generate import CHAIN, bigram_model  # the controllable tiny model: every answer is "12" then EOS

    tok = char_tokenizer()
    cfg = config.SFTConfig(template="Q{prompt}A", response_marker="A", max_new_tokens=8, eval_prompts=10)
    held = [Example("ab", "12", "bundled"), Example("a", "x", "bundled"),
            Example("xy", "12", "arithmetic_instructions", answer=12),
            Example("yz", "13", "arithmetic_instructions", answer=13)]
    out = sft.response_figures(bigram_model(tok, CHAIN), tok, held, cfg)
    assert out["figures"]["eos_share"] == 1.0 and out["figures"]["eos_prompts"] == 4
    assert out["figures"]["arithmetic_accuracy"] == 0.5 and out["figures"]["arithmetic_prompts"] == 2
    assert [s["response"] for s in out["samples"]] == ["12"] * 4
    never_ends = bigram_model(tok, {"A": "1", "1": "1"})
    assert sft.response_figures(never_ends, tok, held, cfg)["figures"]["eos_share"] == 0.0


def test_interleave_takes_sources_in_turn():
    exs = [Example(str(i), "t", "big") for i in range(5)] + [Example("s", "t", "small")]
    assert [e.prompt for e in sft.interleave(exs, 3)] == ["0", "s", "1"]


def test_too_few_steps_warns():
    cfg = config.load("smoke", ["sft.micro_batch=64", "sft.epochs=1"])
    with pytest.warns(UserWarning, match="only 5 optimizer steps"):
        sft.train_config(cfg, steps_per_epoch=5)


def test_make_batches_builds_training_and_both_eval_sources():
    from types import SimpleNamespace

    corpus = SimpleNamespace(train=blocks(20, 16), val=blocks(8, 16))
    cfg = config.SFTConfig(micro_batch=4, max_length=16, replay_ratio=0.25, eval_batches=2)
    train, evals = sft.make_batches(cfg, char_tokenizer(), rows_for(12), rows_for(5), corpus.val, corpus.train,
                                    fixed_length=True)
    assert list(evals) == ["instructions", "corpus"]
    assert train.batch(0)["input_ids"].shape == (4, 16) and len(evals["corpus"]) == 2
    assert sft.replay_share(train, n=8)["replay_rows"] == 0.25
    _, only_corpus = sft.make_batches(cfg, char_tokenizer(), rows_for(12), [], corpus.val, corpus.train,
                                      fixed_length=False)
    assert list(only_corpus) == ["corpus"]


def test_registry_hub_entry_with_field_spec(monkeypatch):
    import datasets

    from nbhelpers import sources

    entry = sources.Source("dolly_ja", "hub", "kunishou/databricks-dolly-15k-ja", revision="main",
                           text_field="instruction+input>output")
    monkeypatch.setitem(sources.REGISTRY, "dolly_ja", entry)
    seen = {}

    def fake(path, name=None, split=None, revision=None, streaming=False):
        seen.update(path=path, split=split, revision=revision, streaming=streaming)
        return [{"instruction": "要約して", "input": "長い文", "output": "短い文", "index": "0"}] * 3

    monkeypatch.setattr(datasets, "load_dataset", fake)
    got = sft.load_source("dolly_ja", config.SFTConfig(max_examples=2))
    assert [(e.prompt, e.target) for e in got] == [("要約して\n\n長い文", "短い文")] * 2
    assert seen == {"path": "kunishou/databricks-dolly-15k-ja", "split": "train", "revision": "main", "streaming": True}
