"""What the kit reads from a user's files when they are not what they claim: odd paths in a glob, text in
another encoding or with other line ends, damaged parquet files, repeated instruction pairs (issue 25)."""

import gzip
import itertools
import json
import os
import socket
import threading
import warnings

import pytest

from nbhelpers import config, sft, sources
from nbhelpers.corpus import pieces
from nbhelpers.sft import InstructionDataError

DOCS = [f"{i}番目の文書です。春の朝、駅前の桜が咲き始めました。" for i in range(60)]


def _within(seconds, fn, unblock=()):
    """fn() run in a thread: its result, or a failure when it is still running after `seconds` (a hang).

    On a hang each FIFO in `unblock` is opened for writing and closed, so the blocked reader sees an end.
    """
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test's thread
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in unblock:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"still reading after {seconds} s: blocked on a path that is not a regular file")
    if "error" in out:
        raise out["error"]
    return out["value"]


def _take(pattern, workers, n=40):
    from nbhelpers import corpus

    cfg = config.load("smoke", [f'corpus.mixture={{"files:{pattern}": 1}}', f"corpus.workers={workers}"])
    docs = corpus.mixed_documents(cfg.corpus, seed=1)
    try:
        return list(itertools.islice(docs, n))
    finally:
        docs.close()


# ---------------------------------------------------------------- 1. paths a glob matches that are not files


@pytest.fixture
def odd_dir(tmp_path, monkeypatch, request):
    """A good a.txt beside a FIFO, a folder, a link to nothing, a socket and a device, all matching *.txt."""
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.txt").write_text("\n\n".join(DOCS), encoding="utf-8")
    os.mkfifo(d / "b.txt")
    (d / "c.txt").mkdir()
    (d / "d.txt").symlink_to(tmp_path / "gone.txt")
    (d / "e.txt").symlink_to("/dev/zero")  # a device that never ends
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "f.txt"))
    request.addfinalizer(sock.close)
    monkeypatch.setattr(sources.local, "_WARNED", set())  # each test sees its own warnings
    return d


@pytest.mark.parametrize("workers", [1, 2])
def test_a_fifo_folder_or_dangling_link_in_a_glob_is_skipped_with_a_warning(odd_dir, workers):
    with pytest.warns(UserWarning) as caught:
        got = _within(60, lambda: _take(odd_dir / "*.txt", workers), unblock=[odd_dir / "b.txt"])
    assert len(got) == 40
    said = " ".join(str(w.message) for w in caught if w.category is sources.NotAFileWarning)
    assert f"{odd_dir / 'b.txt'} (a FIFO)" in said and f"{odd_dir / 'c.txt'} (a folder)" in said
    assert f"{odd_dir / 'd.txt'} (unreadable" in said and f"{odd_dir / 'e.txt'} (a character device)" in said
    assert f"{odd_dir / 'f.txt'} (a socket)" in said
    assert _within(20, lambda: list(sources.iter_texts(f"files:{odd_dir}/*.txt")),
                   unblock=[odd_dir / "b.txt"]) == DOCS


def test_a_source_left_with_no_regular_file_is_an_error_naming_what_it_matched(odd_dir):
    with pytest.raises(sources.SourceError, match=r"matches no regular file, only .*b\.txt \(a FIFO\)"):
        _within(20, lambda: list(sources.iter_texts(f"files:{odd_dir}/b.txt")), unblock=[odd_dir / "b.txt"])
    with pytest.raises(sources.SourceError, match=r"c\.txt \(a folder\)"):
        list(sources.iter_texts(f"files:{odd_dir}/[bc].txt"))


