"""Hub data contracts: local copies of each hub dataset in its real format, read through the very loading call.

Each tree below is laid out as the dataset's repository is on the hub (README `configs:`, file names, nested
fields, a loading script where the repository ships one); nbhelpers reads it through `sources.open_hub` with
NBHELPERS_HUB_MIRROR pointing at it, the hub switched off. Where each fact comes from: the comments on
`sources.REGISTRY` and on the eval task YAMLs.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nbhelpers import config, sft, sources
from nbhelpers.config import CorpusConfig
from nbhelpers.corpus import mixed_documents

WIKI_JA = ["東京は日本の首都である。人口はおよそ千四百万人。", "富士山は静岡県と山梨県にまたがる活火山である。",
           "俳句は五七五の十七音からなる定型詩である。"]
BOOKS = ["この教科書では、二次方程式の解き方を学びます。", "化学反応式の係数は、原子の数が両辺で等しくなるように決めます。"]
C4_JA = ["当店では季節の果物を使ったケーキを販売しています。", "週末は家族で近くの公園に出かけました。"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty mirror folder that open_hub reads instead of the hub, with every hub access switched off."""
    import datasets
    import huggingface_hub

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv(sources.HUB_MIRROR_ENV, str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # feeder processes read these at import
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return root


def _repo(root: Path, repo: str, readme_yaml: str = "") -> Path:
    path = root / repo
    path.mkdir(parents=True)
    front = f"---\n{textwrap.dedent(readme_yaml).strip()}\n---\n" if readme_yaml else ""
    (path / "README.md").write_text(front + f"# {repo}\n", encoding="utf-8")
    return path


def _parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _wikipedia(root: Path) -> None:
    """wikimedia/wikipedia: one config per dump and language, parquet shards train-NNNNN-of-MMMMM.parquet."""
    repo = _repo(root, "wikimedia/wikipedia", """
        configs:
        - config_name: 20231101.en
          data_files:
          - split: train
            path: 20231101.en/train-*
        - config_name: 20231101.ja
          data_files:
          - split: train
            path: 20231101.ja/train-*
        """)
    rows = [{"id": str(i), "url": f"https://ja.wikipedia.org/wiki?curid={i}", "title": t[:2], "text": t}
            for i, t in enumerate(WIKI_JA)]
    _parquet(repo / "20231101.ja" / "train-00000-of-00015.parquet", rows[:2])
    _parquet(repo / "20231101.ja" / "train-00001-of-00015.parquet", rows[2:])
    _parquet(repo / "20231101.en" / "train-00000-of-00041.parquet",
             [{"id": "12", "url": "https://en.wikipedia.org/wiki?curid=12", "title": "Anarchism", "text": "English."}])


def _wikibooks(root: Path) -> None:
    """hpprc/jawiki-books: a single README config over 2024-04-01/train-*."""
    repo = _repo(root, "hpprc/jawiki-books", """
        configs:
        - config_name: default
          data_files:
          - split: train
            path: 2024-04-01/train-*
        license: cc-by-sa-3.0
        language:
        - ja
        """)
    _parquet(repo / "2024-04-01" / "train-00000-of-00001.parquet",
             [{"id": str(i), "url": f"https://ja.wikibooks.org/wiki?curid={i}", "title": "数学", "text": t}
              for i, t in enumerate(BOOKS)])


def _c4(root: Path) -> None:
    """allenai/c4: per-language configs over gzipped JSON lines in multilingual/ (ja-Latn must not leak into ja)."""
    repo = _repo(root, "allenai/c4", """
        configs:
        - config_name: ja
          data_files:
          - split: train
            path: multilingual/c4-ja.tfrecord-*.json.gz
          - split: validation
            path: multilingual/c4-ja-validation.tfrecord-*.json.gz
        - config_name: ja-Latn
          data_files:
          - split: train
            path: multilingual/c4-ja-Latn.tfrecord-*.json.gz
          - split: validation
            path: multilingual/c4-ja-Latn-validation.tfrecord-*.json.gz
        """)
    files = {"c4-ja.tfrecord-00000-of-01024.json.gz": C4_JA, "c4-ja-validation.tfrecord-00000-of-00008.json.gz": ["検証"],
             "c4-ja-Latn.tfrecord-00000-of-00002.json.gz": ["Tokyo wa nihon no shuto desu."],
             "c4-ja-Latn-validation.tfrecord-00000-of-00001.json.gz": ["kenshou"]}
    (repo / "multilingual").mkdir()
    for name, texts in files.items():
        with gzip.open(repo / "multilingual" / name, "wt", encoding="utf-8") as fh:
            for t in texts:
                fh.write(json.dumps({"text": t, "timestamp": "2020-02-18T08:28:19Z", "url": "https://example.jp/"},
                                    ensure_ascii=False) + "\n")


def _jamard_row(question: str, true: list[str], false: list[str], source: str = "gsm8k") -> dict:
    responses = true + false
    return {"gold_answer": "4", "instruction": question, "responses": responses,
            "accuracy>0": bool(true), "accuracy": len(true) / len(responses) if responses else 0.0,
            "true_responses": true, "false_responses": false, "answers": ["4"] * len(responses), "source": source}


JAMARD_ROWS = [
    _jamard_row("$3x + 1 = 13$ を解け。", ["3x = 12 より x = 4。\n\n回答: 4"], [], source="prm800k"),
    _jamard_row("$x^2 = 16$ の正の解を求めよ。", [], ["x = -4\n\n回答: -4"], source="prm800k"),  # nothing verified
    _jamard_row("リンゴが2個、ミカンが2個あります。果物は全部で何個ですか？",
                ["2 + 2 = 4 なので、果物は4個です。\n\n回答: 4", "2×2=4。\n\n回答: 4", "2 + 2 = 4 なので、果物は4個です。\n\n回答: 4"],
                ["2 + 2 = 5\n\n回答: 5"]),
]


def _jamard(root: Path) -> None:
    """elyza/JaMARD: a loading script over plain parquet files in the script's raw form, one file per split."""
    repo = _repo(root, "elyza/JaMARD", """
        task_categories:
          - text2text-generation
        language:
          - ja
        license: mit
        """)
    (repo / "JaMARD.py").write_text('BASE_DATASET_URL = "hf://datasets/elyza/JaMARD/data"\n', encoding="utf-8")
    _parquet(repo / "data" / "train.parquet", JAMARD_ROWS)
    for split in ("validation", "test"):
        _parquet(repo / "data" / f"{split}.parquet", [_jamard_row("1 + 1 は？", ["1 + 1 = 2\n\n回答: 2"], [])])


DOLLY = [
    {"output": "富士山です。", "input": "", "index": "0", "category": "open_qa", "instruction": "日本一高い山は？"},
    {"output": "晴れのち曇り。", "input": "今日は朝から晴れていたが、午後から雲が広がった。", "index": "1",
     "category": "summarization", "instruction": "次の文を要約してください。"},
]


def _dolly(root: Path) -> None:
    """kunishou/databricks-dolly-15k-ja: one JSON array at the repository root, no configs."""
    repo = _repo(root, "kunishou/databricks-dolly-15k-ja", """
        license: cc-by-sa-3.0
        language:
        - ja
        """)
    (repo / "databricks-dolly-15k-ja.json").write_text(json.dumps(DOLLY, ensure_ascii=False, indent=1),
                                                       encoding="utf-8")


# ---------------------------------------------------------------- the corpus sources


def test_wikipedia_ja_reads_its_config_shards_in_order(hub):
    _wikipedia(hub)
    assert list(sources.iter_texts("wikipedia_ja")) == WIKI_JA


def test_wikibooks_ja_reads_its_dated_folder(hub):
    _wikibooks(hub)
    assert list(sources.iter_texts("wikibooks_ja")) == BOOKS


def test_c4_ja_reads_gzipped_json_lines_of_its_config_only(hub):
    _c4(hub)
    assert list(sources.iter_texts("c4_ja")) == C4_JA


def test_jamard_reads_the_raw_parquet_without_its_script(hub):
    _jamard(hub)
    src = sources.resolve("jamard")
    assert src.math and src.files == "data/{split}.parquet"
    docs = list(sources.iter_texts("jamard"))
    question, answers = JAMARD_ROWS[2]["instruction"], JAMARD_ROWS[2]["true_responses"]
    assert docs == [f"{JAMARD_ROWS[0]['instruction']}\n{JAMARD_ROWS[0]['true_responses'][0]}",
                    f"{question}\n{answers[0]}", f"{question}\n{answers[1]}"]  # a repeated answer once, no false one
    assert all(d.strip() for d in docs)


def test_a_repository_with_a_loading_script_is_refused_with_what_to_do(hub):
    _jamard(hub)
    through_repo = dataclasses.replace(sources.resolve("jamard"), files="")  # as main read it: the repository
    with pytest.raises(sources.SourceError) as err:
        list(sources.iter_texts(through_repo))
    msg = str(err.value)
    assert "'jamard' (elyza/JaMARD" in msg and "loading script" in msg and "files=PATTERN" in msg
    assert "files:GLOB" in msg


def test_a_missing_config_or_file_names_the_source_and_what_there_is(hub):
    _wikipedia(hub)
    gone = sources.Source("wiki_de", "hub", "wikimedia/wikipedia", config="20231101.de")  # through the repository
    with pytest.raises(sources.SourceError, match=r"'wiki_de' \(wikimedia/wikipedia, config 20231101.de\).*"
                                                  r"20231101.ja.*no configuration '20231101.de'"):
        list(sources.iter_texts(gone))
    moved = dataclasses.replace(sources.resolve("wikipedia_ja"), files="20231101.ja/data/train-*.parquet")
    with pytest.raises(sources.SourceError, match=r"'wikipedia_ja' .*no files '20231101.ja/data/train-\*.parquet' "
                                                  r"at revision b04c8d1c"):  # datasets 5 raises, 3 and 4 stream nothing
        list(sources.iter_texts(moved))
    _dolly(hub)
    (hub / "kunishou/databricks-dolly-15k-ja/databricks-dolly-15k-ja.json").write_text("[]", encoding="utf-8")
    emptied = dataclasses.replace(sources.resolve("dolly_ja"), text_field="instruction")
    with pytest.raises(sources.SourceError, match=r"'dolly_ja' \(kunishou/databricks-dolly-15k-ja\): no rows in "
                                                  r"split 'train'\. The repository has no files"):
        list(sources.iter_texts(emptied))


def test_rows_without_the_text_fields_name_the_fields_there_are(hub):
    _jamard(hub)
    renamed = dataclasses.replace(sources.resolve("jamard"), text_field="question+true_responses")
    with pytest.raises(sources.SourceError, match=r"'jamard' \(elyza/JaMARD\): rows have no field\(s\) \['question'\]; "
                                                  r"fields: \['accuracy', 'accuracy>0', 'answers', 'false_responses'"):
        list(sources.iter_texts(renamed))


def test_a_mirror_without_the_repository_says_how_to_copy_it(hub):
    with pytest.raises(sources.SourceError) as err:
        list(sources.iter_texts("jamard"))
    msg = str(err.value)
    assert f"{hub}/elyza/JaMARD" in msg
    assert ("hf download elyza/JaMARD --repo-type dataset --revision 82e107d209dec19e17a76d76425452c81b192755 "
            f"--include 'data/train.parquet' --local-dir {hub}/elyza/JaMARD") in msg


def test_the_hub_path_reads_pinned_files_without_the_repository(monkeypatch):
    import datasets

    monkeypatch.delenv(sources.HUB_MIRROR_ENV, raising=False)
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or [])
    for name in ("wikipedia_ja", "wikibooks_ja", "jamard", "dolly_ja"):
        sources.open_hub(sources.resolve(name))
    hub = "hf://datasets/"
    assert [(a, k["data_files"]) for a, k in calls] == [
        (("parquet",), {"train": f"{hub}wikimedia/wikipedia@b04c8d1ceb2f5cd4588862100d08de323dccfbaa/20231101.ja/"
                                 "train-*.parquet"}),
        (("parquet",), {"train": f"{hub}hpprc/jawiki-books@main/2024-04-01/train-*.parquet"}),
        (("parquet",), {"train": f"{hub}elyza/JaMARD@82e107d209dec19e17a76d76425452c81b192755/data/train.parquet"}),
        (("json",), {"train": f"{hub}kunishou/databricks-dolly-15k-ja@6391034b0126850543299cda071dc6281c31a6fb/"
                              "databricks-dolly-15k-ja.json"}),
    ]
    assert all(k == {"data_files": k["data_files"], "split": "train", "streaming": True} for _, k in calls)
    # C4's folder holds every language's files: its 1024 names are listed, never globbed (no listing API call)
    c4 = sources.open_hub(sources.resolve("c4_ja"))
    assert len(calls) == 4 and c4.num_shards == 1024
    assert sources.hub_file_names(sources.resolve("c4_ja"))[::1023] == [
        "multilingual/c4-ja.tfrecord-00000-of-01024.json.gz", "multilingual/c4-ja.tfrecord-01023-of-01024.json.gz"]


