"""The tokenizer and corpus sections: SentencePiece settings, sources and their mixture, cleaning, budget, packing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import registry
from ..layout import MAX_VOCAB as MAX_VOCAB_SIZE  # the corpus stores token ids as layout.TOKEN_DTYPE
from .rules import cross_rule, setting

# Seed corpus mixture: the report mixes Wikipedia, Wikibooks, C4 (ja) and JaMARD by ratio.
SEED_MIXTURE = {"wikipedia_ja": 0.45, "wikibooks_ja": 0.05, "c4_ja": 0.40, "jamard": 0.10}
SMOKE_MIXTURE = {"bundled_prose": 0.8, "arithmetic": 0.2}


NORMALIZATIONS = ("nfkc", "identity", "nmt_nfkc", "nfkc_cf", "nmt_nfkc_cf")  # SentencePiece's built-in rules
# 4 special pieces + 256 byte pieces + the 94 printable ASCII characters every tokenizer keeps + 1
MIN_VOCAB_SIZE = 4 + 256 + 94 + 1


@dataclass(frozen=True)
class TokenizerConfig:
    """SentencePiece settings; the defaults are the report's."""

    # pieces in the vocabulary (special + byte + learned)
    vocab_size: int = setting(32000, ge=MIN_VOCAB_SIZE, le=MAX_VOCAB_SIZE,
                              note=f"at least {MIN_VOCAB_SIZE}: 4 special pieces, 256 byte pieces and 94 ASCII "
                              "characters; at most 65536: the corpus stores token ids as uint16")
    # unigram: the only type exported exactly to a Hugging Face tokenizer
    model_type: str = setting("unigram", choices=("unigram",))
    # share of the training text's characters the vocabulary covers; the rarest rest falls back to bytes
    character_coverage: float = setting(0.9995, ge=0.98, le=1.0, note="SentencePiece's range")
    # SentencePiece's Unicode normalization rule, applied before encoding
    normalization: str = setting("nfkc", choices=NORMALIZATIONS)
    # drop leading, trailing and repeated spaces, as SentencePiece does
    remove_extra_whitespaces: bool = True
    # off: a piece may span a space (Japanese has no spaces between words)
    split_by_whitespace: bool = False
    # off: a piece may join digits and letters
    split_by_number: bool = False
    # off: a piece may join kanji, kana and Latin letters
    split_by_unicode_script: bool = False
    # a character outside the vocabulary becomes its UTF-8 bytes, never <unk>
    byte_fallback: bool = True
    add_bos: bool = False  # encode() adds BOS: off, documents are joined with EOS instead
    add_eos: bool = False  # encode() adds EOS: off, the packer and the collator add it explicitly
    # characters of mixed corpus text used to train the tokenizer
    sample_chars: int = setting(200_000_000, ge=1)
    heldout_chars: int = setting(200_000, ge=0)  # characters held out for the statistics shown in 01
    # bytes; longer training lines are split, not dropped
    max_sentence_length: int = setting(16384, ge=16, le=1 << 30)
    # 0 = all cores; SentencePiece gives the same model for the same text and thread count
    num_threads: int = setting(0, ge=0)


# ---------------------------------------------------------------- corpus

ON_BAD_UTF8 = ("error", "skip")
ON_EXHAUSTED = ("repeat", "stop")


def _mixture_problem(mixture: dict[str, float]) -> str | None:
    """Known source names and at least one positive weight (weights are checked >= 0 by the bounds)."""
    if not mixture:
        return "a non-empty dict of source name -> weight"
    for name in mixture:
        try:
            registry.resolve(name)
        except registry.SourceError as err:
            return f"known source names: {err}"
    if sum(mixture.values()) <= 0:
        return "at least one positive weight (all weights are zero)"
    return None


@dataclass(frozen=True)
class CorpusConfig:
    """Sources, mixture weights, cleaning, token budget and packing."""

    # source name -> weight (relative; normalized to a share of the tokens)
    mixture: dict[str, float] = setting(factory=lambda: dict(SEED_MIXTURE), ge=0, check=_mixture_problem)
    # 0 keeps every symbol, 1 removes every non-punctuation symbol in prose
    symbol_level: float = setting(0.5, ge=0.0, le=1.0)
    min_chars: int = setting(50, ge=0)  # documents shorter than this after cleaning are dropped
    # drop exact duplicate documents (by hash) across the whole stream
    dedup: bool = True
    block_len: int = setting(512, ge=2)  # tokens per packed block (the training context)
    token_budget: int = setting(0, ge=0)  # 0 = Chinchilla: 20 tokens per model parameter
    # tokens per model parameter when token_budget is 0
    tokens_per_param: float = setting(20.0, gt=0)
    # 03 produces the training stream while it trains, in parts of part_tokens (whole blocks): at most
    # parts_ahead parts ready ahead of the one being read, one behind, on local scratch disk
    part_tokens: int = setting(8_000_000, ge=2)
    parts_ahead: int = setting(2, ge=1)
    # blocks of block_len tokens held out as the validation shard
    val_blocks: int = setting(256, ge=1)
    # shuffling and sampling of the mixture
    seed: int = setting(1234, ge=0)
    # processes that clean and tokenize: 0 = all cores (02), and while training the spare ones, at most 8
    workers: int = setting(0, ge=0)
    # a file that is not UTF-8: error (stop with its name) | skip (count and leave it out)
    on_bad_utf8: str = setting("error", choices=ON_BAD_UTF8)
    # 0 = source order; > 1 shuffles: files (and the bundled prose, Debian's texts) are read in slices of about 64,000
    # characters, each slice's documents shuffled and the slices in windows of 32; streamed sources (the hub,
    # gzipped files) are read in pieces of up to this many documents (and 1M characters), each piece shuffled
    shuffle_buffer: int = setting(2000, ge=0)
    # repeat (a finite source starts a new epoch) | stop (the stream ends)
    on_exhausted: str = setting("repeat", choices=ON_EXHAUSTED)



@cross_rule("corpus.part_tokens", "corpus.block_len")
def _parts_hold_a_block(cfg: Any) -> str | None:
    if cfg.corpus.part_tokens < cfg.corpus.block_len:
        return (f"corpus.part_tokens={cfg.corpus.part_tokens} is smaller than one block (corpus.block_len="
                f"{cfg.corpus.block_len}); a part of the training stream holds whole blocks")
    return None


@cross_rule("corpus.val_blocks", "corpus.block_len", "corpus.token_budget")
def _val_within_the_budget(cfg: Any) -> str | None:
    # the validation shard is a sample of the stream: more tokens than the training budget is a typo (with
    # token_budget=0 the budget follows from the model, and 02 checks it when it knows the parameter count)
    val_tokens = cfg.corpus.val_blocks * cfg.corpus.block_len
    if cfg.corpus.token_budget and val_tokens > cfg.corpus.token_budget:
        return (f"corpus.val_blocks={cfg.corpus.val_blocks} makes a validation shard of {val_tokens:,} tokens, more "
                f"than corpus.token_budget={cfg.corpus.token_budget:,}; use corpus.val_blocks <= "
                f"{max(1, cfg.corpus.token_budget // cfg.corpus.block_len):,}")
    return None


