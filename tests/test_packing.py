"""Packing and the corpus: full blocks, EOS joins, no token lost, determinism, parts, atomicity, bad inputs."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import json

import numpy as np
import pytest
import sentencepiece
from conftest import EOS

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
from nbhelpers.corpus.producer import corpus_stream, make_parts, produce


@pytest.fixture(scope="module")
def sp(tokenizer_dir):
    return sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_dir / "spm.model"))


def _docs(n):
    # distinct documents of varied length, with symbols for the cleaner to thin
    return [f"第{i}話★ 春の朝、{'駅前の桜が咲き始めました。' * (1 + i % 7)}「きれいだね」と{i}人が言いました！" for i in range(n)]


def _write_source(directory, docs, fmt):
    """Documents as a plain-text, JSONL or parquet file (read by the workers in slices) or gzipped JSONL (streamed)."""
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
    """The prose documents in each format; slices and streamed pieces are tiny so that a part spans many."""
    from nbhelpers.corpus import reading

    monkeypatch.setattr(sources.slices, "FIRST_RANGE_BYTES", 300)
    monkeypatch.setattr(sources.slices, "RANGE_BYTES", 2000)
    monkeypatch.setattr(reading, "FIRST_STREAM_CHARS", 200)
    monkeypatch.setattr(reading, "STREAM_CHARS", 900)
    docs = _docs(400)
    return _write_source(tmp_path / "src", docs, request.param), docs


def _cfg(mixture, **kw):
    base = dict(mixture=mixture, block_len=64, token_budget=12_800, part_tokens=6_400, val_blocks=10,
                min_chars=10, workers=1, shuffle_buffer=0, seed=3)
    base.update(kw)
    return config.CorpusConfig(**base)


def _build(cfg, tokenizer_dir, out, parts=0, workers=None):
    """02's build (the validation shard) into out/c, then `parts` parts of the stream into out/parts."""
    manifest = build_corpus(cfg, tokenizer_dir, out / "c", progress=False, workers=workers)
    if not parts:
        return manifest, []
    stream, start, hashes = corpus_stream(cfg, tokenizer_dir, out / "c", out / "parts", workers=workers or cfg.workers)
    return manifest, make_parts(stream, start, hashes, parts)


def _tokens(out, parts):
    """(validation blocks, the parts' blocks in stream order)."""
    c = load_corpus(out / "c")
    val = np.stack([c.val[i] for i in range(len(c.val))])
    train = [np.fromfile(out / "parts" / p["file"], dtype=np.uint16).reshape(-1, c.block_len) for p in parts]
    return val, np.concatenate(train) if train else np.zeros((0, c.block_len), np.uint16)


def test_blocks_full_eos_joined_no_token_lost(tmp_path, any_source, tokenizer_dir, sp):
    src, docs = any_source
    cfg = _cfg({src: 1.0})
    m, parts = _build(cfg, tokenizer_dir, tmp_path, parts=2)
    val, train = _tokens(tmp_path, parts)
    assert val.dtype == np.uint16 and val.shape == (10, 64) and train.shape == (200, 64)
    for p in parts:
        assert (tmp_path / "parts" / p["file"]).stat().st_size == p["blocks"] * 64 * 2  # whole blocks only

    # Independent expectation: each document cleaned, encoded, followed by EOS, in file order.
    stream = [sp.encode(clean_text(d, cfg.symbol_level)) + [EOS] for d in docs]
    shards = [val.ravel(), *(train[i * 100:(i + 1) * 100].ravel() for i in range(2))]
    pos = 0  # index of the next document
    for shard, meta in zip(shards, [m["val"], *parts]):
        joined = list(itertools.chain.from_iterable(stream[pos:pos + meta["documents"]]))
        # the shard is the documents joined with EOS, cut at its last full block: nothing else is lost
        assert shard.tolist() == joined[:len(shard)]
        assert len(joined) - len(shard) == meta["tail_tokens_dropped"] < len(stream[pos + meta["documents"] - 1])
        pos += meta["documents"]
    assert parts[0]["tokens_by_source"] == {src: 6400} and not parts[1]["last"]
    assert parts[0]["end"] == parts[1]["start"] and parts[0]["start"]["dedup"] == m["train_start"]["dedup"]


