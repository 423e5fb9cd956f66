"""The corpus stage: clean, mix by ratio, tokenize and pack into fixed-length uint16 blocks, and read them back.

Public API: `mixed_documents` (the cleaned, deduplicated, ratio-mixed document stream), `build_corpus` (02: the
validation shard and the training stream's start), `open_stream` and `stream.StreamBatches` (03 and 04: the
stream the producer makes while training, as a batch source; `stream` imports torch, so it is not imported
here), `build_parts` (parts made ahead), `load_corpus`, `token_budget`.

The data's units, smallest first (one meaning each; the size setting; where it lives in the code; docs/DATA.md's
glossary says the same for users):
- chunk: bytes decoded at a time when a text file is read front to back; TEXT_CHUNK (smaller first);
  memory only (sources/local.py).
- document: one text (a blank-line paragraph, a JSON line's field, a parquet row's column, a hub row's fields),
  cleaned, deduplicated and tokenized, ending with EOS; corpus.min_chars drops shorter ones; memory only.
- slice: a byte range of a local text or JSONL file cut at a paragraph or line end, or a run of parquet row
  groups; FIRST_RANGE_BYTES doubling to RANGE_BYTES; planned in sources/slices.py.
- piece: the unit of reading and cleaning, one worker task: a slice, one Debian file, numbered generated
  problems, or the documents a reader thread read from a streamed source (hub, gzip); PIECE_PROBLEMS,
  STREAM_CHARS and corpus.shuffle_buffer; memory only (pieces.py, reading.py). SentencePiece's "pieces" are
  its vocabulary entries, not these.
- block: corpus.block_len token ids (uint16), one training row; inside shards.
- shard: a file of whole blocks: the validation shard val-<fp>.bin (corpus.val_blocks) in runs/X/corpus/, and
  each part's .bin (parts.write_shard writes both).
- part: one numbered shard of the training stream plus its metadata (part-NNNNN.bin and .json), made by the
  producer while 03 trains; part_blocks blocks (corpus.part_tokens), corpus.parts_ahead kept ready; the parts
  folder on scratch (producer.parts_dir).
- hub file: one data file of a hub dataset; a listed source names `file_count` of them (registry.Source).
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
