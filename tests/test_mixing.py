"""Mixing: weights checked, shares held, deterministic, duplicates removed, exhaustion rules, bad inputs named."""

from __future__ import annotations

import dataclasses
import itertools
import json
import pickle
from collections import Counter

import numpy as np
import pytest

from nbhelpers.config import CorpusConfig
from nbhelpers.corpus import Document, Mixer, MixtureError, mixed_documents, pieces, reading, validate_mixture
from nbhelpers.corpus.dedup import HashSet
from nbhelpers.sources import BadUTF8, SourceError


def _jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def _prose(n, tag="文"):
    return [f"{tag}{i}番目の文書です。今日は天気が良いので、公園まで散歩に出かけました。" * (1 + i % 3) for i in range(n)]


def _cfg(mixture, **kw):
    base = dict(mixture=mixture, min_chars=10, workers=1, shuffle_buffer=0, seed=7)
    base.update(kw)
    return CorpusConfig(**base)


def test_validate_mixture_normalises_and_drops_zero_weights():
    assert validate_mixture({"arithmetic": 3, "bundled_prose": 1, "debian_ja": 0}) == {"arithmetic": 0.75,
                                                                                        "bundled_prose": 0.25}


@pytest.mark.parametrize("mixture, match", [
    ({"wikipedia": 1.0}, r"unknown source 'wikipedia'; known: wikipedia_ja, .*arithmetic"),
    ({"arithmetic": -0.5, "bundled_prose": 1}, r"mixture\['arithmetic'\].*>= 0, got -0.5"),
    ({"arithmetic": 0, "bundled_prose": 0.0}, r"all weights are zero"),
    ({"arithmetic": float("nan")}, r"finite number"),
    ({}, r"non-empty dict"),
])
def test_bad_mixtures_are_named(mixture, match):
    with pytest.raises((MixtureError, SourceError), match=match):
        validate_mixture(mixture)


def test_documents_are_strings_that_know_their_source(tmp_path):
    src = f"files:{_jsonl(tmp_path / 'a.jsonl', _prose(20))}"
    docs = list(itertools.islice(mixed_documents(_cfg({src: 1.0, "arithmetic": 1.0})), 30))
    assert all(isinstance(d, str) and isinstance(d, Document) for d in docs)
    assert {d.source for d in docs} == {src, "arithmetic"}
    assert pickle.loads(pickle.dumps(docs[0])).source == docs[0].source


def test_char_shares_follow_weights_and_seed_is_deterministic(tmp_path):
    src = f"files:{_jsonl(tmp_path / 'a.jsonl', _prose(3000))}"
    cfg = _cfg({src: 0.7, "arithmetic": 0.3}, shuffle_buffer=100)
    docs = list(itertools.islice(mixed_documents(cfg), 2000))
    chars = Counter()
    for d in docs:
        chars[d.source] += len(d)
    share = chars[src] / sum(chars.values())
    assert abs(share - 0.7) < 0.01
    again = list(itertools.islice(mixed_documents(cfg), 2000))
    assert again == docs and [d.source for d in again] == [d.source for d in docs]
    other = list(itertools.islice(mixed_documents(cfg, seed=8), 2000))
    assert other != docs


def test_worker_processes_give_the_same_stream_as_one_process(tmp_path):
    src = f"files:{_jsonl(tmp_path / 'a.jsonl', _prose(400))}"
    cfg = _cfg({src: 0.5, "arithmetic": 0.5}, shuffle_buffer=50)
    one = list(itertools.islice(mixed_documents(cfg, workers=1), 500))
    two = list(itertools.islice(mixed_documents(cfg, workers=2), 500))
    assert one == two


