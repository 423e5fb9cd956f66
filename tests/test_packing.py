"""Packing and the corpus build: full blocks, EOS joins, no token lost, determinism, parts, atomicity, bad inputs."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import itertools
import json

import numpy as np
import pytest
import sentencepiece

from nbhelpers import config, sources
from nbhelpers.corpus import (
    CorpusBuildError,
    CorpusMissing,
    Mixer,
    VocabTooLarge,
    build_corpus,
    check_vocab,
    clean_text,
    load_corpus,
    token_budget,
)
from nbhelpers.corpus.packing import BlockWriter

EOS = 3


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small SentencePiece model (unk/pad/bos/eos = 0/1/2/3, byte fallback) trained on bundled text."""
    texts = list(sources.iter_texts("bundled_prose")) + list(itertools.islice(sources.iter_texts("arithmetic"), 300))
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=1500, model_type="unigram",
        character_coverage=0.995, byte_fallback=True, unk_id=0, pad_id=1, bos_id=2, eos_id=EOS, num_threads=1,
        split_by_whitespace=False, max_sentence_length=20000, minloglevel=2)
    out = tmp_path_factory.mktemp("tok")
    (out / "spm.model").write_bytes(model.getvalue())
    return out


@pytest.fixture(scope="module")
def sp(tokenizer_dir):
    return sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_dir / "spm.model"))


def _docs(n):
    # distinct documents of varied length, with symbols for the cleaner to thin
    return [f"第{i}話★ 春の朝、{'駅前の桜が咲き始めました。' * (1 + i % 7)}「きれいだね」と{i}人が言いました！" for i in range(n)]


def _write_source(directory, docs, fmt):
    """Documents as a plain-text, JSONL or parquet file (read by the workers in parts) or gzipped JSONL (a feeder)."""
    directory.mkdir(exist_ok=True)
    path = directory / f"docs.{fmt}"
    if fmt == "txt":
        path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": docs}), path, row_group_size=8)
    else:
        data = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
        path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    return f"files:{path}"


@pytest.fixture()
def prose_source(tmp_path):
    docs = _docs(400)
    return _write_source(tmp_path / "src", docs, "jsonl"), docs


@pytest.fixture(params=["jsonl", "txt", "parquet", "jsonl.gz"])
def any_source(tmp_path, request, monkeypatch):
    """The prose documents in each format; parts are made tiny so that a build spans many of them."""
    monkeypatch.setattr(sources, "FIRST_PART_BYTES", 300)
    monkeypatch.setattr(sources, "PART_BYTES", 2000)
    docs = _docs(400)
    return _write_source(tmp_path / "src", docs, request.param), docs


def _cfg(mixture, **kw):
    base = dict(mixture=mixture, block_len=64, token_budget=12_800, session_tokens=6_400, val_blocks=10,
                min_chars=10, workers=1, shuffle_buffer=0, seed=3)
    base.update(kw)
    return config.CorpusConfig(**base)


def _all_tokens(corpus_dir):
    c = load_corpus(corpus_dir)
    return np.stack([c.val[i] for i in range(len(c.val))]), np.stack([c.train[i] for i in range(len(c.train))])


def test_blocks_full_eos_joined_no_token_lost(tmp_path, any_source, tokenizer_dir, sp):
    src, docs = any_source
    cfg = _cfg({src: 1.0})
    m = build_corpus(cfg, tokenizer_dir, tmp_path / "c", parts=2, progress=False)
    val, train = _all_tokens(tmp_path / "c")
    assert val.dtype == np.uint16 and val.shape == (10, 64) and train.shape == (200, 64)
    for p in m["parts"]:
        assert (tmp_path / "c" / p["file"]).stat().st_size == p["blocks"] * 64 * 2  # whole blocks only

    # Independent expectation: each document cleaned, encoded, followed by EOS, in file order.
    stream = [sp.encode(clean_text(d, cfg.symbol_level)) + [EOS] for d in docs]
    shards = [val.ravel(), *(train[i * 100:(i + 1) * 100].ravel() for i in range(2))]
    pos = 0  # index of the next document
    for shard, meta in zip(shards, [m["val"], *m["parts"]]):
        joined = list(itertools.chain.from_iterable(stream[pos:pos + meta["documents"]]))
        # the shard is the documents joined with EOS, cut at its last full block: nothing else is lost
        assert shard.tolist() == joined[:len(shard)]
        assert len(joined) - len(shard) == meta["tail_tokens_dropped"] < len(stream[pos + meta["documents"] - 1])
        pos += meta["documents"]
    assert m["train_tokens"] == 200 * 64 and m["parts"][0]["tokens_by_source"] == {src: 6400}