def test_realised_shares_manifest_and_budget(tmp_path, prose_source, tokenizer_dir):
    src, _ = prose_source
    cfg = _cfg({src: 0.75, "arithmetic": 0.25}, token_budget=64_000, part_tokens=32_000, block_len=128, val_blocks=250)
    m, _ = _build(cfg, tokenizer_dir, tmp_path)
    assert m["mixture"]["requested"] == {src: 0.75, "arithmetic": 0.25}
    assert abs(m["mixture"]["realised"][src] - 0.75) < 0.01
    assert m["budget"] == {"total": 64_000, "blocks": 500, "part_blocks": 250, "parts": 2, "rule": "explicit",
                           "model_params": None, "tokens_per_param": 20.0}
    assert m["tokenizer_hash"] == hashlib.sha256((tokenizer_dir / "spm.model").read_bytes()).hexdigest()
    s = m["sources"]["arithmetic"]
    assert s["documents"] > 0 and s["characters"] > 0 and s["tokens"] > 0
    assert s["cleaning"]["symbol_chars"] == 0  # math source: exempt from thinning
    prose = m["sources"][src]["cleaning"]
    assert prose["symbol_chars"] == prose["documents_in"] > 0  # one ★ per document thinned
    assert prose["samples"][0]["before"] != prose["samples"][0]["after"]
    hashes = np.fromfile(tmp_path / "c" / m["train_start"]["dedup_file"], dtype=np.uint64)
    assert len(hashes) == m["train_start"]["dedup"] == sum(s["documents"] for s in m["sources"].values())


def test_same_seed_same_corpus_other_seed_other_corpus_any_worker_count(tmp_path, any_source, tokenizer_dir):
    src, _ = any_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, shuffle_buffer=64)
    a = _tokens(tmp_path / "a", _build(cfg, tokenizer_dir, tmp_path / "a", parts=1)[1])
    b = _tokens(tmp_path / "b", _build(cfg, tokenizer_dir, tmp_path / "b", parts=1, workers=2)[1])
    c = _tokens(tmp_path / "c", _build(dataclasses.replace(cfg, seed=4), tokenizer_dir, tmp_path / "c", parts=1)[1])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_a_later_session_continues_the_stream_from_a_part_start_alone(tmp_path, any_source, tokenizer_dir):
    """Kaggle's next saved version: no parts folder, only the part's start state and the duplicate memory."""
    src, _ = any_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, shuffle_buffer=64, token_budget=64 * 400)
    _, at_once = _build(cfg, tokenizer_dir, tmp_path / "once", parts=3)
    _, first = _build(cfg, tokenizer_dir, tmp_path / "twice", parts=1)
    start = first[0]["end"]  # what a checkpoint taken in part 1 holds
    hashes = np.fromfile(tmp_path / "twice" / "parts" / "dedup.u64", dtype=np.uint64)[:start["dedup"]]
    stream, _, _ = corpus_stream(cfg, tokenizer_dir, tmp_path / "twice" / "c", tmp_path / "later", workers=2)
    stream.store().ensure_dedup(hashes)
    produce({"stream": dataclasses.asdict(stream), "first": 1, "start": start, "last": 2})
    for k in (1, 2):
        later = stream.store().meta(k)
        assert later == {**at_once[k], "start": later["start"]} and later["start"] == at_once[k]["start"]
        assert (tmp_path / "later" / later["file"]).read_bytes() == (tmp_path / "once" / "parts" / later["file"]).read_bytes()


def test_load_corpus_and_random_access(tmp_path, prose_source, tokenizer_dir):
    src, _ = prose_source
    m, _ = _build(_cfg({src: 1.0}), tokenizer_dir, tmp_path)
    c = load_corpus(tmp_path / "c")
    assert len(c.val) == 10 and c.val[7].shape == (64,) and c.block_len == 64 and c.manifest == m
    assert np.array_equal(c.val[-1], c.val[9])
    with pytest.raises(IndexError):
        c.val[10]
    with pytest.raises(CorpusMissing, match=r"build the corpus first \(notebooks/02_corpus\)"):
        load_corpus(tmp_path / "nothing")
    old = {k: v for k, v in m.items() if k != "train_start"}
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(CorpusMissing, match=r"an earlier format .* build it again"):
        load_corpus(tmp_path / "c")