def test_exact_duplicates_are_removed_across_files_and_counted(tmp_path):
    docs = _prose(50)
    _jsonl(tmp_path / "a.jsonl", docs)
    _jsonl(tmp_path / "b.jsonl", docs[:20] + ["  " + docs[0] + "  "])  # whitespace-only variant is a duplicate too
    src = f"files:{tmp_path}/*.jsonl"
    mixer = Mixer(_cfg({src: 1.0}, on_exhausted="stop"))
    out = [doc for _, doc, _ in mixer]
    assert len(out) == 50 and len(set(out)) == 50
    stats = mixer.state()[src]["stats"]
    assert stats["duplicate_documents"] == 21 and stats["documents_in"] == 71 and stats["documents_out"] == 50
    mixer.close()
    undeduped = [doc for _, doc, _ in Mixer(_cfg({src: 1.0}, on_exhausted="stop", dedup=False))]
    assert len(undeduped) == 71


@pytest.mark.parametrize("workers", [1, 2])
def test_exhausted_source_repeats_or_stops(tmp_path, workers):
    small = f"files:{_jsonl(tmp_path / 's.jsonl', _prose(5, '小'))}"
    cfg = _cfg({small: 0.5, "arithmetic": 0.5}, workers=workers)
    stopped = Mixer(dataclasses.replace(cfg, on_exhausted="stop"))
    names = [name for name, _, _ in stopped]
    stopped.close()
    assert names.count(small) == 5 and stopped.stopped == small
    repeated = Mixer(cfg)
    names = [name for name, _, _ in itertools.islice(repeated, 200)]
    assert names.count(small) > 5  # a new epoch: repeats are not dropped as duplicates
    assert repeated.state()[small]["epoch"] >= 1
    repeated.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_source_empty_after_cleaning_is_named(tmp_path, workers):
    src = f"files:{_jsonl(tmp_path / 'short.jsonl', ['短い', 'ほんの少し', '★★★★★★★★★★★★★★★★'])}"
    with pytest.raises(SourceError, match=r"source 'files:.*short.jsonl' has no documents left after cleaning: 3 read, "
                                          r"3 shorter than min_chars=10"):
        list(mixed_documents(_cfg({src: 1.0, "arithmetic": 1.0}, workers=workers)))


def test_generated_source_that_cleaning_always_drops_is_an_error_not_a_hang():
    with pytest.raises(SourceError, match=r"'arithmetic': the first 20000 documents were all dropped"):
        next(iter(mixed_documents(_cfg({"arithmetic": 1.0}, min_chars=100_000))))


@pytest.mark.parametrize("workers", [1, 2])
def test_jsonl_line_not_json_or_without_field_names_file_and_line(tmp_path, workers):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "一行目は正しい文書です。十分な長さ。"}\n{not json\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"bad.jsonl line 2: not JSON"):
        list(mixed_documents(_cfg({f"files:{bad}": 1.0}, workers=workers)))
    nofield = _jsonl(tmp_path / "nofield.jsonl", ["本文は別の欄にあります。十分な長さです。"], field="body")
    with pytest.raises(SourceError, match=r"nofield.jsonl line 1: expected an object with a string field 'text'"):
        list(mixed_documents(_cfg({f"files:{nofield}": 1.0}, workers=workers)))


@pytest.mark.parametrize("workers", [1, 2])
def test_non_utf8_file_is_named_with_offset_or_skipped_and_counted(tmp_path, workers):
    (tmp_path / "good.txt").write_text("正しいUTF-8の文書です。十分な長さがあります。", encoding="utf-8")
    (tmp_path / "latin.txt").write_bytes("abc 日本語".encode() + "café".encode("latin-1"))
    src = f"files:{tmp_path}/*.txt"
    with pytest.raises(BadUTF8, match=r"latin.txt: not UTF-8 at byte offset 16"):
        list(mixed_documents(_cfg({src: 1.0}, on_exhausted="stop", workers=workers)))
    with Mixer(_cfg({src: 1.0}, on_exhausted="stop", on_bad_utf8="skip", workers=workers)) as mixer:
        assert len([d for _, d, _ in mixer]) == 1
        assert mixer.state()[src]["skipped_files"] == {str(tmp_path / "latin.txt"): 1}
    # epochs read the files again: a skipped file is still counted once, also after a resume
    with Mixer(_cfg({src: 1.0}, on_bad_utf8="skip", dedup=False, workers=workers)) as mixer:
        docs = [d for _, d, _ in itertools.islice(mixer, 5)]
        state = mixer.state()
        assert state[src]["epoch"] == 4 and state[src]["skipped_files"] == {str(tmp_path / "latin.txt"): 1}
    with Mixer(_cfg({src: 1.0}, on_bad_utf8="skip", dedup=False, workers=workers), state=state) as mixer:
        assert [d for _, d, _ in itertools.islice(mixer, 3)] == docs[:3]
        assert mixer.state()[src]["skipped_files"] == {str(tmp_path / "latin.txt"): 1}


