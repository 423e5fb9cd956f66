"""The corpus stage: clean, mix by ratio, tokenize and pack into fixed-length uint16 blocks, and read them back.

Public API: `mixed_documents` (the cleaned, deduplicated, ratio-mixed document stream), `build_corpus`
(the resumable, session-part build), `load_corpus` (random-access block readers), `token_budget`.
"""

from __future__ import annotations

from .build import CorpusBuildError, TokenBudget, build_corpus, fingerprint, token_budget, tokenizer_hash
from .clean import CleanStats, clean_text, normalise_whitespace, symbol_tier, thin_symbols
from .mixing import Document, Mixer, MixtureError, mixed_documents, validate_mixture
from .packing import BlockWriter, VocabTooLarge, check_vocab
from .reader import BlockReader, ConcatReader, Corpus, CorpusMissing, decode_block, load_corpus

__all__ = [
    "BlockReader", "BlockWriter", "CleanStats", "ConcatReader", "Corpus", "CorpusBuildError", "CorpusMissing",
    "Document", "Mixer", "decode_block", "MixtureError", "TokenBudget", "VocabTooLarge", "build_corpus", "check_vocab",
    "clean_text", "fingerprint", "load_corpus", "mixed_documents", "normalise_whitespace", "symbol_tier",
    "thin_symbols", "token_budget", "tokenizer_hash", "validate_mixture",
]
