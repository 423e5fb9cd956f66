import itertools
import json

import pytest

from nbhelpers import sources


def test_registry_has_the_reports_four_corpora_with_hub_ids():
    for name in ("wikipedia_ja", "wikibooks_ja", "c4_ja", "jamard"):
        src = sources.REGISTRY[name]
        assert src.kind == "hub" and "/" in src.location and src.revision and src.text_field
    assert sources.REGISTRY["jamard"].math and sources.REGISTRY["arithmetic"].math
    assert not sources.REGISTRY["wikipedia_ja"].math
    assert {row["name"] for row in sources.registry_table()} == set(sources.REGISTRY)


def test_unknown_source_lists_known_names():
    with pytest.raises(sources.SourceError) as err:
        sources.resolve("wikipedia")
    assert "wikipedia_ja" in str(err.value) and "files:GLOB" in str(err.value)


def test_hub_source_offline_names_the_source(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'wikimedia/wikipedia' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(sources.SourceError) as err:
        next(sources.iter_texts("wikipedia_ja"))
    msg = str(err.value)
    assert "wikipedia_ja" in msg and "wikimedia/wikipedia" in msg and "bundled_prose" in msg


def test_arithmetic_source_is_endless_and_seeded():
    a = list(itertools.islice(sources.iter_texts("arithmetic", seed=1), 20))
    b = list(itertools.islice(sources.iter_texts("arithmetic", seed=1), 20))
    assert a == b and all(t.startswith("問題: ") for t in a)


def test_local_txt_jsonl_parquet(tmp_path):
    (tmp_path / "a.txt").write_text("一つ目の段落です。\n続きです。\n\n二つ目の段落です。\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(
        "\n".join(json.dumps({"body": t}, ensure_ascii=False) for t in ["三つ目", "四つ目"]) + "\n", encoding="utf-8"
    )
    assert list(sources.iter_texts(f"files:{tmp_path}/*.txt")) == ["一つ目の段落です。\n続きです。", "二つ目の段落です。"]
    assert list(sources.iter_texts(f"files:{tmp_path}/*.jsonl#body")) == ["三つ目", "四つ目"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["五つ目", "六つ目"]}), tmp_path / "c.parquet")
    assert list(sources.iter_texts(f"files:{tmp_path}/*.parquet")) == ["五つ目", "六つ目"]


def test_bad_jsonl_lines_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "よい"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(sources.SourceError, match=r"bad.jsonl line 2: not JSON"):
        list(sources.iter_texts(f"files:{path}"))
    path.write_text('{"text": "よい"}\n{"title": "x"}\n', encoding="utf-8")
    with pytest.raises(sources.SourceError, match=r"bad.jsonl line 2: expected an object with a string field 'text'"):
        list(sources.iter_texts(f"files:{path}"))