def test_the_default_mixture_builds_documents_from_every_source(hub):
    _wikipedia(hub)
    _wikibooks(hub)
    _c4(hub)
    _jamard(hub)
    cfg = CorpusConfig(min_chars=5, workers=1, shuffle_buffer=0, seed=3, on_exhausted="stop", symbol_level=1.0)
    assert set(cfg.mixture) == {"wikipedia_ja", "wikibooks_ja", "c4_ja", "jamard"}
    docs = list(itertools.islice(mixed_documents(cfg), 100))
    assert {d.source for d in docs} == set(cfg.mixture)  # each read in its feeder process, from the mirror
    math = [d for d in docs if d.source == "jamard"]
    assert math[0].startswith("$3x + 1 = 13$ を解け。\n3x = 12")  # math keeps the symbols prose loses


# ---------------------------------------------------------------- instruction tuning


@pytest.mark.parametrize("name", ["dolly_ja", "hub:kunishou/databricks-dolly-15k-ja#instruction+input>output"])
def test_dolly_ja_gives_prompt_and_target_pairs(hub, name):
    """The registry entry reads its file; a hub: name goes through the repository (no configs: the JSON file)."""
    _dolly(hub)
    got = sft.load_source(name, config.SFTConfig())
    assert [(e.prompt, e.target) for e in got] == [
        ("日本一高い山は？", "富士山です。"),
        ("次の文を要約してください。\n\n今日は朝から晴れていたが、午後から雲が広がった。", "晴れのち曇り。")]


