"""Bits per byte: the bytes each token id stands for, checked by hand and against decoding real Japanese text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbhelpers import sources
from nbhelpers.token_bytes import TokenBytes, bits_per_byte

# a SentencePiece-style vocabulary: specials, two byte-fallback pieces, pieces with and without the meta-space
PIECES = ["<unk>", "<pad>", "<s>", "</s>", "<0xE3>", "<0x41>", "▁東京", "は", "▁", "日本", "▁a", "です"]


def _unigram_tokenizer():
    """An HF fast tokenizer over PIECES (a Unigram model with byte fallback, as tokenizer/hf.py exports ours)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = models.Unigram([(p, -float(i)) for i, p in enumerate(PIECES)], unk_id=0, byte_fallback=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def test_byte_lengths_by_hand():
    tb = TokenBytes.from_tokenizer(_unigram_tokenizer())
    # <unk> <pad> <s> </s>: 0; <0xE3> <0x41>: 1 each; ▁東京 = 1 + 3 + 3; は 3; ▁ 1; 日本 6; ▁a 2; です 6
    assert tb.lengths.tolist() == [0, 0, 0, 0, 1, 1, 7, 3, 1, 6, 2, 6]
    assert tb.space.tolist() == [False] * 6 + [True, False, True, False, True, False]
    assert tb.eos_id == 3


def test_scored_bytes_of_a_packed_block_by_hand():
    tb = TokenBytes.from_tokenizer(_unigram_tokenizer())
    # one block holding the end of a document, EOS, then a new document "東京は" + "日本" (its ▁ is the dummy prefix)
    ids = np.array([[9, 7, 3, 6, 7, 9, 10]])
    # targets are ids[1:] = は </s> ▁東京 は 日本 ▁a: 3 + 0 + (7 - 1, after EOS) + 3 + 6 + 2 (a real space)
    assert tb.scored_bytes(ids, ids) == 3 + 0 + 6 + 3 + 6 + 2
    labels = ids.copy()
    labels[0, :4] = -100  # an instruction's prompt: not scored
    assert tb.scored_bytes(ids, labels) == 3 + 6 + 2
    assert tb.text_bytes([6, 7, 9]) == len("東京は日本".encode())
    assert tb.text_bytes([10, 11], first_opens_document=False) == len(" aです".encode())


def test_bits_per_byte_by_hand():
    # 14 bytes scored with a summed NLL of 14 * ln 2 nats: exactly one bit per byte
    assert bits_per_byte(14 * math.log(2), 14) == pytest.approx(1.0)
    assert bits_per_byte(3.0, 0) is None


@pytest.mark.realtext
def test_token_bytes_equal_the_decoded_text_on_debian_documents(debian_files, tmp_path):
    """Our SentencePiece tokenizer on real Japanese: per document, token bytes == len(decode(ids).encode())."""
    from nbhelpers.tokenizer import train_tokenizer

    texts = [t for t in (sources.read_debian_file(p) for p in debian_files[::25]) if t.strip()][:40]
    tok = train_tokenizer(texts, tmp_path / "tok", vocab_size=1500, sample_chars=600_000, heldout_chars=0,
                          progress=False)
    tb = TokenBytes.from_tokenizer(tok)
    docs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    byte_pieces = sum(1 for d in docs for i in d if tok.convert_ids_to_tokens(i).startswith("<0x"))
    assert byte_pieces > 0  # byte fallback is exercised
    for ids in docs:
        assert tb.text_bytes(ids) == len(tok.decode(ids).encode("utf-8"))
    # packed as the corpus packs them (each document followed by EOS) in one row: every token after the first scored
    row = np.array([[i for d in docs for i in [*d, tok.eos_token_id]]])
    decoded = sum(len(tok.decode(d).encode("utf-8")) for d in docs)
    assert tb.scored_bytes(row, row) == decoded - tb.text_bytes(row[0, :1])
    # normalisation (NFKC, collapsed spaces) makes the decoded text shorter than the raw one: say so, not hide it
    assert decoded < sum(len(t.encode("utf-8")) for t in texts)