def _flip(path, offset=-3):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_corpus_artifacts_carry_checksums_verified_when_read(tmp_path, prose_source, tokenizer_dir):
    from nbhelpers.corpus.build import train_start
    from nbhelpers.corpus.reader import CorpusCorrupt

    src, _ = prose_source
    m, _ = _build(_cfg({src: 1.0}), tokenizer_dir, tmp_path)
    c = tmp_path / "c"
    val, dedup = c / m["val"]["file"], c / m["train_start"]["dedup_file"]
    assert m["val"]["sha256"] == hashlib.sha256(val.read_bytes()).hexdigest() and m["sha256"]
    assert train_start(c)[2].dtype == np.uint64
    good = val.read_bytes()
    _flip(val)  # one flipped bit of a token: 06's perplexity changed silently (227.0 -> 235.5)
    with pytest.raises(CorpusCorrupt, match=rf"{val.name}: the validation shard differs from the sha256 recorded"):
        load_corpus(c)
    with pytest.warns(UserWarning, match="validation shard differs .*; building the corpus again"):
        m = build_corpus(_cfg({src: 1.0}), tokenizer_dir, c, progress=False)  # 02 again repairs it
    assert val.read_bytes() == good and len(load_corpus(c).val) == 10
    _flip(dedup, 0)
    with pytest.raises(CorpusCorrupt, match="duplicate memory at the stream's start differs"):
        train_start(c)
    _flip(dedup, 0)
    manifest = c / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace(f'"blocks": {m["val"]["blocks"]}', f'"blocks": {m["val"]["blocks"] - 1}', 1))
    with pytest.raises(CorpusCorrupt, match="manifest.json: its content differs from the sha256"):
        load_corpus(c)
    # a manifest of an earlier nbhelpers (no checksums): read with a warning; 02 again records them, builds nothing
    old = json.loads(text)
    del old["sha256"], old["val"]["sha256"], old["train_start"]["dedup_sha256"]
    manifest.write_text(json.dumps(old))
    with pytest.warns(UserWarning, match="without checksums"):
        load_corpus(c)
    stamp = val.stat().st_mtime_ns
    assert build_corpus(_cfg({src: 1.0}), tokenizer_dir, c, progress=False)["sha256"]
    assert val.stat().st_mtime_ns == stamp and load_corpus(c).manifest == m


@pytest.mark.parametrize("key, value", [("val", "../../elsewhere/val.bin"), ("val", "/etc/passwd"),
                                        ("train_start", "../outside.u64")])
def test_file_names_in_the_manifest_stay_inside_the_corpus_folder(tmp_path, prose_source, tokenizer_dir, key, value):
    from nbhelpers.corpus.build import train_start
    from nbhelpers.corpus.reader import CorpusCorrupt, seal_manifest

    src, _ = prose_source
    m, _ = _build(_cfg({src: 1.0}), tokenizer_dir, tmp_path / "run")
    c = tmp_path / "run" / "c"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "val.bin").write_bytes((c / m["val"]["file"]).read_bytes())  # a shard that would read
    (tmp_path / "run" / "outside.u64").write_bytes((c / m["train_start"]["dedup_file"]).read_bytes())
    m[key]["file" if key == "val" else "dedup_file"] = value
    (c / "manifest.json").write_text(json.dumps(seal_manifest(m)))  # sealed: the name itself is refused
    with pytest.raises(CorpusCorrupt, match=r"expected a file name inside .*/c \(the manifest names its files"):
        train_start(c) if key == "train_start" else load_corpus(c)


