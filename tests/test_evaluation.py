"""Perplexity, the lm-eval wrapper and its offline tasks, results files and the run summary."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from nbhelpers import evaluation as ev  # noqa: E402
from nbhelpers.evaluation import task_data  # noqa: E402

DATA = ev.LOCAL_TASK_DIR / "data"


# ---------------------------------------------------------------- fixtures: tiny tokenizer and models


def _corpus_text() -> list[str]:
    texts = ev.heldout_prose()
    texts += [(DATA / f"{name}.json").read_text(encoding="utf-8") for name in task_data.LOCAL_FIELDS]
    return texts


@pytest.fixture(scope="module")
def tokenizer():
    """A small unigram tokenizer trained here on the bundled Japanese texts, as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=900, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(_corpus_text(), trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                                eos_token="</s>", pad_token="<pad>")


def _model(tokenizer, context: int = 128, vocab: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPTNeoXConfig(
        vocab_size=vocab or len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=context, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    return transformers.GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    return _model(tokenizer)


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory):
    """A save_pretrained directory (model + tokenizer) with a 256-token context, as 03 writes it."""
    out = tmp_path_factory.mktemp("final")
    _model(tokenizer, context=256).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _ids(tokenizer, text: str, prefix: bool = True) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.eos_token_id, *ids] if prefix else ids


# ---------------------------------------------------------------- perplexity


def test_perplexity_matches_the_models_own_loss(model, tokenizer):
    text = ev.heldout_prose(1)[0]
    ids = torch.tensor([_ids(tokenizer, text)])
    assert ids.shape[1] <= 128
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    res = ev.perplexity(model, tokenizer, [text], progress=False)
    assert res.tokens == (ids.shape[1] - 1,)
    assert res.per_text[0] == pytest.approx(math.exp(loss), rel=1e-5)
    assert res.mean_ppl == pytest.approx(res.token_ppl, rel=1e-9)  # one text: the two agree
    # bits per byte by hand: the model's mean loss (nats per token) over the text's UTF-8 bytes
    nbytes = len(text.encode("utf-8"))
    assert res.bytes == (nbytes,)
    assert res.bpb == pytest.approx(loss * (ids.shape[1] - 1) / math.log(2) / nbytes, rel=1e-5)


