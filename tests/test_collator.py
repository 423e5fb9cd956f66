"""Masked labels for instruction examples: exact expectations on a character-level tokenizer."""

from __future__ import annotations

import pytest
import torch
from char_tokenizer import char_tokenizer as make_char_tokenizer
from transformers import PreTrainedTokenizerFast

from nbhelpers import collator
from nbhelpers.collator import IGNORE, Collator, OverflowStats, TemplateError, build_example

CHARS = "QAab12xyz### 指示応答:\n"


def char_tokenizer(pad_is_eos: bool = False) -> PreTrainedTokenizerFast:
    """One token per character of CHARS."""
    return make_char_tokenizer(CHARS, pad_is_eos)


TOK = char_tokenizer()
V = TOK.get_vocab()
Q, A, a, b, one, two, x, y, z = (V[c] for c in "QAab12xyz")
EOS, PAD, BOS = 3, 1, 2
T = "Q{prompt}A"  # template: head "Q", marker "A"


def build(prompt="ab", target="12", max_length=16, tok=TOK, **kw):
    kw.setdefault("template", T)
    return build_example(tok, prompt, target, max_length, **kw)


def test_plain_example_masks_prompt_and_trains_response_and_one_eos():
    ex = build()
    assert ex["input_ids"] == [EOS, Q, a, b, A, one, two, EOS]
    assert ex["labels"] == [IGNORE] * 5 + [one, two, EOS]
    assert ex["attention_mask"] == [1] * 8


def test_prefix_options():
    assert build(prefix="bos")["input_ids"][:2] == [BOS, Q]
    ex = build(prefix="none")
    assert ex["input_ids"] == [Q, a, b, A, one, two, EOS]
    assert ex["labels"] == [IGNORE] * 4 + [one, two, EOS]
    with pytest.raises(ValueError, match="prefix"):
        build(prefix="start")


def test_padding_is_masked_when_pad_differs_from_eos():
    ex = build(max_length=11, pad_to_max=True)
    assert ex["input_ids"] == [EOS, Q, a, b, A, one, two, EOS, PAD, PAD, PAD]
    assert ex["labels"] == [IGNORE] * 5 + [one, two, EOS] + [IGNORE] * 3
    assert ex["attention_mask"] == [1] * 8 + [0] * 3


def test_pad_equal_to_eos_learns_the_ending_eos_but_not_padding():
    tok = char_tokenizer(pad_is_eos=True)
    assert tok.pad_token_id == tok.eos_token_id == EOS
    ex = build(tok=tok, max_length=11, pad_to_max=True)
    assert ex["input_ids"] == [EOS, Q, a, b, A, one, two, EOS, EOS, EOS, EOS]
    assert ex["labels"] == [IGNORE] * 5 + [one, two, EOS] + [IGNORE] * 3  # one EOS trained, padding EOSes not
    assert ex["attention_mask"] == [1] * 8 + [0] * 3
    batch = Collator(pad_id=tok.pad_token_id, max_length=11, fixed_length=True)([build(tok=tok), build(tok=tok,
                                                                                   target="1")])
    assert batch["labels"].tolist() == [
        [IGNORE] * 5 + [one, two, EOS] + [IGNORE] * 3,
        [IGNORE] * 5 + [one, EOS] + [IGNORE] * 4,
    ]
    assert (batch["labels"] == EOS).sum().item() == 2  # exactly one learned EOS per row


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_template_and_response():
    stats = OverflowStats()
    # full: [EOS Q x y z a b A 1 2 EOS] = 11 tokens; 9 allowed -> the prompt loses its first 2 tokens
    ex = build(prompt="xyzab", max_length=9, stats=stats)
    assert ex["input_ids"] == [EOS, Q, z, a, b, A, one, two, EOS]
    assert ex["labels"] == [IGNORE] * 6 + [one, two, EOS]
    assert stats.as_dict() == {"examples": 1, "truncated": 1, "truncated_tokens": 2, "dropped": 0,
                               "dropped_response_too_long": 0}


def test_drop_option_drops_and_counts():
    stats = OverflowStats()
    assert build(prompt="xyzab", max_length=9, overflow="drop", stats=stats) is None
    assert build(prompt="ab", max_length=9, overflow="drop", stats=stats) is not None  # fits: kept
    assert (stats.examples, stats.dropped, stats.truncated) == (2, 1, 0)


def test_response_that_cannot_fit_is_dropped_even_when_truncating():
    stats = OverflowStats()
    # template (EOS Q A) + response (1 2 1 2 1 EOS) = 9 > 8: no prompt cut can save it
    assert build(prompt="ab", target="12121", max_length=8, stats=stats) is None
    assert (stats.dropped, stats.dropped_response_too_long, stats.truncated) == (1, 1, 0)
    # exactly fits once the whole prompt is cut
    ex = build(prompt="ab", target="1212", max_length=8, stats=stats)
    assert ex["input_ids"] == [EOS, Q, A, one, two, one, two, EOS]
    assert ex["labels"] == [IGNORE] * 3 + [one, two, one, two, EOS]


def test_fixed_length_mode_keeps_shapes_static():
    rows = [build(), build(prompt="a", target="1")]
    fixed = Collator(pad_id=PAD, max_length=12, fixed_length=True)
    batch = fixed(rows)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {k: (2, 12) for k in ("input_ids", "labels",
                                                                                  "attention_mask")}
    assert all(v.dtype == torch.long for v in batch.values())
    assert batch["input_ids"][1].tolist() == [EOS, Q, a, A, one, EOS] + [PAD] * 6
    assert batch["labels"][1].tolist() == [IGNORE] * 4 + [one, EOS] + [IGNORE] * 6
    assert batch["attention_mask"][1].tolist() == [1] * 6 + [0] * 6
    assert fixed([build(prompt="a", target="1")])["input_ids"].shape == (1, 12)  # same shape whatever the rows


def test_dynamic_mode_pads_to_longest_rounded_up():
    batch = Collator(pad_id=PAD, max_length=64, multiple_of=8)([build(), build(prompt="a", target="1")])
    assert batch["input_ids"].shape == (2, 8)
    batch = Collator(pad_id=PAD, max_length=10, multiple_of=8)([build(prompt="xyzab", max_length=10)])
    assert batch["input_ids"].shape == (1, 10)  # 10 tokens round up to 16, capped at max_length


def test_dynamic_mode_rejects_rows_over_max_length():
    with pytest.raises(ValueError, match="does not fit"):
        Collator(pad_id=PAD, max_length=8)([build(prompt="xyzab")])


def test_default_template_and_marker_check():
    collator.check_template(collator.DEFAULT_TEMPLATE, collator.DEFAULT_MARKER)
    with pytest.raises(TemplateError, match="response marker"):
        collator.check_template("### 指示:\n{prompt}\n", "### 応答:")
    with pytest.raises(TemplateError, match="after"):
        collator.check_template("### 応答:\n{prompt}\n", "### 応答:")
    with pytest.raises(TemplateError, match="exactly one"):
        collator.check_template("### 指示:\n\n### 応答:\n", "### 応答:")
    assert collator.format_prompt("a{b}", "Q{prompt}A") == "Qa{b}A"


def test_overflow_option_is_checked():
    with pytest.raises(ValueError, match="overflow"):
        build(overflow="cut")