def test_a_validation_shard_larger_than_the_budget_is_refused_before_writing(tmp_path, prose_source, tokenizer_dir):
    with pytest.raises(config.ConfigError, match=r"corpus.val_blocks=100000000 makes a validation shard of "
                                                 r"12,800,000,000 tokens, more than corpus.token_budget=400,000"):
        config.load("smoke", ["corpus.val_blocks=100000000"])
    src, _ = prose_source
    out = tmp_path / "c"
    out.mkdir()
    (out / "val-0123456789ab.bin.tmp").write_bytes(b"\0" * 4096)  # what a killed build of such a shard left
    # Chinchilla (token_budget=0): the budget follows from the model, known to 02, which checks it there
    cfg = _cfg({src: 1.0}, token_budget=0, val_blocks=100_000)
    with pytest.raises(CorpusBuildError, match=r"corpus.val_blocks=100000 makes a validation shard of 6,400,000 "
                                               r"tokens .*more than the training budget of 200,000 tokens"):
        build_corpus(cfg, tokenizer_dir, out, progress=False, n_params=10_000)
    build_corpus(_cfg({src: 1.0}), tokenizer_dir, out, progress=False)
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_builds_keep_what_was_complete(tmp_path, prose_source, tokenizer_dir, monkeypatch, workers):
    src, _ = prose_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, workers=workers)
    _, reference = _build(cfg, tokenizer_dir, tmp_path / "ref", parts=2)
    out = tmp_path / "run"
    _, parts = _build(cfg, tokenizer_dir, out, parts=1)
    before = _tokens(out, parts)
    files_before = sorted(p.name for p in (out / "c").iterdir())

    calls = itertools.count()
    real_add = BlockWriter.add

    def dying_add(self, doc, source="", docs=1):
        if next(calls) == 50:
            raise KeyboardInterrupt  # the session ends in the middle of a shard (50 runs of documents in)
        return real_add(self, doc, source, docs)

    monkeypatch.setattr(BlockWriter, "add", dying_add)
    with pytest.raises(KeyboardInterrupt):  # a rebuild with new settings
        build_corpus(dataclasses.replace(cfg, seed=99, val_blocks=80), tokenizer_dir, out / "c", progress=False)
    assert sorted(p.name for p in (out / "c").iterdir()) == files_before and not list(out.glob("**/*.tmp"))
    assert np.array_equal(_tokens(out, parts)[0], before[0])
    calls = itertools.count()
    with pytest.raises(KeyboardInterrupt):  # the next part, cut in the middle
        _build(cfg, tokenizer_dir, out, parts=2)
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["dedup.u64", "part-00000.bin", "part-00000.json"]
    assert np.array_equal(_tokens(out, parts)[1], before[1])
    monkeypatch.setattr(BlockWriter, "add", real_add)
    _, again = _build(cfg, tokenizer_dir, out, parts=2)  # the next run completes it, as an uninterrupted one
    assert np.array_equal(_tokens(out, again)[1], _tokens(tmp_path / "ref", reference)[1])
    assert not list((out / "parts").glob("*.tmp"))


@pytest.mark.filterwarnings("ignore:This process.*is multi-threaded, use of fork:DeprecationWarning")  # on purpose
def test_a_worker_killed_mid_part_is_named_and_the_parts_before_kept(tmp_path, prose_source, tokenizer_dir,
                                                                     monkeypatch):
    import multiprocessing
    import os
    import signal

    from nbhelpers.corpus import pieces
    from nbhelpers.corpus.workers import WorkerError

    src, _ = prose_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, workers=2)
    _, parts = _build(cfg, tokenizer_dir, tmp_path, parts=1)
    before = _tokens(tmp_path, parts)
    real_read = pieces.read_piece

    def read_or_die(piece):
        if piece.kind == "arithmetic":  # runs in a worker (forked after this patch: see below)
            os.kill(os.getpid(), signal.SIGKILL)  # the out-of-memory killer, say
        return real_read(piece)

    monkeypatch.setattr(pieces, "read_piece", read_or_die)
    from nbhelpers.corpus import mixing

    monkeypatch.setattr(mixing, "read_piece", read_or_die)
    # the workers normally come from a fork server, which never sees this patch: fork them from here instead
    monkeypatch.setattr(mixing, "worker_context", lambda: multiprocessing.get_context("fork"))
    with pytest.raises(WorkerError, match=r"corpus worker process \d+ ended without answering \(exit code -9\)"):
        _build(cfg, tokenizer_dir, tmp_path, parts=2)
    assert np.array_equal(_tokens(tmp_path, parts)[1], before[1]) and not (tmp_path / "parts" / "part-00001.json").exists()
    monkeypatch.setattr(mixing, "read_piece", real_read)
    assert len(_build(cfg, tokenizer_dir, tmp_path, parts=2)[1]) == 2


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
        build_corpus(_cfg({prose_source[0]: 1.0}, on_exhausted="stop", val_blocks=100_000, token_budget=10**8),
                     tokenizer_dir, tmp_path / "c", progress=False)
    _, parts = _build(_cfg({prose_source[0]: 1.0}, on_exhausted="stop", token_budget=10**7), tokenizer_dir,
                      tmp_path / "d", parts=50)
    assert parts[-1]["last"] and parts[-1]["stopped"] == prose_source[0] and not any(p["last"] for p in parts[:-1])
    assert 0 < sum(p["blocks"] for p in parts) < 50 * 100