def test_prefix_none_leaves_the_first_token_unscored(model, tokenizer):
    text = ev.heldout_prose(2)[1]
    ids = torch.tensor([_ids(tokenizer, text, prefix=False)[:60]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    short = tokenizer.decode(ids[0])
    assert _ids(tokenizer, short, prefix=False) == ids[0].tolist()  # the decoded text encodes back the same
    res = ev.perplexity(model, tokenizer, [short], prefix="none", progress=False)
    assert res.tokens == (59,)
    assert res.per_text[0] == pytest.approx(math.exp(loss), rel=1e-5)
    first = tokenizer.decode(ids[0, :1])  # the unscored first token's text leaves the byte count
    assert res.bytes == (len(short.encode("utf-8")) - len(first.encode("utf-8")),)
    assert res.bpb == pytest.approx(sum(res.nll) / math.log(2) / res.bytes[0])


def test_sliding_window_equals_full_context_when_the_text_fits(model, tokenizer):
    texts = ev.heldout_prose(3)
    full = ev.perplexity(model, tokenizer, texts, max_length=128, stride=127, progress=False)
    assert max(full.tokens) + 1 <= 100  # every text fits in each window below
    for max_length, stride in ((128, 1), (128, 17), (100, 50)):
        other = ev.perplexity(model, tokenizer, texts, max_length=max_length, stride=stride, progress=False)
        assert other.tokens == full.tokens
        assert other.per_text == pytest.approx(full.per_text, rel=1e-5)


def test_stride_one_gives_every_token_its_full_window(model, tokenizer):
    """Reference: each token scored alone with the max_length - 1 tokens before it."""
    ids = _ids(tokenizer, "".join(ev.heldout_prose(2)))[:40]
    text = tokenizer.decode(ids[1:])
    assert _ids(tokenizer, text) == ids
    max_length = 12
    assert len(ids) > 3 * max_length
    nll = 0.0
    with torch.no_grad():
        for p in range(1, len(ids)):
            ctx = torch.tensor([ids[max(0, p - max_length + 1):p + 1]])
            logp = torch.log_softmax(model(input_ids=ctx).logits[0, -2].float(), -1)
            nll -= logp[ids[p]].item()
    res = ev.perplexity(model, tokenizer, [text], max_length=max_length, stride=1, batch_size=16, progress=False)
    assert res.tokens == (len(ids) - 1,)
    assert res.nll[0] == pytest.approx(nll, rel=1e-5)


def test_strided_windows_score_each_token_once_with_enough_context():
    for n, length, stride in ((1, 8, 4), (2, 8, 4), (8, 8, 4), (9, 8, 4), (100, 16, 5), (57, 10, 9), (30, 4, 1)):
        scored = []
        for begin, end, new in ev.windows(n, length, stride):
            assert end - begin <= length
            first = max(end - new, begin + 1)  # a window's first token has no context of its own
            for p in range(first, end):
                if begin > 0:
                    assert p - begin >= length - stride
                scored.append(p)
        assert scored == list(range(1, n)), (n, length, stride)


def test_batching_and_fixed_shapes_do_not_change_results(model, tokenizer):
    texts = ev.heldout_prose(3) + ["短い。"]
    one = ev.perplexity(model, tokenizer, texts, max_length=32, stride=8, batch_size=1, progress=False)
    many = ev.perplexity(model, tokenizer, texts, max_length=32, stride=8, batch_size=7, progress=False)
    fixed = ev.perplexity(model, tokenizer, texts, max_length=32, stride=8, batch_size=5, fixed_shapes=True,
                          progress=False)
    assert one.tokens == many.tokens == fixed.tokens
    assert many.per_text == pytest.approx(one.per_text, rel=1e-5)
    assert fixed.per_text == pytest.approx(one.per_text, rel=1e-5)
    assert one.mean_ppl == pytest.approx(sum(one.per_text) / len(texts))
    assert one.token_ppl == pytest.approx(math.exp(sum(one.nll) / sum(one.tokens)))
    assert one.mean_ppl != pytest.approx(one.token_ppl)  # a 3-token text weighs as much as a paragraph


def test_perplexity_rejects_bad_input(model, tokenizer):
    with pytest.raises(TypeError, match="list of strings"):
        ev.perplexity(model, tokenizer, "一つの文字列", progress=False)
    with pytest.raises(ValueError, match="at least one"):
        ev.perplexity(model, tokenizer, [], progress=False)
    with pytest.raises(ValueError, match="stride=64"):
        ev.perplexity(model, tokenizer, ["テスト"], max_length=64, stride=64, progress=False)
    with pytest.raises(ValueError, match=r"texts\[1\].*nothing to score"):
        ev.perplexity(model, tokenizer, ["テスト", ""], prefix="none", progress=False)
    with pytest.raises(ValueError, match="prefix='sep'"):
        ev.perplexity(model, tokenizer, ["テスト"], prefix="sep", progress=False)


def test_tokenizer_that_does_not_match_the_model(tokenizer):
    small = _model(tokenizer, vocab=len(tokenizer) - 10)
    with pytest.raises(ev.ModelMismatch, match=f"has {len(tokenizer)} tokens but the model's embedding table has"):
        ev.perplexity(small, tokenizer, ["テスト"], progress=False)
    big = _model(tokenizer, vocab=32000)
    with pytest.raises(ev.ModelMismatch, match="built for 32000"):
        ev.check_tokenizer(big, tokenizer)
    ev.check_tokenizer(_model(tokenizer, vocab=len(tokenizer) + 60), tokenizer)  # padded table: fine


def test_load_model_errors_name_the_directory(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError, match=r"no such directory.*03_pretrain"):
        ev.load_model(tmp_path / "pretrain" / "final")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ev.load_model(tmp_path / "empty")
    model, tok = ev.load_model(model_dir, device="cpu")
    assert len(tok) == model.config.vocab_size and not model.training


# ---------------------------------------------------------------- validation texts


def test_texts_from_blocks_splits_documents_at_eos(tokenizer):
    docs = ev.heldout_prose(4)
    eos = tokenizer.eos_token_id
    stream = _ids(tokenizer, "途中から始まる文書の終わり。", prefix=False)
    for d in docs:
        stream += [eos, *_ids(tokenizer, d, prefix=False)]
    stream.append(eos)
    blocks = [stream[i:i + 32] for i in range(0, len(stream), 32)]
    texts = ev.texts_from_blocks(blocks, tokenizer, n=3, min_chars=10)
    assert len(texts) == 3
    for got, want in zip(texts, docs):
        assert got.replace(" ", "") == want.replace(" ", "")  # the cut first piece is dropped


def test_heldout_prose_shape_errors(tmp_path):
    bad = tmp_path / "prose.json"
    bad.write_text('{"texts": ["ok", ""]}', encoding="utf-8")
    with pytest.raises(ValueError, match="non-empty strings"):
        ev.heldout_prose(path=bad)
    assert len(ev.heldout_prose(3)) == 3


# ---------------------------------------------------------------- local lm-eval tasks


def test_local_tasks_validate_and_register():
    names = ev.validate_task_dir()
    assert set(ev.ONLINE_TO_LOCAL.values()) <= set(names)
    manager = ev.task_manager(defaults=False)
    assert ev.resolve_tasks(list(ev.ONLINE_TO_LOCAL), local=True, manager=manager) == list(ev.ONLINE_TO_LOCAL.values())


def test_local_tasks_keep_the_leaderboard_prompts():
    """The offline copies render the same prompt, target, filters and metric as lm-eval's tasks."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    upstream = Path(lm_eval.__file__).parent / "tasks" / "japanese_leaderboard"
    keys = ("description", "doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter", "output_type",
            "generation_kwargs", "metric_list", "filter_list", "num_fewshot", "training_split",
            "validation_split", "fewshot_split")
    for online, local in ev.ONLINE_TO_LOCAL.items():
        theirs = load_yaml(upstream / f"{online}.yaml", resolve_func=False)
        ours = load_yaml(ev.LOCAL_TASK_DIR / f"{local}.yaml", resolve_func=False)
        for key in keys:
            assert ours.get(key) == theirs.get(key), (local, key)


def test_local_data_renders_with_the_prompt_templates():
    import jinja2

    env = jinja2.Environment()
    for name, local in (("jaqket_v2", "ja_local_jaqket_v2"), ("jsquad", "ja_local_jsquad")):
        from lm_eval.tasks._yaml_loader import load_yaml

        cfg = load_yaml(ev.LOCAL_TASK_DIR / f"{local}.yaml", resolve_func=False)
        for doc in task_data.read_local_data(name)["validation"]:
            text = env.from_string(cfg["doc_to_text"]).render(**doc)
            target = env.from_string(cfg["doc_to_target"]).render(**doc)
            assert doc["question"] in text and target == doc["answers"]["text"][0]
            if name == "jaqket_v2":
                assert any(target in c for c in doc["ctxs"]["text"])  # extractive: the answer is in a passage
            else:
                assert doc["context"][doc["answers"]["answer_start"][0]:].startswith(target)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["validation"][1].pop("question"), r"validation\[1\]: missing field\(s\) question"),
    (lambda d: d["train"][0].update(label=7), r"train\[0\]\.label: expected 0\.\.4"),
    (lambda d: d["train"][2].update(choice3=3), r"train\[2\]\.choice3: expected string"),
    (lambda d: d.pop("train"), r"'train' must be a non-empty list"),
])
def test_local_data_in_the_wrong_shape(tmp_path, mutate, message):
    data = json.loads((DATA / "jcommonsenseqa.json").read_text(encoding="utf-8"))
    mutate(data)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "jcommonsenseqa.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ev.LocalTaskError, match=message) as err:
        task_data.read_local_data("jcommonsenseqa", tmp_path)
    assert "jcommonsenseqa.json" in str(err.value)


def test_local_task_files_in_the_wrong_shape(tmp_path):
    task_dir = tmp_path / "tasks"
    shutil.copytree(ev.LOCAL_TASK_DIR, task_dir)
    (task_dir / "data" / "jsquad.json").write_text('{"train": [\n  {"id": 1,}\n]}', encoding="utf-8")
    with pytest.raises(ev.LocalTaskError, match=r"jsquad\.json: line 2: not valid JSON"):
        ev.validate_task_dir(task_dir)
    (task_dir / "data" / "jsquad.json").write_text((DATA / "jsquad.json").read_text(encoding="utf-8"),
                                                   encoding="utf-8")
    nested = json.loads((DATA / "jsquad.json").read_text(encoding="utf-8"))
    nested["validation"][0]["answers"] = {"text": ["x"], "answer_start": [1, 2]}
    (task_dir / "data" / "jsquad.json").write_text(json.dumps(nested), encoding="utf-8")
    with pytest.raises(ev.LocalTaskError, match=r"validation\[0\]\.answers: the lists text, answer_start"):
        ev.validate_task_dir(task_dir)
    (task_dir / "data" / "jsquad.json").write_text((DATA / "jsquad.json").read_text(encoding="utf-8"),
                                                   encoding="utf-8")
    yaml_path = task_dir / "ja_local_jsquad.yaml"
    yaml_path.write_text(yaml_path.read_text(encoding="utf-8").replace("output_type: generate_until\n", ""),
                         encoding="utf-8")
    with pytest.raises(ev.LocalTaskError, match=r"ja_local_jsquad\.yaml: missing key\(s\) output_type"):
        ev.validate_task_dir(task_dir)


def test_unknown_task_lists_close_names():
    manager = ev.task_manager(defaults=False)
    with pytest.raises(ev.UnknownTask, match="unknown lm-eval task 'ja_local_jsqad'; close names: ja_local_jsquad"):
        ev.resolve_tasks(["ja_local_jsqad"], manager=manager)
    with pytest.raises(ValueError, match="hub_source='hub': expected script_free | leaderboard"):
        ev.resolve_tasks(["ja_leaderboard_jaqket_v2"], hub_source="hub", manager=manager)
    with pytest.raises(ev.UnknownTask, match="ja_leaderboard_jsquad"):  # lm-eval's own tasks are not indexed here
        ev.resolve_tasks(["ja_leaderboard_jsquad"], hub_source="leaderboard", manager=manager)


def test_online_tasks_go_through_the_script_free_copies():
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = ev.task_manager(defaults=False)
    leaderboard = list(ev.SCRIPT_FREE)
    assert ev.resolve_tasks(leaderboard, manager=manager) == list(ev.SCRIPT_FREE.values())
    sources = {"ja_leaderboard_jaqket_v2_json": "json", "ja_leaderboard_jcommonsenseqa_sbi": "sbintuitions/JCommonsenseQA",
               "ja_leaderboard_jsquad_sbi": "sbintuitions/JSQuAD"}
    upstream = Path(lm_eval.__file__).parent / "tasks" / "japanese_leaderboard"
    for online, copy in ev.SCRIPT_FREE.items():
        path = next(p for p in ev.LOCAL_TASK_DIR.glob("*.yaml")
                    if load_yaml(p, resolve_func=False, recursive=False).get("task") == copy)
        ours = load_yaml(path, resolve_func=False, recursive=True)
        theirs = load_yaml(upstream / f"{online}.yaml", resolve_func=False)
        assert ours["dataset_path"] == sources[copy]
        for key in ("doc_to_text", "doc_to_target", "metric_list", "filter_list", "num_fewshot", "validation_split"):
            assert ours.get(key) == theirs.get(key), (copy, key)
    jaqket = load_yaml(ev.LOCAL_TASK_DIR / "jaqket_v2_hub.yaml", resolve_func=False, recursive=True)
    assert jaqket["dataset_kwargs"]["repo_id"] == "kumapo/JAQKET"
    assert "local_name" not in jaqket["dataset_kwargs"]


def test_jaqket_records_match_the_loading_scripts_shape():
    def ctx(i, has):
        return {"id": str(i), "title": f"題{i}", "text": f"本文{i}", "score": str(10 - i), "has_answer": has}

    raw = [
        {"qid": "Q1", "question": "問1", "answers": ["本文2"], "ctxs": [ctx(i, i == 2) for i in range(8)]},
        {"qid": "Q2", "question": "問2", "answers": ["本文6"], "ctxs": [ctx(i, i == 6) for i in range(8)]},
    ]
    out = ev.jaqket_records(raw, num_contexts=5)
    assert [r["qid"] for r in out] == ["Q1"]  # Q2's answer is only in the 7th passage
    assert out[0]["ctxs"]["text"] == [f"本文{i}" for i in range(5)]
    assert out[0]["ctxs"]["score"] == [10.0, 9.0, 8.0, 7.0, 6.0]
    task_data.validate_records("jaqket_v2", {"train": out, "validation": out}, "converted")
    with pytest.raises(ev.LocalTaskError, match="JAQKET record 0"):
        ev.jaqket_records([{"qid": "Q", "question": "q"}])


# ---------------------------------------------------------------- lm-eval end to end


@pytest.mark.slow
def test_simple_evaluate_runs_the_local_tasks(model_dir):
    shots = {"ja_leaderboard_jaqket_v2": 1, "ja_leaderboard_jcommonsenseqa": 3, "ja_leaderboard_jsquad": 2}
    res = ev.run_lm_eval(str(model_dir), tasks=list(shots), num_fewshot=shots, local=True, batch_size=4,
                         max_gen_toks=8, device="cpu")
    assert res["n-shot"] == {ev.ONLINE_TO_LOCAL[k]: v for k, v in shots.items()}
    table = ev.results_table(res)
    assert list(table.columns) == ["Tasks", "Version", "Filter", "n-shot", "Metric", "Value", "Stderr"]
    assert sorted(table["Metric"]) == ["acc", "exact_match", "exact_match"]
    assert table["Value"].between(0, 1).all()
    assert res["n-samples"]["ja_local_jcommonsenseqa"]["effective"] == 5
    md = ev.results_markdown(res)
    assert md.splitlines()[0] == "|Tasks|Version|Filter|n-shot|Metric|Value|Stderr|" and "ja_local_jsquad" in md
    # Fewer shots than the YAML's when asked.
    one = ev.run_lm_eval(str(model_dir), tasks=["ja_leaderboard_jcommonsenseqa"],
                         num_fewshot={"ja_local_jcommonsenseqa": 0}, local=True, device="cpu")
    assert one["n-shot"] == {"ja_local_jcommonsenseqa": 0}


def test_run_lm_eval_bad_input(tmp_path, model, tokenizer):
    with pytest.raises(FileNotFoundError, match="03_pretrain"):
        ev.run_lm_eval(tmp_path / "missing", tasks=["ja_leaderboard_jsquad"], local=True)
    with pytest.raises(ValueError, match="pass the tokenizer"):
        ev.run_lm_eval(model, tasks=["ja_leaderboard_jsquad"], local=True)


@pytest.mark.slow
def test_run_lm_eval_unknown_task(model, tokenizer):
    """Not among nbhelpers' tasks, so lm-eval's own are indexed too before the name is refused."""
    with pytest.raises(ev.UnknownTask, match="close names: ja_leaderboard_jsquad"):
        ev.run_lm_eval(model, tokenizer, tasks=["ja_leaderboard_jsquadd"], local=True)


# ---------------------------------------------------------------- results and summary


FAKE_RESULTS = {
    "results": {
        "ja_local_jsquad": {"alias": "ja_local_jsquad", "exact_match,whitespaces": 0.25,
                            "exact_match_stderr,whitespaces": 0.1},
        "ja_local_jcommonsenseqa": {"alias": "ja_local_jcommonsenseqa", "acc,none": 0.4, "acc_stderr,none": "N/A"},
    },
    "versions": {"ja_local_jsquad": 1.0, "ja_local_jcommonsenseqa": 1.0},
    "n-shot": {"ja_local_jsquad": 2, "ja_local_jcommonsenseqa": 3},
}


def test_results_table_shape_and_files(tmp_path, model, tokenizer):
    rows = ev.results_rows(FAKE_RESULTS)
    assert rows[0] == {"Tasks": "ja_local_jsquad", "Version": 1.0, "Filter": "whitespaces", "n-shot": 2,
                       "Metric": "exact_match", "Value": 0.25, "Stderr": 0.1}
    assert rows[1]["Stderr"] == "N/A"
    assert "|ja_local_jsquad|1|whitespaces|2|exact_match|0.2500|0.1000|" in ev.results_markdown(FAKE_RESULTS)
    ppl = {"pretrain": {"prose": ev.perplexity(model, tokenizer, ev.heldout_prose(2), progress=False)}}
    data = ev.save_results(tmp_path / "eval" / "results.json", ppl, {"pretrain": FAKE_RESULTS, "sft": {}})
    back = json.loads((tmp_path / "eval" / "results.json").read_text(encoding="utf-8"))
    assert back == json.loads(json.dumps(data))
    assert back["lm_eval"]["pretrain"]["table"] == rows and "sft" not in back["lm_eval"]
    assert len(back["perplexity"]["pretrain"]["prose"]["per_text"]) == 2
    assert ev.results_table(back["lm_eval"]["pretrain"]["table"]).shape == (2, 7)
    figures = ev.eval_figures(ppl, {"pretrain": FAKE_RESULTS})
    assert figures["lm_eval"]["pretrain"] == {"ja_local_jsquad/exact_match": 0.25, "ja_local_jcommonsenseqa/acc": 0.4}
    table = ev.perplexity_table(ppl)
    assert table.iloc[0]["tokens"] == sum(ppl["pretrain"]["prose"].tokens)
    prose = ppl["pretrain"]["prose"]
    assert table.iloc[0]["bytes"] == sum(len(t.encode("utf-8")) for t in ev.heldout_prose(2)) == sum(prose.bytes)
    assert table.iloc[0]["bpb"] == prose.bpb == pytest.approx(sum(prose.nll) / math.log(2) / sum(prose.bytes))
    assert figures["bpb"] == {"pretrain": {"prose": round(prose.bpb, 4)}}
    assert back["perplexity"]["pretrain"]["prose"]["bpb"] == prose.bpb


def test_plots(tmp_path):
    from nbhelpers import plots

    def result(ppl):
        return ev.PerplexityResult(ppl, ppl, (ppl,), (10,), (10 * math.log(ppl),), 64, 32)

    ppl = {"pretrain": {"prose": result(900.0), "corpus_val": result(800.0)},
           "sft": {"prose": result(40.0), "corpus_val": result(30.0)}}
    fig = plots.plot_perplexity(ev.perplexity_table(ppl), path=tmp_path / "ppl.png")
    assert len(fig.axes[0].patches) == 4 and (tmp_path / "ppl.png").stat().st_size > 0
    assert fig.axes[0].get_yscale() == "log"
    fig = plots.plot_lm_eval({"pretrain": {"a/acc": 0.2, "b/em": 0.0}, "sft": {"a/acc": 0.4}},
                             path=tmp_path / "lm.png")
    assert len(fig.axes[0].patches) == 4


def test_run_summary_is_tolerant_of_missing_stages(tmp_path):
    metrics = {
        "tokenizer": {"vocab_size": 2000, "chars_per_token": 1.83456, "config_fingerprint": "abc"},
        "pretrain": {"steps": 200, "val_loss": 3.21, "extra": [1, 2, 3, 4, 5, 6], "notes": "x" * 100},
        "eval": ev.eval_figures({"pretrain": {}}, {"pretrain": FAKE_RESULTS}),
        "chat": "odd value",
    }
    text = ev.run_summary(metrics)
    assert "01 tokenizer:\n  vocab_size: 2,000\n  chars_per_token: 1.835" in text
    assert "02 corpus: not run yet" in text and "04 instruction tuning: not run yet" in text
    assert "config_fingerprint" not in text and "05 chat: odd value" in text
    assert "  lm_eval/pretrain/ja_local_jsquad/exact_match: 0.25" in text
    pretrained = ev.run_summary({"pretrain": {"tokens_per_s": 900.0, "eval_bpb": 1.2345, "preset": "tiny"}})
    assert pretrained.index("eval_bpb: 1.234") < pretrained.index("tokens_per_s")  # a headline, in its place
    assert "[1, 2, 3, 4, ...] (6)" in text and "x" * 57 + "..." in text
    (tmp_path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    assert ev.run_summary(tmp_path) == text
    assert "not run yet" in ev.run_summary(tmp_path / "nothing")
    (tmp_path / "metrics.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="metrics.json: not valid JSON"):
        ev.run_summary(tmp_path)


# ---------------------------------------------------------------- the 06 notebook's steps on a run directory


def _fake_run(tmp_path, tokenizer, stages=("pretrain", "sft")):
    """A smoke run directory with tiny pretrain/final and sft/final, as 03 and 04 leave them."""
    from nbhelpers import config
    from nbhelpers.rundir import RunDir

    run = RunDir.open(tmp_path / "run", config.load("smoke"))
    tokenizer.save_pretrained(run.tokenizer)
    for seed, stage in enumerate(stages):
        final = getattr(run, stage) / "final"
        _model(tokenizer, context=256, seed=seed).save_pretrained(final)
        if stage == "pretrain":
            tokenizer.save_pretrained(final)  # sft/final without one: the run's tokenizer/ is used
        run.record(stage, {"steps": 10})
    return run


def test_stage_steps_score_every_model(tmp_path, tokenizer):
    run = _fake_run(tmp_path, tokenizer)
    models = ev.available_models(run)
    assert list(models) == ["pretrain", "sft"]
    texts = ev.validation_texts(run.corpus, tokenizer, 2)  # no corpus yet: prose only
    assert list(texts) == ["heldout_prose"] and len(texts["heldout_prose"]) == 2
    ppl = ev.score_perplexity(run, models, texts, run.config.eval, device="cpu")
    assert set(ppl) == {"pretrain", "sft"}
    assert ppl["pretrain"]["heldout_prose"].token_ppl != ppl["sft"]["heldout_prose"].token_ppl  # two models
    assert ppl["pretrain"]["heldout_prose"].stride == run.config.eval.ppl_stride
    ev.save_results(run.eval / "results.json", ppl)
    run.record("eval", ev.eval_figures(ppl))
    assert run.is_complete("eval")
    summary = ev.run_summary(run)
    assert "06 evaluation:\n  perplexity/pretrain/heldout_prose:" in summary
    bpb = ppl["pretrain"]["heldout_prose"].bpb
    assert f"  bpb/pretrain/heldout_prose: {round(bpb, 4):.4g}" in summary  # next to perplexity, before lm-eval


def test_available_models_needs_pretrain(tmp_path, tokenizer):
    from nbhelpers import config
    from nbhelpers.rundir import RunDir

    run = RunDir.open(tmp_path / "empty", config.load("smoke"))
    with pytest.raises(FileNotFoundError, match=r"pretrain/final: no such directory; run notebooks/03_pretrain"):
        ev.available_models(run)
    run = _fake_run(tmp_path, tokenizer, stages=("pretrain",))
    assert list(ev.available_models(run)) == ["pretrain"]


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebook_06_on_a_run_directory(tmp_path, tokenizer):
    """06 end to end with papermill on the smoke profile, over tiny models standing in for 03 and 04."""
    pytest.importorskip("papermill")
    from nbhelpers import runner

    run = _fake_run(tmp_path, tokenizer)
    runner.run("smoke", run.root, only=["06"], log=lambda _: None)
    results = json.loads((run.eval / "results.json").read_text(encoding="utf-8"))
    assert set(results["perplexity"]) == {"pretrain", "sft"}
    assert sorted(r["Tasks"] for r in results["lm_eval"]["sft"]["table"]) == sorted(ev.ONLINE_TO_LOCAL.values())
    assert (run.eval / "perplexity.png").exists() and (run.eval / "lm_eval.png").exists()
    assert run.is_complete("eval")


# ---------------------------------------------------------------- other devices


@pytest.mark.xla
def test_perplexity_on_xla_matches_cpu_with_one_program(model, tokenizer):
    """The notebook's path on XLA: the adapter's device (SPMD on first), fixed shapes, one graph per batch."""
    import copy

    pytest.importorskip("torch_xla")
    from nbhelpers import config, xla

    texts = ev.heldout_prose(5)
    cpu = ev.perplexity(model, tokenizer, texts, max_length=32, stride=8, batch_size=4, progress=False)
    device, after_batch = ev.eval_device(config.load("smoke", ["train.backend=xla"]))
    assert device.type == "xla" and after_batch is not None
    xmodel = copy.deepcopy(model).to(device)
    first = ev.perplexity(xmodel, tokenizer, texts[:3], max_length=32, stride=8, batch_size=4,
                          after_batch=after_batch, progress=False)
    compiled = xla.compile_count()
    again = ev.perplexity(xmodel, tokenizer, texts[3:], max_length=32, stride=8, batch_size=4, progress=False)
    assert first.per_text == pytest.approx(cpu.per_text[:3], rel=1e-4)
    assert again.per_text == pytest.approx(cpu.per_text[3:], rel=1e-4)
    assert xla.compile_count() == compiled  # new texts, same shapes: nothing compiled again


def _lms(model, tokenizer, batch_size=3):
    """lm-eval's HFLM and FixedShapeLM (XLA's) over the same model object."""
    from lm_eval.models.huggingface import HFLM

    from nbhelpers.evaluation.fixed_lm import FixedShapeLM

    return (HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size),
            FixedShapeLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size))


def test_fixed_shape_lm_scores_as_lm_eval_does(model, tokenizer):
    """Log-likelihoods and greedy flags of (context, continuation) pairs: lm-eval's HFLM against fixed shapes."""
    from lm_eval.api.instance import Instance

    texts = ev.heldout_prose(4)
    pairs = [(t[:40], t[40:48]) for t in texts] + [("", texts[0][:30]), (texts[1][:200], "。")]
    reqs = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    ref, fixed = _lms(model, tokenizer)
    want, got = ref.loglikelihood(reqs, disable_tqdm=True), fixed.loglikelihood(reqs, disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in want]
    assert [v for v, _ in got] == pytest.approx([v for v, _ in want], rel=1e-5)
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    assert fixed.loglikelihood_rolling(rolling, disable_tqdm=True) == \
        pytest.approx(ref.loglikelihood_rolling(rolling, disable_tqdm=True), rel=1e-5)


def test_fixed_shape_lm_generates_as_lm_eval_does(model, tokenizer):
    from lm_eval.api.instance import Instance

    texts = ev.heldout_prose(5)
    until = {"until": ["。", "\n\n"], "max_gen_toks": 24, "do_sample": False}
    reqs = [Instance("generate_until", {}, (t[: 20 + 15 * i], until), i) for i, t in enumerate(texts)]
    ref, fixed = _lms(model, tokenizer, batch_size=2)
    assert fixed.generate_until(reqs, disable_tqdm=True) == ref.generate_until(reqs, disable_tqdm=True)


def test_run_lm_eval_with_fixed_shapes_gives_the_same_table(model_dir):
    shots = {"ja_leaderboard_jcommonsenseqa": 3, "ja_leaderboard_jsquad": 2}
    kw = {"tasks": list(shots), "num_fewshot": shots, "local": True, "batch_size": 4, "max_gen_toks": 8,
          "device": "cpu"}
    assert ev.results_table(ev.run_lm_eval(str(model_dir), fixed_shapes=True, **kw)).equals(
        ev.results_table(ev.run_lm_eval(str(model_dir), **kw)))


@pytest.mark.xla
def test_eval_on_xla_compiles_a_bounded_number_of_programs(tokenizer, tmp_path):
    """06's scoring on the CPU PJRT device: perplexity, log-likelihood (JCommonsenseQA) and generation (JSQuAD)
    compile their programs on the first examples; more examples compile nothing new."""
    pytest.importorskip("torch_xla")
    from nbhelpers import config, xla

    device, after_batch = ev.eval_device(config.load("smoke", ["train.backend=xla"]), tmp_path)
    xmodel = _model(tokenizer, context=64)  # one width bucket: the count cannot depend on which examples run
    xmodel.config._attn_implementation = "eager"  # what the XLA backend builds (no host read for the mask)
    xmodel = xmodel.to(device)
    texts = ev.heldout_prose(6)
    tasks = {"tasks": ["ja_leaderboard_jcommonsenseqa", "ja_leaderboard_jsquad"], "local": True, "batch_size": 4,
             "max_gen_toks": 20}

    def score(n_texts, limit):
        ev.perplexity(xmodel, tokenizer, texts[:n_texts], stride=32, batch_size=4, after_batch=after_batch,
                      progress=False)
        ev.run_lm_eval(xmodel, tokenizer, limit=limit, **tasks)

    start = xla.counters()
    score(2, 1)
    first = xla.counters() - start
    score(6, 5)  # three times the texts, five times the examples
    more = xla.counters() - start - first
    assert 0 < first.compiles <= 6  # perplexity, log-likelihood, decoding (and their inputs' small programs)
    assert more.compiles == 0
    assert more.scalar_reads == 0  # nothing read from the device per request or per token


@pytest.mark.gpu
def test_perplexity_on_cuda_matches_cpu(model, tokenizer):
    import copy

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    texts = ev.heldout_prose(3)
    cpu = ev.perplexity(model, tokenizer, texts, max_length=32, stride=8, batch_size=4, progress=False)
    gpu = ev.perplexity(copy.deepcopy(model).cuda(), tokenizer, texts, max_length=32, stride=8, batch_size=4,
                        progress=False)
    assert gpu.per_text == pytest.approx(cpu.per_text, rel=1e-3)  # TF32 matmuls may be on


@pytest.mark.slow
def test_online_task_without_hub_access_says_what_to_do(model, tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ev.TaskDataError, match=r"ja_leaderboard_jsquad_sbi.*\n.*eval.local_tasks=true"):
        ev.run_lm_eval(model, tokenizer, tasks=["ja_leaderboard_jsquad"], extra_task_dirs=(), local=False)