def test_hash_set_is_exact_across_merges():
    hs = HashSet(buffer=4)
    values = [int(v) for v in np.random.default_rng(0).integers(1, 2**63, 50, dtype=np.int64)]
    assert [hs.seen(v) for v in values] == [False] * 50
    assert all(hs.seen(v) for v in values)
    again = HashSet(hs.array())
    assert all(again.seen(v) for v in values) and len(again) == 50


def test_duplicates_found_across_merges_of_the_hash_memory(tmp_path, monkeypatch):
    from nbhelpers.corpus import dedup

    monkeypatch.setattr(dedup, "DEDUP_BUFFER", 3)  # merge into the sorted array every 3 documents
    docs = _prose(40)
    src = f"files:{_jsonl(tmp_path / 'a.jsonl', docs + docs[::-1] + docs[5:9])}"
    out = [doc for _, doc, _ in Mixer(_cfg({src: 1.0}, on_exhausted="stop"))]
    assert out == docs


def test_plain_text_files_stream_in_chunks_with_the_same_documents(tmp_path, monkeypatch):
    from nbhelpers import sources

    text = "一つ目\n続き\n\n\n  \n二つ目 \r\n\r\n三つ目\n \t\n四つ目\n\u3000\n\n五つ目" * 7 + "\n最後の段落"
    path = tmp_path / "a.txt"
    path.write_bytes(text.encode("utf-8"))
    whole = list(sources.split_paragraphs(text))
    for chunk in (1, 5, 16, 1 << 22):  # chunks of a few bytes cut documents and breaks anywhere
        monkeypatch.setattr(sources.local, "TEXT_CHUNK", chunk)
        assert list(sources.iter_texts(f"files:{path}")) == whole
    bad = tmp_path / "b.txt"
    bad.write_bytes(("段落です。\n\n" * 20).encode("utf-8") + b"\xff\n")
    monkeypatch.setattr(sources.local, "TEXT_CHUNK", 16)
    with pytest.raises(BadUTF8, match=r"b.txt: not UTF-8 at byte offset 340"):
        list(sources.iter_texts(f"files:{bad}"))
    skipped = Counter()
    assert list(sources.iter_texts(f"files:{bad}", on_bad_utf8="skip", skipped=skipped)) == []  # nothing half-read
    assert skipped[str(bad)] == 1


def test_plain_text_pieces_give_the_streamed_documents_wherever_they_are_cut(tmp_path):
    from nbhelpers import sources

    rng = np.random.default_rng(0)
    breaks = ["\n\n", "\n\n\n", "\n  \n", "\r\n\r\n", "\n\u3000\n\n", "\n \t\n"]
    paras = [f"段落{i}です。" + "文" * int(rng.integers(0, 40)) + ("\n続く行" if i % 3 else "") for i in range(300)]
    text = "".join(p + breaks[int(rng.integers(len(breaks)))] for p in paras) + "末尾"
    path = tmp_path / "a.txt"
    path.write_bytes(text.encode("utf-8"))
    whole = list(sources.split_paragraphs(text))
    src = sources.resolve(f"files:{path}")
    assert pieces.sliceable(src) and pieces.sliceable(sources.resolve("arithmetic"))
    for first, size in ((1, 1), (7, 50), (100, 1000), (1 << 20, 1 << 20)):  # cuts land anywhere, even inside a character
        ranges = list(sources.text_ranges(path, first, size))
        assert ranges[0][0] == 0 and ranges[-1][1] == len(text.encode()) and all(a < b for a, b in ranges)
        assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
        parts = [pieces.Piece("text", str(path), a, b, 0) for a, b in ranges]
        assert [d for p in parts for d in pieces.read_piece(p)] == whole
    shuffled = pieces.read_piece(pieces.Piece("text", str(path), 0, len(text.encode()), 5))
    assert sorted(shuffled) == sorted(whole) and shuffled != whole
    assert shuffled == pieces.read_piece(pieces.Piece("text", str(path), 0, len(text.encode()), 5))
    # a bad byte is named by its offset in the file, not in the part
    bad = tmp_path / "b.txt"
    bad.write_bytes(("段落です。\n\n" * 20).encode("utf-8") + b"\xff\n")
    last = list(sources.text_ranges(bad, 20, 20))[-1]
    with pytest.raises(BadUTF8, match=r"b.txt: not UTF-8 at byte offset 340"):
        pieces.read_piece(pieces.Piece("text", str(bad), *last, 0))
    (tmp_path / "c.jsonl").write_text("{}\n")
    assert pieces.sliceable(sources.resolve(f"files:{tmp_path}/*"))
    (tmp_path / "d.jsonl.gz").write_bytes(b"")
    assert not pieces.sliceable(sources.resolve(f"files:{tmp_path}/*"))  # gzip is read front to back