def test_instruction_files_glob_skips_a_fifo(tmp_path, monkeypatch):
    d = tmp_path / "sft"
    d.mkdir()
    (d / "a.jsonl").write_text("\n".join(json.dumps({"prompt": f"p{i}", "target": f"t{i}"}) for i in range(10)))
    os.mkfifo(d / "b.jsonl")
    monkeypatch.setattr(sources.local, "_WARNED", set())
    cfg = config.SFTConfig(data=(f"files:{d}/*.jsonl",), heldout_fraction=0.1)
    with pytest.warns(UserWarning, match=r"b.jsonl \(a FIFO\)"):
        data = _within(20, lambda: sft.load_instructions(cfg), unblock=[d / "b.jsonl"])
    assert len(data.train) + len(data.heldout) == 10
    with pytest.raises(InstructionDataError, match=r"matches no regular file, only .*b\.jsonl \(a FIFO\)"):
        _within(20, lambda: sft.load_instructions(config.SFTConfig(data=(f"files:{d}/b.jsonl",))),
                unblock=[d / "b.jsonl"])


# ---------------------------------------------------------------- 6. text that is not what it claims

ENGLISH = "Notes on the build.\nLine two of the first note.\n\nA second note, in ASCII.\n" * 40
JAPANESE = "東京の春は桜が美しいです。ひらがなとカタカナ。\n続きの行です。\n\n次の段落です。\n\n" * 40


def _all_readers(path, field="text"):
    """The documents of a file through the streaming reader and through the slices the workers read."""
    name = f"files:{path}" + (f"#{field}" if path.name.endswith(".jsonl") else "")
    streamed = list(sources.iter_texts(name))
    sliced = [d for p in pieces.iter_slices(name) for d in pieces.read_piece(p)]
    return streamed, sliced


@pytest.mark.parametrize("order", ["utf-16le", "utf-16be"])
@pytest.mark.parametrize("text", [ENGLISH, JAPANESE, "\ufeff" + ENGLISH], ids=["ascii", "japanese", "bom"])
def test_utf16_without_a_bom_is_refused_with_the_iconv_command(tmp_path, order, text):
    path = tmp_path / "notes.txt"
    path.write_bytes(text.encode(order))
    with pytest.raises(sources.BadUTF8) as err:
        list(sources.iter_texts(f"files:{path}"))
    assert str(path) in str(err.value) and f"iconv -f {order} -t utf-8" in str(err.value)
    with pytest.raises(sources.BadUTF8, match=f"iconv -f {order}"):
        [d for p in pieces.iter_slices(f"files:{path}") for d in pieces.read_piece(p)]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes("".join(json.dumps({"text": t}) + "\n" for t in text.split("\n\n")).encode(order))
    with pytest.raises(sources.BadUTF8, match=f"iconv -f {order}"):
        list(sources.iter_texts(f"files:{jsonl}"))
    with pytest.raises(InstructionDataError, match=f"rows.jsonl: not UTF-8; it looks like {order.upper()}"):
        sft.read_jsonl(jsonl, on_invalid="skip")
    from collections import Counter

    skipped = Counter()
    assert list(sources.iter_texts(f"files:{path}", on_bad_utf8="skip", skipped=skipped)) == []
    assert skipped == Counter({str(path): 1})


