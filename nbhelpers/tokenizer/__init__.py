"""The tokenizer stage: sample training text, train SentencePiece, export an identical Hugging Face fast tokenizer.

`sample` (the training text and the held-out sample), `train` (SentencePiece training), `hf` (the exact Hugging
Face twin, loading, the hash, statistics). The names stay reachable as `nbhelpers.tokenizer.X`.

BOS/EOS: `add_bos`/`add_eos` (TokenizerConfig, default off) apply to both `load_sentencepiece()` and the
HF tokenizer; the corpus packer and the instruction collator add EOS by id themselves.
"""

from __future__ import annotations

from ..config import NORMALIZATIONS as NORMALIZATIONS  # re-exported: declared with the field, in config/corpus.py
from ..layout import SPM_FILE as SPM_FILE
from .hf import SCORE_STEP as SCORE_STEP
from .hf import SETTINGS_FILE as SETTINGS_FILE
from .hf import SPECIAL_TOKENS as SPECIAL_TOKENS
from .hf import UNMATCHABLE_SCORE as UNMATCHABLE_SCORE
from .hf import TokenizerError as TokenizerError
from .hf import build_hf_backend as build_hf_backend
from .hf import compare as compare
from .hf import export_hf as export_hf
from .hf import load_sentencepiece as load_sentencepiece
from .hf import tokenizer_hash as tokenizer_hash
from .hf import tokenizer_stats as tokenizer_stats
from .sample import TextSample as TextSample
from .sample import document_lines as document_lines
from .sample import sample_text as sample_text
from .sample import split_line as split_line
from .train import REQUIRED_CHARS as REQUIRED_CHARS
from .train import VOCAB_TOO_HIGH as VOCAB_TOO_HIGH
from .train import _trainer_args as _trainer_args  # noqa: F401  (test_tokenizer checks the trainer's options)
from .train import resolve_settings as resolve_settings
from .train import train_tokenizer as train_tokenizer