def test_parquet_pieces_are_runs_of_row_groups_with_the_streamed_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nbhelpers import sources

    texts = [f"{i}番目の記事です。" * (1 + i % 5) if i % 13 else None for i in range(300)]  # nulls are skipped
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": list(range(300)), "body": texts}), path, row_group_size=16)
    src = sources.resolve(f"files:{path}#body")
    assert pieces.sliceable(src)
    whole = list(sources.iter_texts(src))
    assert len(whole) == 300 - 24
    for first, size in ((1, 1), (500, 3000), (1 << 30, 1 << 30)):
        ranges = list(sources.row_group_ranges(path, "body", first, size))
        assert ranges[0][0] == 0 and ranges[-1][1] == 19 and all(a < b for a, b in ranges)
        parts = [pieces.Piece("parquet", str(path), a, b, 0, "body") for a, b in ranges]
        assert [d for p in parts for d in pieces.read_piece(p)] == whole
    assert len(list(sources.row_group_ranges(path, "body", 1, 1))) == 19  # every row group its own part
    with pytest.raises(SourceError, match=r"a.parquet: no column 'text'; columns: \['id', 'body'\]"):
        list(pieces.iter_slices(f"files:{path}"))


def test_a_glob_with_gzip_and_parquet_reads_each_file_by_its_kind_on_both_paths(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from nbhelpers import sources

    texts = [f"{i}番目の記事です。" * 3 for i in range(40)]
    pq.write_table(pa.table({"text": texts[:20]}), tmp_path / "a.parquet", row_group_size=8)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in texts[20:]).encode()))
    src = sources.resolve(f"files:{tmp_path}/*")
    assert not pieces.sliceable(src)  # the gzip file: the whole glob is read front to back by a reader thread
    for on_bad_utf8 in ("error", "skip"):  # skip checks text files whole; a parquet file is not text and is read
        streamed = [d for _, _, _, piece in reading.piece_stream(
            src, "g", seed=0, shuffle_buffer=0, on_exhausted="stop", on_bad_utf8=on_bad_utf8) if piece
            for d in pieces.read_piece(piece)]
        assert streamed == list(sources.iter_texts(src, on_bad_utf8=on_bad_utf8)) == texts