def test_non_utf8_file_is_named_with_byte_offset_or_skipped_and_counted(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("正しい文章です。", encoding="utf-8")
    bad = tmp_path / "b.txt"
    bad.write_bytes("はじめ".encode() + "シフトJIS".encode("shift_jis"))
    with pytest.raises(sources.BadUTF8) as err:
        list(sources.iter_texts(f"files:{tmp_path}/*.txt"))
    assert "b.txt" in str(err.value) and "byte offset 9" in str(err.value)
    from collections import Counter

    skipped = Counter()
    docs = list(sources.iter_texts(f"files:{tmp_path}/*.txt", on_bad_utf8="skip", skipped=skipped))
    assert docs == ["正しい文章です。"] and skipped == Counter({str(bad): 1})


def test_no_matching_files_is_an_error(tmp_path):
    with pytest.raises(sources.SourceError, match="no files match"):
        list(sources.iter_texts(f"files:{tmp_path}/*.txt"))


def test_man_and_html_text_extraction():
    page = '.TH LS 1\n.SH 名前\nls \\- 一覧を表示する\n.TP\n\\fB\\-a\\fR, \\fB\\-\\-all\\fR\n.\\" comment\n'
    text = sources.man_text(page)
    assert "名前" in text and "ls - 一覧を表示する" in text and "-a, --all" in text and "comment" not in text
    html = "<html><head><style>x{}</style></head><body><h1>題</h1><p>本文です。</p><script>1</script></body></html>"
    assert sources.html_text(html).split() == ["題", "本文です。"]


@pytest.mark.realtext
def test_debian_source_reads_real_japanese(debian_files):
    docs = list(itertools.islice(sources.iter_texts("debian_ja"), 2000))
    text = "".join(docs)
    kana = sum("\u3040" <= ch <= "\u30ff" for ch in text)
    assert len(docs) == 2000 and kana / len(text) > 0.2


def test_gzipped_jsonl_streams_names_bad_lines_and_is_skipped_whole(tmp_path):
    """A .jsonl.gz is read line by line (not decompressed whole): bad lines are named as in plain JSONL."""
    import gzip
    from collections import Counter

    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress('{"text": "一"}\n\n{"text": "二"}\n'.encode()))
    assert list(sources.iter_texts(f"files:{path}")) == ["一", "二"]
    path.write_bytes(gzip.compress('{"text": "一"}\n{"text": \n'.encode()))
    with pytest.raises(sources.SourceError, match=r"a.jsonl.gz line 2: not JSON"):
        list(sources.iter_texts(f"files:{path}"))
    # a bad byte on line 2: an error naming the line, or (skip) none of the file's documents, line 1 included
    path.write_bytes(gzip.compress('{"text": "一"}\n{"text": "'.encode() + "二".encode("shift_jis") + b'"}\n'))
    with pytest.raises(sources.BadUTF8, match=r"a.jsonl.gz line 2 \(file offset 16\)"):
        list(sources.iter_texts(f"files:{path}"))
    skipped = Counter()
    assert list(sources.iter_texts(f"files:{path}", on_bad_utf8="skip", skipped=skipped)) == []
    assert skipped == Counter({str(path): 1})


# ---------------------------------------------------------------- files that hold no documents


