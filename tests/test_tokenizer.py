"""Tokenizer stage: SentencePiece training, the exact Hugging Face twin, statistics, sampling and bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import unicodedata
from collections import Counter

import pytest

from nbhelpers import config, sources
from nbhelpers import tokenizer as T
from nbhelpers.config import TokenizerConfig

# Text a tokenizer trained on the bundled prose has not seen: emoji, rare and non-BMP kanji, Hangul, Greek.
UNSEEN = ["😀👨‍👩‍👧 絵文字", "𠮷野家の𩸽", "鱻驫麤", "한국어 문장", "Ελληνικά", "\U0001F1EF\U0001F1F5"]
TRICKY = [
    "", " ", "   ", "  先頭と末尾の空白  ", "空白が　　連続　する  文", "タブ\tと\t\t改行\nを含む",
    "ｶﾀｶﾅとＡＢＣ１２３と①②㍿", "か\u3099き\u309a（結合文字）", "e\u0301 café", "葛\U000E0100城",
    "def f(x):\n    return x ** 2  # コード", "価格は¥1,234.50（税込）です。", "2024年3月15日 12:30",
    "<s>タグ</s> <unk> <pad> <0x41> <0xE3>", "▁記号で始まる", " ▁空白と記号", "mixed 日本語 English ひらがな カタカナ",
    "😀" * 5, "a" * 300, "ー" * 50, "!!??。。、、",
]


@pytest.fixture(scope="module")
def prose() -> list[str]:
    return list(sources.iter_texts("bundled_prose"))


@pytest.fixture(scope="module")
def small(tmp_path_factory, prose):
    """A small tokenizer on the bundled prose (a few seconds): HF tokenizer, SentencePiece, its folder."""
    out = tmp_path_factory.mktemp("tok")
    hf = T.train_tokenizer(prose, out, vocab_size=2400, progress=False)
    return hf, T.load_sentencepiece(out), out


def test_files_and_autotokenizer_offline(small, monkeypatch):
    from transformers import AutoTokenizer

    _, _, out = small
    for name in ("spm.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).is_file(), name
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(out)  # no trust_remote_code
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok("日本語の文章")["input_ids"] == T.load_sentencepiece(out).encode("日本語の文章")


def test_special_ids_and_tokens(small):
    hf, sp, _ = small
    expected = {"unk": (0, "<unk>"), "pad": (1, "<pad>"), "bos": (2, "<s>"), "eos": (3, "</s>")}
    for name, (i, token) in expected.items():
        assert getattr(hf, f"{name}_token") == token
        assert getattr(hf, f"{name}_token_id") == i
        assert sp.id_to_piece(i) == token
    assert (sp.unk_id(), sp.pad_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert len(hf) == sp.get_piece_size() == 2400


def test_identity_on_tricky_text(small):
    hf, sp, _ = small
    for text in TRICKY + UNSEEN:
        ids = sp.encode(text)
        assert hf.encode(text) == ids, text
        assert hf.decode(ids) == sp.decode(ids), text
        assert not {0, 1, 2, 3} & set(ids), text  # literal "<s>" etc. are text, never the special ids


def test_identity_on_random_mixtures(small):
    """Seeded random strings from scripts, symbols, whitespace, emoji, NFD kana and special-looking text."""
    hf, sp, _ = small
    rng = random.Random(7)
    pools = [list("あいうえおかきくけこがぎぐ"), list("日本語漢字東京都"), list("アイウエオｱｲｳｴｵﾞﾟ"), list("ABCabc0123ＡＢＣ１２３"),
             list("  \u3000\t\n"), list("!?。、「」（）<>/\\_-=+*#"), ["😀", "👍🏻", "👨‍👩‍👧", "❤️", "🇯🇵"],
             ["か\u3099", "ウ\u3099", "ハ\u309a", "e\u0301"], list("𠮷𩸽鱻"), ["▁"], list("\u200b\u200d\ufeff"),
             list("①②㍿㈱ⅷ"), ["<s>", "</s>", "<unk>", "<0x41>", "<pad>"]]
    texts = ["".join(rng.choice(rng.choice(pools)) for _ in range(rng.randrange(25))) for _ in range(3000)]
    sp_ids = sp.encode(texts)
    assert hf(texts)["input_ids"] == sp_ids
    assert hf.batch_decode(sp_ids) == sp.decode(sp_ids)


def test_whitespace_and_nfkc(small):
    hf, sp, _ = small
    assert sp.encode("") == hf.encode("") == []
    assert sp.encode("   ") == hf.encode("   ") == []
    assert hf.decode(hf.encode("  a   b  ")) == "a b"  # extra spaces removed, as SentencePiece does
    assert hf.encode("語▁ ▁") == sp.encode("語▁ ▁") == sp.encode("語")  # trailing "▁" and spaces both go
    assert hf.decode(hf.encode("ｶﾀｶﾅ１２３")) == "カタカナ123"  # NFKC
    assert hf.decode(hf.encode("か\u3099")) == "が"


def test_identity_normalization_is_also_exact(prose, tmp_path):
    hf = T.train_tokenizer(prose, tmp_path, vocab_size=2400, normalization="identity", progress=False)
    sp = T.load_sentencepiece(tmp_path)
    for text in TRICKY + UNSEEN:
        assert hf.encode(text) == sp.encode(text), text
        assert hf.decode(sp.encode(text)) == sp.decode(sp.encode(text)), text
    assert hf.decode(hf.encode("ＡＢＣ")) == "ＡＢＣ"  # no NFKC


def test_byte_fallback_round_trip(small):
    hf, sp, _ = small
    for text in UNSEEN:
        ids = sp.encode(text)
        assert any(sp.is_byte(i) for i in ids), text  # these characters were not in the training text
        assert 0 not in ids  # byte fallback: never <unk>
        expected = unicodedata.normalize("NFKC", text)
        assert sp.decode(ids) == expected
        assert hf.decode(hf.encode(text)) == expected


def test_bos_eos_choice(small, tmp_path):
    from transformers import AutoTokenizer

    hf, sp, out = small
    text = "今日は晴れです。"
    plain = sp.encode(text)
    assert hf(text)["input_ids"] == plain and plain[0] != 2 and plain[-1] != 3  # default: neither added
    both = tmp_path / "both"
    both.mkdir()
    (both / "spm.model").write_bytes((out / "spm.model").read_bytes())
    T.export_hf(both, TokenizerConfig(add_bos=True, add_eos=True))
    hf2 = AutoTokenizer.from_pretrained(both)
    sp2 = T.load_sentencepiece(both)
    assert sp2.encode(text) == hf2(text)["input_ids"] == [2, *plain, 3]
    assert hf2.decode(hf2(text)["input_ids"], skip_special_tokens=True) == sp2.decode([2, *plain, 3]) == text
    bos_only = tmp_path / "bos"
    bos_only.mkdir()
    (bos_only / "spm.model").write_bytes((out / "spm.model").read_bytes())
    T.export_hf(bos_only, TokenizerConfig(add_bos=True))
    assert AutoTokenizer.from_pretrained(bos_only)(text)["input_ids"] == T.load_sentencepiece(bos_only).encode(text) \
        == [2, *plain]


def test_hash_is_sha256_of_model_and_reproducible(small, prose, tmp_path):
    _, _, out = small
    assert T.tokenizer_hash(out) == hashlib.sha256((out / "spm.model").read_bytes()).hexdigest()
    T.train_tokenizer(prose, tmp_path, vocab_size=2400, progress=False)  # same text, settings and thread count
    assert T.tokenizer_hash(tmp_path) == T.tokenizer_hash(out)


def test_stats(small, prose):
    _, sp, _ = small
    texts = prose[:5] + ["絵文字😀😀"]
    st = T.tokenizer_stats(sp, texts)
    ids = [sp.encode(t) for t in texts]
    tokens = sum(map(len, ids))
    assert st["tokens"] == tokens and st["chars"] == sum(map(len, texts))
    assert st["chars_per_token"] == pytest.approx(st["chars"] / tokens)
    assert st["byte_fallback_rate"] == pytest.approx(sum(sp.is_byte(i) for x in ids for i in x) / tokens)
    assert st["byte_fallback_rate"] > 0 and st["unk_rate"] == 0
    assert sum(st["token_lengths"].values()) == tokens
    assert st["token_lengths"][0] == sum(sp.is_byte(i) for x in ids for i in x) >= 8  # two emoji: 4 bytes each
    one_char = sum(len(sp.id_to_piece(i)) == 1 and not sp.is_byte(i) for x in ids for i in x)
    assert st["token_lengths"][1] == one_char
    assert sum(st["vocab_lengths"].values()) == 2400 - 4


def test_plot_token_lengths(small, prose, tmp_path):
    from nbhelpers import plots

    st = T.tokenizer_stats(small[1], prose[:3])
    plots.plot_token_lengths(st, tmp_path / "lengths.png")
    assert (tmp_path / "lengths.png").stat().st_size > 1000


# ---------------------------------------------------------------- sampling


def test_split_line_respects_bytes():
    line = "日本語" * 100 + "abc"
    parts = T.split_line(line, 64)
    assert "".join(parts) == line
    assert all(len(p.encode()) <= 64 for p in parts) and len(parts) > 1
    assert T.split_line("short", 64) == ["short"]


def test_sample_text_shuffles_bounded_and_holds_out(tmp_path):
    docs = [f"文書{i}の一行目\n文書{i}の二行目" for i in range(400)]
    with pytest.warns(UserWarning, match="the sources ran out after"):  # 400 short documents, 10**6 asked for
        s = T.sample_text(docs, tmp_path / "s.txt", sample_chars=10**6, heldout_chars=200, seed=3,
                          buffer_lines=50, heldout_every=10, progress=False)
    lines = (tmp_path / "s.txt").read_text(encoding="utf-8").splitlines()
    held = set(s.heldout)
    assert held and s.heldout_chars >= 200 and s.documents == 400 - len(held)
    expected = [ln for d in docs if d not in held for ln in d.split("\n")]
    assert Counter(lines) == Counter(expected)  # every line once, nothing held out is trained on
    assert lines != expected  # shuffled
    with pytest.warns(UserWarning, match="the sources ran out after"):
        T.sample_text(docs, tmp_path / "t.txt", 10**6, 200, seed=3, buffer_lines=50, heldout_every=10,
                      progress=False)
    assert (tmp_path / "t.txt").read_text(encoding="utf-8").splitlines() == lines  # deterministic by seed


def test_sample_text_stops_at_sample_chars_and_skips_repeated_heldout(tmp_path):
    def endless():
        while True:  # a repeating source: held-out documents come back in every epoch
            yield from (f"第{i}文書の本文です" for i in range(30))

    s = T.sample_text(endless(), tmp_path / "s.txt", sample_chars=5000, heldout_chars=30, seed=0,
                      buffer_lines=7, heldout_every=5, progress=False)
    text = (tmp_path / "s.txt").read_text(encoding="utf-8")
    assert s.chars == 5000 == len(text.replace("\n", ""))
    assert s.heldout and not set(s.heldout) & set(text.splitlines())


# ---------------------------------------------------------------- bad input


def test_no_text(tmp_path):
    with pytest.raises(T.TokenizerError, match="no training text"):
        T.train_tokenizer([], tmp_path / "a", progress=False)
    with pytest.raises(T.TokenizerError, match="no training text"):
        T.train_tokenizer(["", "  \n \n"], tmp_path / "b", progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(T.TokenizerError, match="no training text"):
        T.train_tokenizer(empty, tmp_path / "c", progress=False)


def test_vocab_too_large_suggests_a_size_that_works(tmp_path):
    text = ["日本語の短い文章です。", "これはテストのための文です。", "語彙が多すぎると失敗します。"] * 3
    with pytest.raises(T.TokenizerError, match=r"vocab_size <= \d+") as info:
        T.train_tokenizer(text, tmp_path / "a", vocab_size=5000, progress=False)
    suggested = int(info.value.args[0].split("vocab_size <= ")[1].split()[0])
    assert 355 < suggested < 5000
    hf = T.train_tokenizer(text, tmp_path / "b", vocab_size=suggested, progress=False)
    assert len(hf) == suggested


def test_vocab_below_required_characters(tmp_path, prose):
    with pytest.raises(T.TokenizerError, match=r"vocab_size >= \d+.*character_coverage"):
        T.train_tokenizer(prose, tmp_path / "a", vocab_size=1000, progress=False)


def test_bad_utf8_file_names_file_and_offset(tmp_path):
    path = tmp_path / "bad.txt"
    good = "正しい行です\n".encode()
    path.write_bytes(good + b"ok \xff\xfe broken\n")
    with pytest.raises(sources.BadUTF8, match=rf"bad\.txt: not UTF-8 at byte offset {len(good) + 3} \(line 2"):
        T.train_tokenizer(path, tmp_path / "out", progress=False)


def test_unreadable_file(tmp_path):
    with pytest.raises(T.TokenizerError, match=r"missing\.txt: cannot read"):
        T.train_tokenizer([tmp_path / "missing.txt"], tmp_path / "out", progress=False)
    with pytest.raises(T.TokenizerError, match="cannot read"):
        T.train_tokenizer(tmp_path, tmp_path / "out", progress=False)  # a folder


def test_bad_settings(tmp_path):
    with pytest.raises(TypeError, match="vocab_size"):
        T.train_tokenizer(["テキスト"], tmp_path, vocab_sise=100)
    with pytest.raises(T.TokenizerError, match="unigram"):
        T.train_tokenizer(["テキスト"], tmp_path, model_type="bpe")
    with pytest.raises(T.TokenizerError, match="tokenizer.normalization: expected nfkc .*got 'nfd'"):
        T.train_tokenizer(["テキスト"], tmp_path, normalization="nfd")
    with pytest.raises(T.TokenizerError, match=r"vocab_size: expected in \[355, 65536\], got 100 .*4 special pieces"):
        T.train_tokenizer(["テキスト"], tmp_path, vocab_size=100)
    # config/corpus.py's smallest vocabulary counts exactly the pieces every tokenizer of this module holds
    assert len(T.SPECIAL_TOKENS) + 256 + len(T.REQUIRED_CHARS) + 1 == config.MIN_VOCAB_SIZE


def test_load_before_training(tmp_path):
    with pytest.raises(T.TokenizerError, match="01_tokenizer"):
        T.load_sentencepiece(tmp_path)


# ---------------------------------------------------------------- real text


@pytest.fixture(scope="module")
def debian_lines() -> list[str]:
    files = sources.debian_files()
    if not files:
        pytest.skip("Debian's Japanese texts are absent (apt-get install debian-reference-ja manpages-ja)")
    return [line for path in files for line in sources.read_debian_file(path).split("\n")]


@pytest.mark.realtext
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*look like file names")  # man pages quote paths; here they are text
def test_identity_on_every_debian_line(debian_lines, tmp_path_factory):
    """Train on one line in ten, then compare ids and decoded text on every line of every file."""
    out = tmp_path_factory.mktemp("debian_tok")
    hf = T.train_tokenizer(debian_lines[::10], out, vocab_size=6000, progress=False)
    sp = T.load_sentencepiece(out)
    hf_ids = hf(debian_lines)["input_ids"]
    sp_ids = sp.encode(debian_lines)
    bad = [i for i, (a, b) in enumerate(zip(hf_ids, sp_ids)) if a != b]
    assert not bad, f"{len(bad)} of {len(debian_lines)} lines differ, e.g. {debian_lines[bad[0]]!r}"
    assert sum(map(len, sp_ids)) > 10**6
    hf_text = hf.batch_decode(sp_ids)
    sp_text = sp.decode(sp_ids)
    bad = [i for i, (a, b) in enumerate(zip(hf_text, sp_text)) if a != b]
    assert not bad, f"{len(bad)} decoded lines differ, e.g. {debian_lines[bad[0]]!r}"
    assert any(sp.is_byte(i) for ids in sp_ids for i in ids)  # the held-back lines exercise byte fallback


def test_config_defaults_are_the_reports():
    cfg = TokenizerConfig()
    assert (cfg.vocab_size, cfg.model_type, cfg.character_coverage, cfg.normalization) == (32000, "unigram", 0.9995, "nfkc")
    assert cfg.remove_extra_whitespaces and cfg.byte_fallback
    assert not (cfg.split_by_whitespace or cfg.split_by_number or cfg.split_by_unicode_script)
    assert not (cfg.add_bos or cfg.add_eos)
    args = T._trainer_args(dataclasses.replace(cfg))
    assert (args["unk_id"], args["pad_id"], args["bos_id"], args["eos_id"]) == (0, 1, 2, 3)


# ---------------------------------------------------------------- small sources, file names


def _bounded(docs, limit=200_000):
    """A repeating document stream that fails (instead of hanging) once `limit` documents were drawn."""
    for i, doc in enumerate(itertools.cycle(docs)):
        if i >= limit:
            raise AssertionError(f"sample_text read {limit} documents of a {len(docs)}-document source: it would hang")
        yield doc


@pytest.mark.parametrize("distinct", [1, 3])
def test_a_repeating_source_smaller_than_the_held_out_sample_finishes_and_says_so(tmp_path, distinct):
    docs = [f"あいうえお かきくけこ さしすせそ {i}" * 3 for i in range(distinct)]
    with pytest.warns(UserWarning, match="went back to training"):
        s = T.sample_text(_bounded(docs), tmp_path / "s.txt", sample_chars=5000, heldout_chars=10**6,
                          heldout_every=1, progress=False)
    assert s.chars == 5000 and len(s.heldout) == distinct // 2
    assert not set(s.heldout) & set((tmp_path / "s.txt").read_text(encoding="utf-8").split("\n"))
    assert "held-out sample is" in s.notes[0] and f"only {distinct} distinct" in s.notes[0]


def test_a_finite_source_smaller_than_the_sample_says_so(tmp_path):
    with pytest.warns(UserWarning, match="ran out after 30 characters"):
        s = T.sample_text(["あ" * 10, "い" * 20], tmp_path / "s.txt", sample_chars=1000, progress=False)
    assert s.chars == 30 and s.notes


def test_the_01_repro_a_tiny_file_source_finishes(tmp_path):
    from nbhelpers import config, corpus

    text = tmp_path / "s.txt"
    text.write_text("あいうえお かきくけこ さしすせそ\n" * 20, encoding="utf-8")
    cfg = config.load("smoke", [f'corpus.mixture={{"files:{text}": 1}}'])
    docs = corpus.mixed_documents(cfg.corpus, seed=1)
    try:
        with pytest.warns(UserWarning, match="went back to training"):
            s = T.sample_text(itertools.islice(docs, 200_000), tmp_path / "sample.txt", 20_000, 20_000,
                              progress=False)
    finally:
        docs.close()
    assert s.chars == 20_000


def test_a_list_of_file_names_is_read_as_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.txt").write_text("\n".join(sources.iter_texts("bundled_prose")), encoding="utf-8")
    T.train_tokenizer(["data/train.txt"], tmp_path / "a", vocab_size=2000, progress=False)
    T.train_tokenizer([tmp_path / "data" / "train.txt"], tmp_path / "b", vocab_size=2000, progress=False)
    assert (tmp_path / "a" / "spm.model").read_bytes() == (tmp_path / "b" / "spm.model").read_bytes()
    with pytest.raises(T.TokenizerError, match=r"data/missing.txt: cannot read the training file"):
        T.train_tokenizer(["data/train.txt", "data/missing.txt"], tmp_path / "c", vocab_size=2000, progress=False)


def test_a_text_that_looks_like_a_file_name_is_trained_on_as_text_and_said(tmp_path):
    texts = list(sources.iter_texts("bundled_prose"))
    with pytest.warns(UserWarning, match=r"1 training text\(s\) look like file names .*'notes.txt'.*Path\(name\)"):
        T.train_tokenizer(texts + ["notes.txt"], tmp_path, vocab_size=2000, progress=False)