def test_jsonl_pieces_give_the_streamed_documents_and_name_bad_lines_alike(tmp_path):
    from nbhelpers import sources

    rows = [json.dumps({"text": f"{i}行目の文書です。" * (1 + i % 4)}, ensure_ascii=False) for i in range(200)]
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(r if i % 17 else "  " for i, r in enumerate(rows)) + "\n", encoding="utf-8")
    whole = list(sources.iter_texts(f"files:{path}"))
    for first, size in ((1, 1), (50, 300), (1 << 20, 1 << 20)):
        parts = [pieces.Piece("jsonl", str(path), a, b, 0) for a, b in sources.text_ranges(path, first, size, (b"\n",))]
        assert [d for p in parts for d in pieces.read_piece(p)] == whole
    # errors name the file and the line as the streaming reader does, from whichever part holds the line
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(("\n".join(rows[:120]) + '\n{"text": 1}\n').encode() + "\n".join(rows[:5]).encode())
    bad_utf8 = tmp_path / "latin.jsonl"
    bad_utf8.write_bytes(("\n".join(rows[:90]) + "\n").encode() + '{"text": "caf\xe9"}\n'.encode("latin-1"))
    for path, expected in ((bad, r"bad.jsonl line 121: expected an object with a string field 'text'"),
                           (bad_utf8, r"latin.jsonl line 91 \(file offset \d+\): not UTF-8 at byte offset 13")):
        with pytest.raises(SourceError, match=expected) as streamed:
            list(sources.iter_texts(f"files:{path}"))
        with pytest.raises(SourceError) as parted:
            for a, b in sources.text_ranges(path, 100, 700, (b"\n",)):
                pieces.read_piece(pieces.Piece("jsonl", str(path), a, b, 0))
        assert str(parted.value) == str(streamed.value)


def test_generated_pieces_are_the_same_whoever_makes_them():

    parts = list(itertools.islice(pieces.iter_slices("arithmetic", seed=3), 4))
    assert [p.end - p.start for p in parts] == [64, 128, 256, 512] and parts[1].start == 64
    assert pieces.read_piece(parts[2]) == pieces.read_piece(parts[2])
    assert pieces.read_piece(parts[2]) != pieces.read_piece(parts[3])[:256]
    other = list(itertools.islice(pieces.iter_slices("arithmetic", seed=4), 1))[0]
    assert pieces.read_piece(other) != pieces.read_piece(parts[0])


@pytest.mark.parametrize("workers", [1, 2])
def test_plain_text_source_resumes_inside_a_piece_and_repeats_epochs(tmp_path, monkeypatch, workers):
    from nbhelpers import sources

    monkeypatch.setattr(sources.slices, "FIRST_RANGE_BYTES", 200)
    monkeypatch.setattr(sources.slices, "RANGE_BYTES", 700)
    path = tmp_path / "a.txt"
    path.write_text("\n\n".join(_prose(120)), encoding="utf-8")
    cfg = _cfg({f"files:{path}": 0.6, "arithmetic": 0.4}, shuffle_buffer=64, workers=workers)
    with Mixer(cfg) as mixer:
        stream = [str(d) for _, d, _ in itertools.islice(mixer, 600)]  # more than one epoch of the file
        assert mixer.state()[f"files:{path}"]["epoch"] >= 1
    for cut in (1, 37, 250, 420):
        with Mixer(cfg) as mixer:
            head = [str(d) for _, d, _ in itertools.islice(mixer, cut)]
            state, seen = mixer.state(), mixer.dedup.array()
        with Mixer(cfg, state=state, dedup_hashes=seen) as mixer:
            tail = [str(d) for _, d, _ in itertools.islice(mixer, 600 - cut)]
        assert head + tail == stream, cut