def _empty_inputs(tmp_path):
    """A good plain-text file, a blank-lines-only one, an empty and an all-null parquet, and a parquet of numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "src"
    d.mkdir()
    (d / "a.txt").write_text("\n\n".join(f"{i}番目の文書です。春の朝、駅前の桜が咲き始めました。" for i in range(60)),
                             encoding="utf-8")
    (d / "blank.txt").write_text("\n\n   \n\n", encoding="utf-8")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), d / "empty.parquet")
    pq.write_table(pa.table({"text": pa.array([None, None], pa.string())}), d / "nulls.parquet")
    pq.write_table(pa.table({"text": pa.array([1, 2], pa.int64())}), d / "numbers.parquet")
    return d


def _take(pattern, workers, n=40):
    from nbhelpers import config, corpus

    cfg = config.load("smoke", [f'corpus.mixture={{"files:{pattern}": 1}}', f"corpus.workers={workers}"])
    docs = corpus.mixed_documents(cfg.corpus, seed=1)
    try:
        return list(itertools.islice(docs, n))
    finally:
        docs.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_files_without_documents_are_skipped_in_a_glob_and_named_alone(tmp_path, workers):
    d = _empty_inputs(tmp_path)
    assert len(_take(d / "*.txt", workers)) == 40  # the blank file gives nothing; the other file everything
    assert len(_take(d / "[ae]*.*", workers)) == 40  # and an empty parquet next to it
    for name in ("blank.txt", "empty.parquet", "nulls.parquet"):
        with pytest.raises(sources.SourceError, match=rf"'files:{d / name}' has no documents left .*0 read "
                                                      r"\(its files hold no documents"):
            _take(d / name, workers)
    with pytest.raises(sources.SourceError, match=r"numbers.parquet: column 'text' holds int64, not text"):
        _take(d / "numbers.parquet", workers)


# ---------------------------------------------------------------- the hub's limits: listed files, 429 waits


@pytest.fixture()
def rate_limited_hub(monkeypatch):
    """A local stand-in for the hub's file downloads: each file's first request gets 429 with Retry-After: 1."""
    import gzip
    import http.server
    import threading
    import time

    seen: list[tuple[str, float, str | None]] = []
    files = {f"/datasets/allenai/c4/resolve/main/multilingual/c4-ja.tfrecord-{i:05d}-of-01024.json.gz":
             gzip.compress("".join(json.dumps({"text": f"ファイル{i}の文書{k}です。", "url": "u"}, ensure_ascii=False)
                                   + "\n" for k in range(3)).encode()) for i in range(2)}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            first = not any(p == self.path for p, _, _ in seen)
            seen.append((self.path, time.monotonic(), self.headers.get("Authorization")))
            if self.path not in files:
                self.send_error(404)
            elif first:
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(len(files[self.path])))
                self.end_headers()
                self.wfile.write(files[self.path])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv(sources.HUB_MIRROR_ENV, raising=False)
    yield seen
    server.shutdown()


def test_c4_reads_its_listed_files_and_waits_out_a_429_as_the_server_asks(rate_limited_hub, monkeypatch, capsys):
    import dataclasses

    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    two = dataclasses.replace(sources.resolve("c4_ja"), file_count=2)  # the registry's names, the first two of 1024
    assert list(sources.iter_texts(two)) == [f"ファイル{i}の文書{k}です。" for i in range(2) for k in range(3)]
    paths = [p for p, _, _ in rate_limited_hub]
    assert all("/resolve/main/multilingual/c4-ja.tfrecord-0000" in p for p in paths)  # file fetches only: no listing
    assert len(paths) == 4 and paths[0] == paths[1] and paths[2] == paths[3]  # each file: 429, then read again
    assert rate_limited_hub[1][1] - rate_limited_hub[0][1] >= 1.0  # after the Retry-After the server named
    assert {auth for _, _, auth in rate_limited_hub} == {"Bearer hf_" + "x" * 34}  # the token counts for reads
    assert "HTTP 429; the server asks for 1 s); waiting 1 s" in capsys.readouterr().out


def test_a_missing_listed_file_is_named_at_once(rate_limited_hub):
    import dataclasses

    three = dataclasses.replace(sources.resolve("c4_ja"), file_count=3)
    with pytest.raises(Exception, match="404"):
        list(sources.iter_texts(three))
    assert sum("00002" in p for p, _, _ in rate_limited_hub) == 1  # not retried: a missing file is not a limit


def test_retry_after_is_read_as_seconds_an_http_date_or_the_hubs_ratelimit_header():
    assert sources.retry_after_s({"Retry-After": "120"}) == 120
    assert sources.retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert sources.retry_after_s({"RateLimit": '"api";r=0;t=55'}) == 55
    assert sources.retry_after_s({}) is None and sources.retry_after_s(None) is None


def test_the_corpus_reader_streams_the_listed_files_through_a_429(rate_limited_hub, monkeypatch):
    """The producer's path (pieces' hub reader, datasets' resumable position) over the listed files."""
    import dataclasses

    from nbhelpers.config import CorpusConfig
    from nbhelpers.corpus import mixed_documents

    monkeypatch.setitem(sources.REGISTRY, "c4_ja", dataclasses.replace(sources.resolve("c4_ja"), file_count=2))
    cfg = CorpusConfig(mixture={"c4_ja": 1.0}, min_chars=5, workers=1, shuffle_buffer=0, seed=3,
                       on_exhausted="stop", dedup=False)
    docs = sorted(str(d) for d in mixed_documents(cfg))
    assert docs == sorted(f"ファイル{i}の文書{k}です。" for i in range(2) for k in range(3))
    assert len(rate_limited_hub) == 4  # each file: a 429, then its read