def test_realised_shares_manifest_and_budget(tmp_path, prose_source, tokenizer_dir):
    src, _ = prose_source
    cfg = _cfg({src: 0.75, "arithmetic": 0.25}, token_budget=64_000, session_tokens=32_000, block_len=128)
    m = build_corpus(cfg, tokenizer_dir, tmp_path / "c", parts=1, progress=False)
    assert m["mixture"]["requested"] == {src: 0.75, "arithmetic": 0.25}
    assert abs(m["mixture"]["realised"][src] - 0.75) < 0.01
    assert m["budget"]["total"] == 64_000 and m["budget"]["parts"] == 2 and len(m["parts"]) == 1
    assert m["tokenizer_hash"] == hashlib.sha256((tokenizer_dir / "spm.model").read_bytes()).hexdigest()
    s = m["sources"]["arithmetic"]
    assert s["documents"] > 0 and s["characters"] > 0 and s["tokens"] >= s["train_tokens"] > 0
    assert s["cleaning"]["symbol_chars"] == 0  # math source: exempt from thinning
    prose = m["sources"][src]["cleaning"]
    assert prose["symbol_chars"] == prose["documents_in"] > 0  # one ★ per document thinned
    assert m["sources"][src]["cleaning"]["samples"][0]["before"] != m["sources"][src]["cleaning"]["samples"][0]["after"]


def test_same_seed_same_corpus_other_seed_other_corpus_any_worker_count(tmp_path, any_source, tokenizer_dir):
    src, _ = any_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, shuffle_buffer=64)
    build_corpus(cfg, tokenizer_dir, tmp_path / "a", parts=1, progress=False)
    build_corpus(cfg, tokenizer_dir, tmp_path / "b", parts=1, progress=False, workers=2)
    build_corpus(dataclasses.replace(cfg, seed=4), tokenizer_dir, tmp_path / "c", parts=1, progress=False)
    a, b, c = (_all_tokens(tmp_path / k) for k in "abc")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_next_part_in_a_later_session_continues_the_same_stream(tmp_path, any_source, tokenizer_dir):
    src, _ = any_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, shuffle_buffer=64)
    at_once = build_corpus(cfg, tokenizer_dir, tmp_path / "once", parts=2, progress=False)
    first = build_corpus(cfg, tokenizer_dir, tmp_path / "twice", parts=1, progress=False)
    assert len(first["parts"]) == 1 and len(load_corpus(tmp_path / "twice").train) == 100
    again = build_corpus(cfg, tokenizer_dir, tmp_path / "twice", parts=2, progress=False, workers=2)
    assert np.array_equal(_all_tokens(tmp_path / "once")[1], _all_tokens(tmp_path / "twice")[1])
    assert again["mixture"]["realised"] == at_once["mixture"]["realised"]
    assert again["sources"][src]["documents"] == at_once["sources"][src]["documents"]
    # asking for more parts than the budget has builds what the budget allows
    assert len(build_corpus(cfg, tokenizer_dir, tmp_path / "twice", parts=9, progress=False)["parts"]) == 2


def test_reader_parts_and_random_access(tmp_path, prose_source, tokenizer_dir):
    src, _ = prose_source
    build_corpus(_cfg({src: 1.0}), tokenizer_dir, tmp_path / "c", parts=2, progress=False)
    everything, latest, first = (load_corpus(tmp_path / "c", part=p) for p in ("all", "latest", 0))
    assert len(everything.train) == 200 and len(latest.train) == len(first.train) == 100
    assert everything.parts == (0, 1) and latest.parts == (1,)
    assert np.array_equal(everything.train[150], latest.train[50])
    assert np.array_equal(everything.train[-1], latest.train[99])
    assert everything.train[7].shape == (64,) and everything.block_len == 64
    with pytest.raises(IndexError):
        everything.train[200]
    with pytest.raises(ValueError, match=r"part must be 'all', 'latest' or 0..1"):
        load_corpus(tmp_path / "c", part=5)
    with pytest.raises(CorpusMissing, match=r"run|build the corpus first \(notebooks/02_corpus\)"):
        load_corpus(tmp_path / "nothing")


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_build_keeps_the_previous_corpus(tmp_path, prose_source, tokenizer_dir, monkeypatch, workers):
    src, _ = prose_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, workers=workers)
    out = tmp_path / "c"
    build_corpus(cfg, tokenizer_dir, out, parts=1, progress=False)
    before = _all_tokens(out)
    files_before = sorted(p.name for p in out.iterdir())

    calls = itertools.count()
    real_add = BlockWriter.add

    def dying_add(self, doc, source="", docs=1):
        if next(calls) == 50:
            raise KeyboardInterrupt  # the session ends in the middle of a shard (50 runs of documents in)
        return real_add(self, doc, source, docs)

    monkeypatch.setattr(BlockWriter, "add", dying_add)
    for attempt in (dataclasses.replace(cfg, seed=99), cfg):  # a rebuild with new settings, then the next part
        calls = itertools.count()
        with pytest.raises(KeyboardInterrupt):
            build_corpus(attempt, tokenizer_dir, out, parts=2, progress=False)
        after = _all_tokens(out)
        assert np.array_equal(before[0], after[0]), attempt
        assert np.array_equal(before[1], after[1]), attempt
        assert load_corpus(out).manifest["parts"][0]["blocks"] == 100
        assert not list(out.glob("*.tmp"))
    monkeypatch.setattr(BlockWriter, "add", real_add)
    m = build_corpus(cfg, tokenizer_dir, out, parts=2, progress=False)  # the next run completes it
    assert len(m["parts"]) == 2
    assert sorted(p.name for p in out.iterdir()) != files_before


