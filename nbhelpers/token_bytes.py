"""Bits per byte: the UTF-8 bytes each token id stands for, so a loss over token ids becomes a figure per byte of text.

Bits per byte = summed negative log-likelihood (nats) / ln 2 / UTF-8 bytes of the scored text. Unlike the loss
per token and perplexity it does not depend on the tokenizer, so runs with different vocabularies (and other
Japanese models: nanochat-japanese reports 0.80) compare.

The corpus holds token ids, not text, so the bytes of packed blocks are counted per token from the tokenizer's
vocabulary (`TokenBytes`):

- a SentencePiece piece counts the UTF-8 bytes of its text with the meta-space "▁" as one space (1 byte);
- a byte-fallback piece `<0xNN>` counts 1 byte;
- special tokens (EOS between documents, BOS, padding, unk) count 0;
- a token right after EOS opens a document: its leading "▁" is SentencePiece's dummy prefix, which decoding
  drops, so it counts 0 (the first token of a block has no known predecessor, but it is never scored).
- other tokenizers: the bytes of the token decoded alone.

With these rules the bytes of a document's tokens equal `len(tokenizer.decode(ids).encode())`, the bytes of
the text as the tokenizer normalised it (NFKC, runs of spaces collapsed). They differ from the raw text's bytes
where normalisation changed it (full-width "Ａ" is 3 bytes, NFKC's "A" 1) and for an `<unk>` (0 bytes for text it
could not spell; byte fallback makes this rare). `evaluation.perplexity`, which scores raw texts, divides by
the raw text's bytes instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

META_SPACE = "\u2581"  # SentencePiece's "▁"
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass(frozen=True)
class TokenBytes:
    """UTF-8 bytes per token id (`lengths`, shape (V,)) and which tokens start with the meta-space (`space`)."""

    lengths: np.ndarray  # (V,) int64
    space: np.ndarray  # (V,) bool: the piece starts with "▁" (a dummy prefix when it opens a document)
    eos_id: int | None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenBytes:
        """The table of a transformers tokenizer (SentencePiece pieces, byte fallback, or any decodable vocabulary)."""
        size = len(tokenizer)
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        sentencepiece = any(isinstance(p, str) and p.startswith(META_SPACE) for p in pieces)
        lengths = np.zeros(size, dtype=np.int64)
        space = np.zeros(size, dtype=bool)
        for i, piece in enumerate(pieces):
            if i in special or piece is None:
                continue
            if _BYTE_PIECE.match(piece):
                lengths[i] = 1
            elif sentencepiece:
                lengths[i] = len(piece.replace(META_SPACE, " ").encode("utf-8"))
                space[i] = piece.startswith(META_SPACE)
            else:
                lengths[i] = len(tokenizer.decode([i]).encode("utf-8"))
        return cls(lengths, space, getattr(tokenizer, "eos_token_id", None))

    def text_bytes(self, ids: np.ndarray | list[int], first_opens_document: bool = True) -> int:
        """Bytes of one tokenized document `ids` as decoding gives them (its dummy prefix not counted)."""
        ids = np.asarray(ids, dtype=np.int64)
        total = int(self.lengths[ids].sum())
        if first_opens_document and len(ids) and self.space[ids[0]]:
            total -= 1
        return total

    def scored_bytes(self, input_ids: Any, labels: Any) -> int:
        """Bytes of the tokens a causal LM scores in a batch: labels[:, 1:] != -100, each predicted from input_ids[:, :-1]."""
        ids = np.asarray(input_ids, dtype=np.int64)  # (B, T)
        target = np.asarray(labels, dtype=np.int64)[:, 1:]  # (B, T-1)
        scored = target != -100
        safe = np.where(scored, target, 0)
        nbytes = self.lengths[safe]
        if self.eos_id is not None:  # a document's first token after EOS: its "▁" is the dummy prefix
            nbytes = nbytes - (self.space[safe] & (ids[:, :-1] == self.eos_id))
        return int(np.where(scored, nbytes, 0).sum())


def bits_per_byte(nll_nats: float, n_bytes: float) -> float | None:
    """Summed negative log-likelihood in nats over the scored text's UTF-8 bytes, in bits; None without bytes."""
    return nll_nats / math.log(2) / n_bytes if n_bytes > 0 else None