@pytest.fixture()
def hub_source(tmp_path, monkeypatch):
    """A registry hub entry whose loading call streams local parquet files through `datasets`, as the hub's do."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nbhelpers import sources

    files = []
    for k in range(3):
        path = tmp_path / f"train-{k:05d}-of-00003.parquet"
        pq.write_table(pa.table({"text": _prose(150, f"記事{k}-"), "id": list(range(150))}), path, row_group_size=20)
        files.append(str(path))
    monkeypatch.setitem(sources.REGISTRY, "test_hub", sources.Source("test_hub", "hub", "local/test"))
    opened = []

    def open_hub(src):
        opened.append(src.name)
        return datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)

    monkeypatch.setattr(sources.hub, "open_hub", open_hub)
    return "test_hub", opened


@pytest.mark.parametrize("workers", [1, 2])
def test_a_hub_stream_resumes_inside_a_piece_from_datasets_own_position(hub_source, monkeypatch, workers):
    monkeypatch.setattr(reading, "FIRST_STREAM_CHARS", 300)
    monkeypatch.setattr(reading, "STREAM_CHARS", 2000)
    name, opened = hub_source
    cfg = _cfg({name: 0.6, "arithmetic": 0.4}, shuffle_buffer=16, workers=workers)
    with Mixer(cfg) as mixer:
        stream = [str(d) for _, d, _ in itertools.islice(mixer, 900)]  # more than one epoch of the 450 rows
        assert mixer.state()[name]["epoch"] >= 1 and mixer.state()[name]["position"]["hub"]["examples_iterable"]
    for cut in (1, 55, 301, 640):
        with Mixer(cfg) as mixer:
            head = [str(d) for _, d, _ in itertools.islice(mixer, cut)]
            state, seen = json.loads(json.dumps(mixer.state())), mixer.dedup.array()
        with Mixer(cfg, state=state, dedup_hashes=seen) as mixer:
            tail = [str(d) for _, d, _ in itertools.islice(mixer, 900 - cut)]
        assert head + tail == stream, cut


def test_hub_read_failures_are_retried_from_the_last_row_then_named(hub_source, monkeypatch):
    import datasets

    monkeypatch.setattr(reading, "HUB_WAIT_S", 0.001)
    name, opened = hub_source
    cfg = _cfg({name: 1.0}, on_exhausted="stop")
    want = [str(d) for _, d, _ in Mixer(cfg)]
    real_iter = datasets.IterableDataset.__iter__
    failures = {"left": 2, "at": 37}

    def flaky_iter(self):
        rows = real_iter(self)
        for n in itertools.count():
            if n == failures["at"] and failures["left"]:  # the connection drops when this reading asks for a row
                failures["left"] -= 1
                raise ConnectionError("Read timed out (hub)")
            row = next(rows, None)
            if row is None:
                return
            yield row

    monkeypatch.setattr(datasets.IterableDataset, "__iter__", flaky_iter)
    opened.clear()
    assert [str(d) for _, d, _ in Mixer(cfg)] == want  # nothing lost, nothing repeated
    assert len(opened) == 3  # opened once, then again for each retry
    failures.update(left=10**9, at=0)  # the hub is gone: no reading gets a row
    with pytest.raises(reading.SourceStreamError, match=r"source 'test_hub' \(local/test\): reading the hub stream "
                                                       r"failed 6 times in a row; last error ConnectionError: Read"):
        list(Mixer(cfg))


def test_a_hub_row_of_several_documents_resumes_between_them(tmp_path, monkeypatch):
    """JaMARD-like rows (a question, a list of answers): one document per answer; a piece may end inside a row."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nbhelpers import sources

    monkeypatch.setattr(reading, "FIRST_STREAM_CHARS", 100)
    monkeypatch.setattr(reading, "STREAM_CHARS", 400)
    path = tmp_path / "train.parquet"
    questions = [f"問題{i}: りんごが{i}個あります。" for i in range(60)]
    answers = [[f"答え{i}-{k}: 計算すると{i + k}個になります。" for k in range(1 + i % 4)] for i in range(60)]
    pq.write_table(pa.table({"q": questions, "a": answers}), path, row_group_size=7)
    monkeypatch.setitem(sources.REGISTRY, "test_rows", sources.Source("test_rows", "hub", "local/rows",
                                                                       text_field="q+a", math=True))
    monkeypatch.setattr(sources.hub, "open_hub", lambda src: datasets.load_dataset(
        "parquet", data_files=[str(path)], split="train", streaming=True))
    cfg = _cfg({"test_rows": 1.0}, shuffle_buffer=0, dedup=False, on_exhausted="stop")
    with Mixer(cfg) as mixer:
        stream = [str(d) for _, d, _ in mixer]
    assert len(stream) == sum(len(a) for a in answers) and stream[1].startswith("問題1: ")
    for cut in (2, 3, 17, 80):
        with Mixer(cfg) as mixer:
            head = [str(d) for _, d, _ in itertools.islice(mixer, cut)]
            state = json.loads(json.dumps(mixer.state()))
        with Mixer(cfg, state=state) as mixer:
            tail = [str(d) for _, d, _ in mixer]
        assert head + tail == stream, cut
    starts = [pos for _, _, pos, piece in reading.piece_stream(
        sources.resolve("test_rows"), "test_rows", seed=0, shuffle_buffer=0, on_exhausted="stop", on_bad_utf8="error")
        if piece is not None]
    assert any(pos["in_row"] for pos in starts)  # some pieces start between two documents of one row