# ---------------------------------------------------------------- evaluation (06), eval.hub_source=script_free

JSQUAD = [{"id": "a1b2c3-0-0", "title": "東京", "context": "東京 [SEP] 東京は日本の首都で、関東地方に位置する。",
           "question": "日本の首都はどこか。", "answers": {"text": ["東京"], "answer_start": [5]},
           "is_impossible": False}]
JCQA = [{"q_id": 8939, "question": "手紙を送るときに封筒に貼るものは？", "choice0": "切手", "choice1": "絆創膏",
         "choice2": "ラベル", "choice3": "写真", "choice4": "葉っぱ", "label": 0}]


def _sbintuitions(root: Path, name: str, rows: list[dict]) -> Path:
    """sbintuitions/JSQuAD and /JCommonsenseQA: parquet copies of JGLUE, one default config, data/{split}-*."""
    repo = _repo(root, f"sbintuitions/{name}", """
        configs:
        - config_name: default
          data_files:
          - split: train
            path: data/train-*
          - split: validation
            path: data/validation-*
        license: cc-by-sa-4.0
        """)
    for split in ("train", "validation"):
        _parquet(repo / "data" / f"{split}-00000-of-00001.parquet", rows)
    return repo


def _task(hub_dir: Path, task_yaml: str, dataset_path: Path):
    """lm-eval's own task from nbhelpers' YAML, loading through lm-eval's datasets call with only the path moved."""
    from nbhelpers.evaluation import harness as ev

    name = f"contract_{Path(task_yaml).stem}"
    extra = hub_dir.parent / "tasks"
    extra.mkdir(exist_ok=True)
    (extra / f"{name}.yaml").write_text(f"include: {ev.LOCAL_TASK_DIR / task_yaml}\ntask: {name}\n"
                                        f"dataset_path: {dataset_path}\n", encoding="utf-8")
    manager = ev.task_manager([extra], defaults=False)
    return manager.load([name])["tasks"][name]