def test_a_worker_killed_mid_build_is_named_and_the_previous_corpus_kept(tmp_path, prose_source, tokenizer_dir,
                                                                           monkeypatch):
    import os
    import signal

    from nbhelpers.corpus.workers import WorkerError

    src, _ = prose_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, workers=2)
    out = tmp_path / "c"
    build_corpus(cfg, tokenizer_dir, out, parts=1, progress=False)
    before = _all_tokens(out)
    real_read = sources.read_part

    def read_or_die(part):
        if part.kind == "arithmetic":  # runs in a worker (forked after this patch)
            os.kill(os.getpid(), signal.SIGKILL)  # the out-of-memory killer, say
        return real_read(part)

    monkeypatch.setattr(sources, "read_part", read_or_die)
    with pytest.raises(WorkerError, match=r"corpus worker process \d+ ended without answering \(exit code -9\)"):
        build_corpus(cfg, tokenizer_dir, out, parts=2, progress=False)
    after = _all_tokens(out)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert not list(out.glob("*.tmp"))
    monkeypatch.setattr(sources, "read_part", real_read)
    assert len(build_corpus(cfg, tokenizer_dir, out, parts=2, progress=False)["parts"]) == 2


def test_vocab_that_does_not_fit_uint16_is_refused_before_writing(tmp_path, prose_source, tokenizer_dir, monkeypatch):
    with pytest.raises(VocabTooLarge, match=r"vocabulary of 70000 does not fit uint16"):
        check_vocab(70000)
    check_vocab(65536)
    monkeypatch.setattr(sentencepiece.SentencePieceProcessor, "get_piece_size", lambda self: 70000)
    with pytest.raises(VocabTooLarge):
        build_corpus(_cfg({prose_source[0]: 1.0}), tokenizer_dir, tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()


def test_missing_tokenizer_and_sources_that_run_out(tmp_path, prose_source, tokenizer_dir):
    with pytest.raises(FileNotFoundError, match=r"spm.model not found; train the tokenizer first \(notebooks/01_tokenizer\)"):
        build_corpus(_cfg({"arithmetic": 1.0}), tmp_path / "no_tokenizer", tmp_path / "c", progress=False)
    with pytest.raises(CorpusBuildError, match=r"ran out before the validation shard was full"):
        build_corpus(_cfg({prose_source[0]: 1.0}, on_exhausted="stop", val_blocks=100_000), tokenizer_dir,
                     tmp_path / "c", progress=False)
    m = build_corpus(_cfg({prose_source[0]: 1.0}, on_exhausted="stop", token_budget=10**7, session_tokens=10**7),
                     tokenizer_dir, tmp_path / "d", progress=False)
    assert m["stopped"] == prose_source[0] and 0 < m["train_blocks"] < 10**7 // 64


def test_chinchilla_budget_uses_the_profile_model():
    from nbhelpers.model import count_parameters

    cfg = config.load("colab_t4")
    b = token_budget(cfg, vocab_size=32000)
    assert b.rule == "chinchilla" and b.model_params == count_parameters(cfg.model, 32000)
    assert b.total == int(20 * b.model_params) and b.per_session == 100_000_000
    assert b.parts == -(-b.total // 100_000_000)
    assert b.part_tokens(b.parts - 1, 512) == (b.total - (b.parts - 1) * 100_000_000) // 512 * 512
    explicit = token_budget(config.load("smoke").corpus)
    assert explicit.rule == "explicit" and explicit.total == 400_000 and explicit.parts == 2
    with pytest.raises(CorpusBuildError, match="needs the model"):
        token_budget(dataclasses.replace(config.load("smoke").corpus, token_budget=0))


@pytest.mark.realtext
@pytest.mark.slow
def test_realised_shares_on_a_million_tokens_of_debian_text(tmp_path, tokenizer_dir, debian_files):
    cfg = config.CorpusConfig(mixture={"debian_ja": 0.8, "arithmetic": 0.2}, block_len=512, token_budget=1_100_000,
                              session_tokens=1_100_000, val_blocks=16, workers=2)
    m = build_corpus(cfg, tokenizer_dir, tmp_path / "c", progress=False)
    assert m["train_tokens"] >= 1_000_000
    for name, want in m["mixture"]["requested"].items():
        assert abs(m["mixture"]["realised"][name] - want) <= 0.02, (name, m["mixture"]["realised"])
    c = load_corpus(tmp_path / "c")
    assert len(c.train) == m["train_blocks"] and all(len(c.train[i]) == 512 for i in (0, len(c.train) - 1))


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_taken_by_the_packer_are_the_iterated_stream(tmp_path, tokenizer_dir, workers):
    # duplicates (dedup cuts runs), short documents (dropped) and two sources (runs switch by quota)
    docs = _docs(150) + _docs(40) + ["短い"] * 30
    path = tmp_path / "src.jsonl"
    path.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    cfg = _cfg({f"files:{path}": 0.7, "arithmetic": 0.3}, workers=workers, on_exhausted="stop")
    model = str(tokenizer_dir / "spm.model")
    with Mixer(cfg, model_file=model) as mixer:
        stream = [(name, np.asarray(doc)) for name, doc, _ in mixer]
        state_iter = mixer.state()
    with Mixer(cfg, model_file=model) as mixer:
        runs = []
        room = 37  # small rooms: a run ends with the document that reaches its room
        while (got := mixer.take(room)) is not None:
            name, tokens, n = got
            ends = np.flatnonzero(tokens == EOS) + 1  # each document ends with EOS
            assert n >= 1 and len(ends) == n and ends[-1] == len(tokens)
            before_last = ends[-2] if n > 1 else 0
            assert before_last < room  # the run's last document is the one that reaches the room, not a later one
            runs.append((name, tokens))
            room = 37 + len(runs) % 50
        state_take = mixer.state()
    assert {n for n, _ in runs} == {n for n, _ in stream} and len(runs) < len(stream)
    assert np.array_equal(np.concatenate([t for _, t in runs]), np.concatenate([d for _, d in stream]))
    by_source = {}
    for name, t in runs:
        by_source[name] = by_source.get(name, 0) + len(t)
    assert by_source == {name: sum(len(d) for n, d in stream if n == name) for name in by_source}
    assert state_take == state_iter  # resume positions, statistics and duplicate counts agree


KILLED_BUILD = """
import itertools, json, multiprocessing, sys, time
from nbhelpers import config
from nbhelpers.corpus import build_corpus
from nbhelpers.corpus.packing import BlockWriter
cfg = config.CorpusConfig(**json.loads(sys.argv[1]))
calls, real_add = itertools.count(), BlockWriter.add
def slow_add(self, doc, source="", docs=1):
    if next(calls) == 50:  # inside the second part's shard: say where, with the children, then wait to be killed
        print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
        time.sleep(600)
    return real_add(self, doc, source, docs)
BlockWriter.add = slow_add
build_corpus(cfg, sys.argv[2], sys.argv[3], parts=2, progress=False)
"""


@pytest.mark.slow
def test_sigkill_during_a_build_then_rerun_gives_the_uninterrupted_corpus(tmp_path, prose_source, tokenizer_dir):
    """02 killed with kill -9 mid-build: the parts written stay, no process outlives it, and a rerun completes the
    very corpus an uninterrupted build makes."""
    import os
    import signal
    import subprocess
    import sys

    from proc_state import survivors

    src, _ = prose_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, workers=2)
    build_corpus(cfg, tokenizer_dir, tmp_path / "ref", parts=2, progress=False)
    out = tmp_path / "c"
    build_corpus(cfg, tokenizer_dir, out, parts=1, progress=False)
    before = _all_tokens(out)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, json.dumps(dataclasses.asdict(cfg)),
                             str(tokenizer_dir), str(out)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    children = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert survivors(children) == [], "corpus processes outlived the killed build"
    after = _all_tokens(out)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])  # part 0 and val intact
    build_corpus(cfg, tokenizer_dir, out, parts=2, progress=False)
    ref, got = _all_tokens(tmp_path / "ref"), _all_tokens(out)
    assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1])
    assert not list(out.glob("*.tmp"))
