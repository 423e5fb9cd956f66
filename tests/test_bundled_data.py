"""The bundled Japanese data: it ships in the package, every line is valid, and it is big and Japanese enough."""

from __future__ import annotations

import importlib.resources
import json
import re
import unicodedata

import pytest

PROSE = "prose_ja.jsonl"
INSTRUCTIONS = "instructions_ja.jsonl"

# Kana, kanji, the iteration mark 々 and the long-vowel mark ー; punctuation and ASCII count as non-Japanese.
JAPANESE = re.compile(r"[\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff\u3005]")
HALFWIDTH_KATAKANA = re.compile(r"[\uff61-\uff9f]")
# Control characters other than the paragraph break "\n" that prose may contain.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
PROSE_ID = re.compile(r"prose-\d{4}")


def japanese_share(text: str) -> float:
    """Fraction of the non-whitespace characters that are kana or kanji."""
    chars = re.sub(r"\s", "", text)
    return len(JAPANESE.findall(chars)) / len(chars) if chars else 0.0


def bundled_text(name: str) -> str:
    """The bundled file's text, found the way an installed wheel finds it."""
    resource = importlib.resources.files("nbhelpers") / "data" / name
    assert resource.is_file(), f"nbhelpers/data/{name} is not reachable through importlib.resources"
    return resource.read_text(encoding="utf-8")


def load_rows(name: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """Every line of a bundled JSONL file as a dict, checked for the required non-empty string fields."""
    text = bundled_text(name)
    assert text.endswith("\n"), f"{name}: the last line must end with a newline"
    assert "\r" not in text, f"{name}: expected LF line endings, found CR"
    rows = []
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        where = f"{name} line {lineno}"
        assert line.strip(), f"{where}: blank line"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            pytest.fail(f"{where}: not valid JSON ({err})")
        assert isinstance(row, dict), f"{where}: expected a JSON object, got {type(row).__name__}"
        assert set(row) == set(fields), f"{where}: expected exactly the fields {fields}, got {sorted(row)}"
        for field in fields:
            value = row[field]
            assert isinstance(value, str), f"{where}: field {field!r} must be a string, got {type(value).__name__}"
            assert value.strip(), f"{where}: field {field!r} is empty"
            assert value == value.strip(), f"{where}: field {field!r} has leading or trailing whitespace"
            assert not CONTROL.search(value), f"{where}: field {field!r} contains a control character"
            assert "\ufffd" not in value, f"{where}: field {field!r} contains U+FFFD (a decoding error)"
            assert not HALFWIDTH_KATAKANA.search(value), f"{where}: field {field!r} contains half-width katakana"
            assert unicodedata.is_normalized("NFC", value), f"{where}: field {field!r} is not NFC-normalised"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def prose() -> list[dict[str, str]]:
    return load_rows(PROSE, ("id", "title", "text"))


@pytest.fixture(scope="module")
def pairs() -> list[dict[str, str]]:
    return load_rows(INSTRUCTIONS, ("prompt", "target"))


def test_japanese_share_counts_kana_and_kanji_only():
    assert japanese_share("日本語のテキスト") == 1.0
    assert japanese_share("abc です") == pytest.approx(2 / 5)
    assert japanese_share("。、「」") == 0.0


def test_prose_ids_titles_and_texts_are_unique(prose):
    ids = [r["id"] for r in prose]
    assert all(PROSE_ID.fullmatch(i) for i in ids), [i for i in ids if not PROSE_ID.fullmatch(i)]
    assert len(set(ids)) == len(ids), "duplicate ids in prose_ja.jsonl"
    assert ids == sorted(ids), "prose ids are out of order"
    assert len({r["title"] for r in prose}) == len(prose), "duplicate titles in prose_ja.jsonl"
    assert len({r["text"] for r in prose}) == len(prose), "duplicate texts in prose_ja.jsonl"


def test_prose_size_floors(prose):
    assert 80 <= len(prose) <= 120, f"expected 80-120 documents, found {len(prose)}"
    total = sum(len(r["text"].encode("utf-8")) for r in prose)
    assert total >= 60_000, f"prose text is {total} UTF-8 bytes, expected at least 60,000"
    for r in prose:
        assert 300 <= len(r["text"]) <= 900, f"{r['id']} has {len(r['text'])} characters, expected 300-900"


def test_prose_is_mostly_japanese(prose):
    for r in prose:
        share = japanese_share(r["text"])
        assert share >= 0.6, f"{r['id']} ({r['title']}) is only {share:.0%} kana/kanji"
        assert japanese_share(r["title"]) >= 0.5, f"{r['id']} title {r['title']!r} is not Japanese"
    overall = japanese_share("".join(r["text"] for r in prose))
    assert overall >= 0.8, f"the prose is only {overall:.0%} kana/kanji overall"


def test_prose_exercises_cleaning(prose):
    texts = [r["text"] for r in prose]
    assert sum("\n" in t for t in texts) >= len(texts) // 2, "most documents should have several paragraphs"
    assert any(re.search(r"https?://", t) for t in texts), "expected at least one URL-like string"
    assert any("print(" in t for t in texts), "expected at least one document with a little code"
    assert sum(bool(re.search(r"^(・|\d+\. )", t, flags=re.M)) for t in texts) >= 3, "expected a few lists"
    assert sum(bool(re.search(r"\d", t)) for t in texts) >= len(texts) // 2, "expected numbers in many documents"


def test_instruction_count_and_unique_prompts(pairs):
    assert len(pairs) >= 300, f"expected at least 300 pairs, found {len(pairs)}"
    prompts = [p["prompt"] for p in pairs]
    dupes = sorted({p for p in prompts if prompts.count(p) > 1})
    assert not dupes, f"duplicate prompts: {dupes[:5]}"


def test_instruction_targets_are_short(pairs):
    lengths = [len(p["target"]) for p in pairs]
    assert max(lengths) <= 120, f"a target has {max(lengths)} characters; the smoke model needs short ones"
    short = sum(n < 60 for n in lengths) / len(lengths)
    assert short >= 0.9, f"only {short:.0%} of targets are under 60 characters"
    for p in pairs:
        assert p["target"].endswith(("。", "！", "？")), f"target of {p['prompt']!r} does not end a sentence"
        sentences = len(re.findall(r"[。！？]", p["target"]))
        assert sentences <= 2, f"target of {p['prompt']!r} has {sentences} sentences, expected 1-2"


def test_instructions_are_mostly_japanese(pairs):
    for p in pairs:
        share = japanese_share(p["prompt"] + p["target"])
        assert share >= 0.4, f"pair {p['prompt']!r} is only {share:.0%} kana/kanji"
    overall = japanese_share("".join(p["prompt"] + p["target"] for p in pairs))
    assert overall >= 0.8, f"the instructions are only {overall:.0%} kana/kanji overall"


def test_many_instructions_are_grounded_in_the_prose(prose, pairs):
    # A target counts as grounded when at least half of its key terms (runs of 2+ kanji or katakana, and numbers)
    # occur in the prose, so SFT on the pairs can draw on what pretraining saw.
    corpus = "\n".join(r["text"] for r in prose)
    grounded = 0
    for p in pairs:
        terms = re.findall(r"[\u4e00-\u9fff\u30a1-\u30fa\u30fc\u3005]{2,}|\d[\d,.]*\d|\d", p["target"])
        grounded += bool(terms) and sum(t in corpus for t in terms) >= len(terms) / 2
    assert grounded >= 0.6 * len(pairs), f"only {grounded} of {len(pairs)} targets draw on the prose"