def test_a_stray_nul_in_utf8_text_is_still_read(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("一つ目\x00の段落。\n\n二つ目の段落。\n", encoding="utf-8")
    assert _all_readers(path) == (["一つ目\x00の段落。", "二つ目の段落。"],) * 2


@pytest.mark.parametrize("encoding, iconv, name", [("cp932", "cp932", "Shift-JIS"), ("shift_jis", "cp932", "Shift-JIS"),
                                                   ("euc_jp", "euc-jp", "EUC-JP")])
def test_shift_jis_and_euc_jp_are_refused_with_the_right_iconv_command(tmp_path, encoding, iconv, name):
    path = tmp_path / "a.txt"
    path.write_bytes(("はじめに\n\n" + JAPANESE).encode(encoding))
    for read in (lambda: list(sources.iter_texts(f"files:{path}")),
                 lambda: [d for p in pieces.iter_slices(f"files:{path}") for d in pieces.read_piece(p)]):
        with pytest.raises(sources.BadUTF8) as err:
            read()
        assert str(path) in str(err.value) and name in str(err.value)
        assert f"iconv -f {iconv} -t utf-8 {path}" in str(err.value)
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes((json.dumps({"prompt": "質問です", "target": "答えです"}, ensure_ascii=False) + "\n").encode(encoding))
    with pytest.raises(InstructionDataError, match=f"rows.jsonl: not UTF-8; it looks like {name}.*iconv -f {iconv}"):
        sft.read_jsonl(rows, on_invalid="skip")


def test_a_tokenizer_training_file_in_shift_jis_gets_the_iconv_command(tmp_path):
    import nbhelpers.tokenizer.sample as sample

    path = tmp_path / "train.txt"
    path.write_bytes(JAPANESE.encode("cp932"))
    with pytest.raises(sources.BadUTF8, match=r"train\.txt: not UTF-8 .*it looks like Shift-JIS .*iconv -f cp932"):
        list(sample._file_lines(path))


def test_a_damaged_byte_in_utf8_gets_no_wrong_encoding_hint(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(JAPANESE.encode() + b"\xff" + "終わり".encode())
    with pytest.raises(sources.BadUTF8) as err:
        list(sources.iter_texts(f"files:{path}"))
    assert "byte offset" in str(err.value) and "iconv" not in str(err.value)


@pytest.mark.parametrize("end", ["\r", "\r\n"], ids=["cr", "crlf"])
def test_cr_and_crlf_line_ends_split_documents_as_lf_does(tmp_path, end, monkeypatch):
    lf = tmp_path / "lf.txt"
    lf.write_text(JAPANESE * 20, encoding="utf-8")  # about 40k characters, 800 documents
    other = tmp_path / "other.txt"
    other.write_bytes((JAPANESE * 20).replace("\n", end).encode())
    expected = list(sources.iter_texts(f"files:{lf}"))
    assert len(expected) == 1600
    assert _all_readers(other) == (expected, expected)
    # small chunks and slices: a cut never falls between the CR and LF of a CRLF, nor splits a blank line
    for chunk in (7, 64, 1000):
        monkeypatch.setattr(sources.local, "TEXT_CHUNK", chunk)
        assert list(sources.stream_paragraphs(other)) == expected
    small = [(s, e) for s, e in sources.text_ranges(other, first=50, size=300)]
    assert len(small) > 10
    assert [d for s, e in small for d in sources.range_docs("text", str(other), s, e)] == expected
    gz = tmp_path / "other.txt.gz"
    gz.write_bytes(gzip.compress(other.read_bytes()))
    assert list(sources.iter_texts(f"files:{gz}")) == expected


def test_a_utf8_bom_is_accepted_in_jsonl_and_dropped_in_text(tmp_path):
    rows = [json.dumps({"body": t}, ensure_ascii=False) for t in ("一つ目", "二つ目")]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode() + b"\n")
    assert _all_readers(jsonl, "body") == (["一つ目", "二つ目"],) * 2
    gz = tmp_path / "b.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    assert list(sources.iter_texts(f"files:{gz}#body")) == ["一つ目", "二つ目"]
    txt = tmp_path / "a.txt"
    txt.write_bytes(b"\xef\xbb\xbf" + "一つ目\n\n二つ目\n".encode())
    assert _all_readers(txt) == (["一つ目", "二つ目"],) * 2
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(b"\xef\xbb\xbf" + (json.dumps({"prompt": "問", "target": "答"}) + "\r\n").encode() * 2)
    got = sft.read_jsonl(pairs)
    assert [(e.prompt, e.target) for e in got] == [("問", "答")] * 2


# ---------------------------------------------------------------- 7. parquet files


def test_an_empty_or_damaged_parquet_file_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    for read in (lambda: list(sources.iter_texts(f"files:{empty}")), lambda: list(pieces.iter_slices(f"files:{empty}"))):
        with pytest.raises(sources.SourceError, match=r"empty\.parquet: not a readable parquet file"):
            read()
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": DOCS}), bad, compression="none")
    data = bytearray(bad.read_bytes())
    data[4:40] = b"\xff" * 36  # the first page's header: the footer still opens, the page cannot be read
    bad.write_bytes(bytes(data))
    with pytest.raises(sources.SourceError, match=r"bad\.parquet: not a readable parquet file"):
        list(sources.iter_texts(f"files:{bad}"))
    with pytest.raises(sources.SourceError, match=r"bad\.parquet \(row groups 0 to 0\): not a readable parquet"):
        [d for p in pieces.iter_slices(f"files:{bad}") for d in pieces.read_piece(p)]


def test_a_dictionary_encoded_string_column_is_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dict.parquet"
    pq.write_table(pa.table({"text": pa.array(DOCS[:5] * 4).dictionary_encode()}), path)
    assert pa.types.is_dictionary(pq.ParquetFile(path).schema_arrow.field("text").type)
    assert _all_readers(path) == (DOCS[:5] * 4,) * 2
    assert len(_take(path, 1, n=5)) == 5


# ---------------------------------------------------------------- 11. repeated instruction pairs


def test_repeated_instruction_pairs_are_dropped_before_the_split_and_counted(tmp_path):
    same = tmp_path / "same.jsonl"
    same.write_text("\n".join([json.dumps({"prompt": "同じ質問", "target": "同じ答え"})] * 100) + "\n")
    cfg = config.SFTConfig(data=(f"files:{same}",), heldout_fraction=0.05)
    with pytest.warns(UserWarning, match=r"99 duplicate instruction example\(s\) left out \(99 in files:"):
        data = sft.load_instructions(cfg)
    assert (len(data.train), len(data.heldout)) == (1, 0)  # was 95 / 5: the same pair trained on and scored
    assert data.counts["duplicates_dropped"]["examples"] == 99
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(json.dumps({"prompt": f"p{i % 20}", "target": f"t{i % 20}"}) for i in range(100)))
    cfg = config.SFTConfig(data=(f"files:{mixed}", f"files:{same}"), heldout_fraction=0.2)
    with pytest.warns(UserWarning, match=r"179 duplicate .*80 in files:.*99 in files:"):
        data = sft.load_instructions(cfg)
    key = sft.instructions._pair_key
    assert {key(e) for e in data.train}.isdisjoint({key(e) for e in data.heldout})
    assert len(data.train) + len(data.heldout) == 21 and data.duplicates[f"files:{mixed}"] == 80
    table = {row["what"]: row for row in sft.data_table(data, {})}
    assert table["duplicates_dropped"]["examples"] == 179


