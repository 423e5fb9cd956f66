"""Cleaning: NFKC, symbol thinning by level, punctuation kept, math exempt, whitespace, batch == one by one."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from nbhelpers.corpus import clean
from nbhelpers.corpus.clean import clean_batch, clean_many, clean_text, normalise_whitespace, symbol_tier

JAPANESE_PUNCT = "。、・「」『』（）！？【】〈〉《》〔〕［］｛｝“”‘’〜ー…，．：；"


@pytest.mark.parametrize("ch", list(JAPANESE_PUNCT))
@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
def test_sentence_punctuation_and_brackets_survive_every_level(ch, level):
    text = f"今日は{ch}晴れです"
    assert clean_text(text, level) == unicodedata.normalize("NFKC", text)


def test_symbols_thinned_by_tier():
    text = "東京★タワー #見学 50% 1+1"
    assert clean_text(text, 0.0) == text
    assert clean_text(text, 0.25) == "東京タワー #見学 50% 1+1"
    assert clean_text(text, 0.5) == "東京タワー 見学 50% 1+1"
    assert clean_text(text, 0.75) == "東京タワー 見学 50 1+1"
    assert clean_text(text, 1.0) == "東京タワー 見学 50 11"
    assert symbol_tier("。") is None and symbol_tier("あ") is None and symbol_tier("7") is None


def test_emoji_and_private_use_removed_but_letters_outside_the_bmp_kept():
    assert clean_text("猫😀が鳴く\U000F0001", 0.25) == "猫が鳴く"
    assert clean_text("𠮷野家", 1.0) == "𠮷野家"  # an astral kanji is a letter, never thinned


def test_math_sources_are_exempt_from_thinning():
    text = "問題: 3 + 4 × 2 = ?\n答え: 11 ★"
    assert clean_text(text, 1.0, math=True) == text
    assert "+" not in clean_text(text, 1.0, math=False)


def test_repeated_symbols_collapse_to_three():
    assert clean_text("すごい！！！！！！", 0.5) == "すごい!!!"
    assert clean_text("すごい！！！！！！", 0.0) == "すごい!!!!!!"  # level 0 keeps everything


def test_nfkc_folds_width_forms():
    assert clean_text("ｶﾀｶﾅとＡＢＣ１２３", 0.5) == "カタカナとABC123"


def test_whitespace_normalisation():
    raw = "  一行目\t\tです　　全角 \r\n\n\n\n\n二行目\x07です  \n  "
    assert normalise_whitespace(unicodedata.normalize("NFKC", raw)) == "一行目 です 全角\n\n二行目です"


def test_batch_cleaning_equals_one_by_one():
    docs = ["  本文「こんにちは」★  ", "表\t\t計算 1+1=2 ", "", "\n\n", "記号###です！！！！", "猫😀\r\n\r\n\r\n犬"]
    texts, lens = clean_many(docs, 0.5)
    assert texts == [clean_text(d, 0.5) for d in docs]
    assert lens[:, 0].tolist() == [len(d) for d in docs]
    assert lens[:, 3].tolist() == [len(t) for t in texts]
    assert (lens[:, 1] >= lens[:, 2]).all()  # thinning only removes


def test_a_document_holding_the_batch_sentinel_is_cleaned_alone():
    docs = ["前の文書です", f"私用文字{clean.SENTINEL}を含む", "後の  文書"]
    texts, _ = clean_many(docs, 0.5)
    assert texts == [clean_text(d, 0.5) for d in docs]


def test_clean_batch_drops_short_documents_and_counts_steps():
    raw = ["短い", "これは十分に長い文書です。★★", "これは十分に長い文書です。★★"]
    b = clean_batch(raw, 0.5, False, 10, tokenize=False, keep_texts=True)
    assert b.hashes[0] == 0 and b.texts[0] is None and b.steps[0, 4] == 1
    assert b.hashes[1] == b.hashes[2] != 0  # same text, same hash: the mixer drops the second
    assert b.texts[1] == "これは十分に長い文書です。"
    stats = clean.CleanStats()
    stats.add_steps(b.steps)
    assert stats.documents_in == 3 and stats.short_documents == 1 and stats.short_chars == 2
    assert stats.symbol_chars == 4 and stats.characters_in == sum(map(len, raw))
    assert clean.CleanStats.from_dict(stats.to_dict()) == stats


def test_clean_batch_without_cleaning_keeps_text_as_is():
    b = clean_batch(["そのまま  ★"], 0.5, False, 1, tokenize=False, keep_texts=True, cleaning=False)
    assert b.texts == ["そのまま  ★"]
    assert np.all(b.steps[0, :4] == len("そのまま  ★"))


@pytest.mark.parametrize("level", [0.25, 0.5, 1.0])
def test_fast_repeat_class_matches_the_generic_pattern_on_every_bmp_character(level):
    # _thin collapses repeats with an explicit BMP class; it must do what [^\w\s] does, character for character
    bmp, astral, _ = clean._thinning_regexes(level)
    text = "".join(chr(cp) * 5 + "a" for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF)
    thinned = bmp.sub("", text)
    assert clean._thin(text, level) == clean._REPEATS.sub(r"\1\1\1", thinned)
    assert "・・・a" in clean._thin(text, level) and "----" not in clean._thin(text, level)
    with_emoji = "----😀!!!!!" + text[:5000]  # an astral character: the generic pattern runs
    expected = clean._REPEATS.sub(r"\1\1\1", astral.sub("", bmp.sub("", with_emoji)))
    assert clean._thin(with_emoji, level) == expected


def test_symbol_tier_by_category():
    assert symbol_tier("★") == clean.TIER_DECORATIVE and symbol_tier("#") == clean.TIER_MARKUP
    assert symbol_tier("%") == clean.TIER_PUNCT and symbol_tier("+") == clean.TIER_MATH
    assert symbol_tier("、") is None and symbol_tier(clean.SENTINEL) is None and symbol_tier("\u200b") == 0.25


def test_blocks_skipped_by_the_thinning_scan_hold_only_letters():
    for lo, hi in [(0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x20000, 0x3FFFF)]:
        assert {unicodedata.category(chr(cp)) for cp in range(lo, hi + 1)} <= {"Lo", "Cn"}, hex(lo)