@pytest.mark.parametrize("task_yaml, name, rows, text, target", [
    ("jsquad_sbintuitions.yaml", "JSQuAD", JSQUAD, "文脈：東京は日本の首都で、関東地方に位置する。\n質問：日本の首都はどこか。", "東京"),
    ("jcommonsenseqa_sbintuitions.yaml", "JCommonsenseQA", JCQA, "- 切手\n- 絆創膏\n- ラベル\n- 写真\n- 葉っぱ\n", 0),
], ids=["JSQuAD", "JCommonsenseQA"])
def test_jglue_copies_load_through_lm_eval_without_a_script(hub, task_yaml, name, rows, text, target):
    task = _task(hub, task_yaml, _sbintuitions(hub, name, rows))
    doc = next(iter(task.validation_docs()))
    assert text in task.doc_to_text(doc) and task.doc_to_target(doc) == target


def test_jaqket_v2_json_files_load_from_the_hub_cache_through_the_task(hub, tmp_path, monkeypatch):
    """kumapo/JAQKET's JSON arrays (what its script read), served by huggingface_hub's offline cache."""
    import huggingface_hub

    from nbhelpers.evaluation import harness as ev

    def question(qid, answer_at):
        return {"qid": qid, "question": f"{qid}の問題", "answers": ["富士山"],
                "ctxs": [{"id": str(i), "title": f"題{i}", "text": "富士山" if i == answer_at else f"本文{i}",
                          "score": str(80.0 - i), "has_answer": i == answer_at} for i in range(8)]}

    cache = tmp_path / "hf-cache"
    snapshot = cache / "datasets--kumapo--JAQKET" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (cache / "datasets--kumapo--JAQKET" / "refs").mkdir()
    (cache / "datasets--kumapo--JAQKET" / "refs" / "main").write_text("0" * 40)
    for filename in ("train_jaqket_59.350.json", "dev_jaqket_59.350.json"):
        (snapshot / filename).write_text(json.dumps([question("QA20-0001", 1), question("QA20-0002", 6)],
                                                    ensure_ascii=False), encoding="utf-8")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    task = ev.task_manager(defaults=False).load([ev.JAQKET_JSON_TASK])["tasks"][ev.JAQKET_JSON_TASK]
    docs = list(task.validation_docs())
    assert [d["qid"] for d in docs] == ["QA20-0001"]  # the answer of QA20-0002 is only in its 7th passage
    assert "文脈：本文0\n富士山\n本文2" in task.doc_to_text(docs[0]) and task.doc_to_target(docs[0]) == "富士山"