def test_a_pair_in_two_sources_is_kept_once(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps({"prompt": f"p{i}", "target": f"t{i}"}) for i in range(10)))
    b.write_text("\n".join(json.dumps({"prompt": f"p{i}", "target": f"t{i}"}) for i in range(5, 15)))
    with pytest.warns(UserWarning, match=r"5 duplicate .*\(5 in files:.*b\.jsonl\)"):
        data = sft.load_instructions(config.SFTConfig(data=(f"files:{a}", f"files:{b}"), heldout_fraction=0.2))
    assert data.counts[f"files:{b}"]["examples"] == 5


def test_generated_arithmetic_pairs_are_distinct_and_loading_them_warns_of_nothing():
    cfg = config.SFTConfig(data=("bundled_instructions", "arithmetic_instructions"), arithmetic_pairs=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = sft.load_instructions(cfg)
    assert data.counts["arithmetic_instructions"]["examples"] == 300
    assert data.counts["duplicates_dropped"]["examples"] == 0


def test_the_duplicates_dropped_reach_the_recorded_figures(tmp_path):
    from types import SimpleNamespace

    same = tmp_path / "same.jsonl"
    same.write_text("\n".join(json.dumps({"prompt": f"p{i % 3}", "target": "t"}) for i in range(9)))
    with pytest.warns(UserWarning):
        data = sft.load_instructions(config.SFTConfig(data=(f"files:{same}",)))
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("")
    figures = sft.record_figures(data, {}, SimpleNamespace(ratio=0), SimpleNamespace(metrics_path=metrics, step=0),
                                 {}, {})
    assert figures["duplicates_dropped"] == 6