def test_chinchilla_budget_uses_the_profile_model():
    from nbhelpers.model import count_parameters

    cfg = config.load("colab_t4")
    b = token_budget(cfg, vocab_size=32000)
    assert b.rule == "chinchilla" and b.model_params == count_parameters(cfg.model, 32000)
    assert b.total == int(20 * b.model_params) and b.blocks == b.total // 512
    assert b.part_blocks == 8_000_000 // 512 and b.parts == -(-b.blocks // b.part_blocks)
    explicit = token_budget(config.load("smoke").corpus)
    assert explicit.rule == "explicit" and explicit.total == 400_000 and explicit.part_blocks == 256
    with pytest.raises(CorpusBuildError, match="needs the model"):
        token_budget(dataclasses.replace(config.load("smoke").corpus, token_budget=0))
    with pytest.raises(CorpusBuildError, match=r"corpus.part_tokens=100 is smaller than one block"):
        token_budget(dataclasses.replace(config.load("smoke").corpus, part_tokens=100))


@pytest.mark.realtext
@pytest.mark.slow
def test_realised_shares_on_a_million_tokens_of_debian_text(tmp_path, tokenizer_dir, debian_files):
    cfg = config.CorpusConfig(mixture={"debian_ja": 0.8, "arithmetic": 0.2}, block_len=512, token_budget=1_100_000,
                              part_tokens=1_100_000, val_blocks=16, workers=2)
    _, parts = _build(cfg, tokenizer_dir, tmp_path, parts=1)
    train = _tokens(tmp_path, parts)[1]
    assert train.size >= 1_000_000 and train.shape[1] == 512
    tokens = parts[0]["tokens_by_source"]
    for name, want in {"debian_ja": 0.8, "arithmetic": 0.2}.items():
        assert abs(tokens[name] / sum(tokens.values()) - want) <= 0.02, (name, tokens)


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
from pathlib import Path
from nbhelpers import config
from nbhelpers.corpus.packing import BlockWriter
from nbhelpers.corpus.producer import corpus_stream, make_parts
cfg = config.CorpusConfig(**json.loads(sys.argv[1]))
calls, real_add = itertools.count(), BlockWriter.add
def slow_add(self, doc, source="", docs=1):
    if next(calls) == 50:  # inside the second part's shard: say where, with the children, then wait to be killed
        print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
        time.sleep(600)
    return real_add(self, doc, source, docs)
BlockWriter.add = slow_add
out = Path(sys.argv[3])
stream, start, hashes = corpus_stream(cfg, sys.argv[2], out / "c", out / "parts", workers=cfg.workers)
make_parts(stream, start, hashes, 2)
"""


@pytest.mark.slow
def test_sigkill_during_a_build_then_rerun_gives_the_uninterrupted_corpus(tmp_path, prose_source, tokenizer_dir):
    """Parts built ahead (02's PARTS) killed with kill -9 mid-part: the parts written stay, no process outlives it,
    and a rerun completes the very stream an uninterrupted build makes."""
    import os
    import signal
    import subprocess
    import sys

    from proc_state import survivors

    src, _ = prose_source
    cfg = _cfg({src: 0.6, "arithmetic": 0.4}, workers=2)
    _, reference = _build(cfg, tokenizer_dir, tmp_path / "ref", parts=2)
    out = tmp_path / "run"
    _, parts = _build(cfg, tokenizer_dir, out, parts=1)
    before = _tokens(out, parts)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, json.dumps(dataclasses.asdict(cfg)),
                             str(tokenizer_dir), str(out)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    children = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert survivors(children) == [], "corpus processes outlived the killed build"
    after = _tokens(out, parts)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])  # part 0 and val intact
    assert not (out / "parts" / "part-00001.json").exists()
    _, again = _build(cfg, tokenizer_dir, out, parts=2)
    ref, got = _tokens(tmp_path / "ref", reference), _tokens(out, again)
    assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1])
    assert not list((out / "parts").glob("*.tmp"))
