"""The corpus stage: clean, mix by ratio, tokenize and pack into fixed-length uint16 blocks, and read them back.

Public API: `mixed_documents` (the cleaned, deduplicated, ratio-mixed document stream), `build_corpus` (02: the
validation shard and the training stream's start), `open_stream` and `stream.StreamBatches` (03 and 04: the
stream the producer makes while training, as a batch source; `stream` imports torch, so it is not imported
here), `build_parts` (parts made ahead), `load_corpus`, `token_budget`.
"""

from __future__ import annotations

from .build import CorpusBuildError, TokenBudget, build_corpus, fingerprint, token_budget, tokenizer_hash
from .clean import CleanStats, clean_text, normalise_whitespace, symbol_tier, thin_symbols
from .mixing import Document, Mixer, MixtureError, mixed_documents, validate_mixture
from .packing import BlockWriter, VocabTooLarge, check_vocab
from .producer import build_parts, open_stream, parts_dir
from .reader import BlockReader, Corpus, CorpusMissing, decode_block, load_corpus

__all__ = [
    "BlockReader", "BlockWriter", "CleanStats", "Corpus", "CorpusBuildError", "CorpusMissing", "Document", "Mixer",
    "MixtureError", "TokenBudget", "VocabTooLarge", "build_corpus", "build_parts", "check_vocab",
    "clean_text", "decode_block", "fingerprint", "load_corpus", "mixed_documents", "normalise_whitespace",
    "open_stream", "parts_dir", "symbol_tier", "thin_symbols", "token_budget", "tokenizer_hash", "validate_mixture",
]


def __getattr__(name: str):
    """Submodules on first use (`nbhelpers.corpus.stream` imports torch, so it is not imported above)."""
    import importlib
    import importlib.util

    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