@pytest.mark.parametrize("workers", [1, 2])
def test_a_piece_without_documents_is_passed_over(tmp_path, workers):
    """A slice of blank lines (a JSONL file of empty lines, a man page without a paragraph) holds no document."""
    _jsonl(tmp_path / "a.jsonl", _prose(30))
    (tmp_path / "b.jsonl").write_text("\n\n  \n\n", encoding="utf-8")
    _jsonl(tmp_path / "c.jsonl", _prose(30, "別"))
    with Mixer(_cfg({f"files:{tmp_path}/*.jsonl": 1.0}, on_exhausted="stop", workers=workers)) as mixer:
        assert len([d for _, d, _ in mixer]) == 60


def test_a_streamed_source_in_big_pieces_goes_through_the_pool(tmp_path):
    """A gzipped file's pieces (up to 1M characters each) are sent to the workers with the documents in them: a task
    bigger than a pipe's buffer while a worker is sending its answer must not block both sides."""
    import gzip
    import threading

    rng = np.random.default_rng(1)
    docs = [f"{i}番目の文書。" + "".join(rng.choice(list("あいうえおかきくけこさしすせそ"), 300)) for i in range(4000)]
    path = tmp_path / "big.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs).encode()))
    mixer = Mixer(_cfg({f"files:{path}": 0.9, "arithmetic": 0.1}, workers=2, on_exhausted="stop", shuffle_buffer=2000))
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(str(d) for _, d, _ in mixer), daemon=True)
    reader.start()
    reader.join(timeout=120)
    done = not reader.is_alive()
    mixer.close()  # a blocked reader ends here with the pool
    assert done, f"the mixer stalled after {len(got)} documents"
    assert sum(1 for d in got if "番目の文書。" in d) == 4000


from nbhelpers import sources as src_mod  # noqa: E402


class _RateLimited(Exception):
    """What huggingface_hub raises for a 429 (HfHubHTTPError): the response, its status and its headers."""

    def __init__(self, retry_after: str) -> None:
        super().__init__("429 Client Error: Too Many Requests (We had to rate limit your IP)")
        import types

        self.response = types.SimpleNamespace(status_code=429, headers={"Retry-After": retry_after})


def test_a_rate_limited_hub_stream_waits_as_the_server_asks_without_using_up_its_retries(hub_source, monkeypatch,
                                                                                          capsys):
    import datasets

    name, opened = hub_source
    cfg = _cfg({name: 1.0}, on_exhausted="stop")
    want = [str(d) for _, d, _ in Mixer(cfg)]
    real_iter = datasets.IterableDataset.__iter__
    limits = {"left": reading.HUB_RETRIES + 3, "at": 20}  # more 429s in a row than retries: waited out
    waits = []
    monkeypatch.setattr(reading, "_pause", lambda stop, seconds: waits.append(seconds) or False)  # not in real time

    def limited_iter(self):
        rows = real_iter(self)
        for n in itertools.count():
            if n == limits["at"] and limits["left"]:
                limits["left"] -= 1
                raise _RateLimited("42")
            row = next(rows, None)
            if row is None:
                return
            yield row

    monkeypatch.setattr(datasets.IterableDataset, "__iter__", limited_iter)
    assert [str(d) for _, d, _ in Mixer(cfg)] == want  # nothing lost, nothing repeated
    assert waits.count(42.0) == reading.HUB_RETRIES + 3  # each wait what the server asked
    assert "rate limit (HTTP 429; the server asks for 42 s); waiting 42 s" in capsys.readouterr().out
    monkeypatch.setattr(src_mod, "HUB_WAIT_BUDGET_S", 100.0)  # a limit that never clears ends, naming the source
    limits.update(left=10**9, at=0)
    with pytest.raises(reading.SourceStreamError, match=r"source 'test_hub'.*429"):
        list(Mixer(cfg))
