"""Training the SentencePiece unigram model: settings, trainer options, errors that say what to change."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import string
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..config import TokenizerConfig, check_section
from ..layout import SPM_FILE
from ..platform import cpu_cores
from .hf import NORMAL, SCORE_STEP, SPECIAL_TOKENS, TokenizerError, export_hf
from .sample import document_lines, input_texts

REQUIRED_CHARS = "".join(c for c in string.printable if c.isprintable() and c != " ")  # ASCII 0x21-0x7E
VOCAB_TOO_HIGH = re.compile(r"Vocabulary size (?:is )?too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def resolve_settings(config: TokenizerConfig | None = None, **settings: Any) -> TokenizerConfig:
    """TokenizerConfig with keyword overrides; an unknown name is an error listing close matches."""
    config = config or TokenizerConfig()
    names = [f.name for f in dataclasses.fields(TokenizerConfig)]
    for key in settings:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(names)}"
            raise TypeError(f"unknown tokenizer setting {key!r}{hint}")
    config = dataclasses.replace(config, **settings)
    check_section(config, TokenizerError)  # config's rules: model type, normalization, vocabulary range
    return config


def _trainer_args(cfg: TokenizerConfig) -> dict[str, Any]:
    """SentencePiece trainer options: the report's settings plus the ids of the four special pieces."""
    ids = {f"{k}_id": i for k, (i, _) in SPECIAL_TOKENS.items()}
    pieces = {f"{k}_piece": p for k, (_, p) in SPECIAL_TOKENS.items()}
    return dict(
        vocab_size=cfg.vocab_size, model_type=cfg.model_type, character_coverage=cfg.character_coverage,
        normalization_rule_name=cfg.normalization, remove_extra_whitespaces=cfg.remove_extra_whitespaces,
        split_by_whitespace=cfg.split_by_whitespace, split_by_number=cfg.split_by_number,
        split_by_unicode_script=cfg.split_by_unicode_script, byte_fallback=cfg.byte_fallback,
        max_sentence_length=cfg.max_sentence_length, num_threads=cfg.num_threads or cpu_cores(),
        input_sentence_size=0, shuffle_input_sentence=False, required_chars=REQUIRED_CHARS,
        add_dummy_prefix=True, **ids, **pieces,
    )


# ---------------------------------------------------------------- training


def train_tokenizer(inputs: Any, out_dir: str | os.PathLike, config: TokenizerConfig | None = None, *,
                    progress: bool = True, verbose: bool = False, **settings: Any):
    """Train a SentencePiece unigram model on `inputs` and save it with its HF twin in `out_dir`; return the HF tokenizer.

    `inputs`: a file path (str or Path); a list of file names (str items that all look like file names:
    `["data/train.txt"]`); or an iterable of texts (str) and file paths (Path), where a str that looks like a
    file name stays text and a warning says so. At most `sample_chars` characters are used. Settings are TokenizerConfig fields (keywords override `config`).
    """
    import sentencepiece as spm
    from tqdm.auto import tqdm

    cfg = resolve_settings(config, **settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spm_train_") as tmp:
        text_file = Path(tmp) / "train.txt"
        chars = lines = 0
        misses: list[str] = []
        with open(text_file, "w", encoding="utf-8") as fh, \
                tqdm(desc="reading training text", unit="char", unit_scale=True, disable=not progress) as bar:
            for text in input_texts(inputs, misses):
                for line in document_lines(text, cfg.max_sentence_length):
                    line = line[: cfg.sample_chars - chars]
                    fh.write(line + "\n")
                    chars += len(line)
                    lines += 1
                    bar.update(len(line))
                    if chars >= cfg.sample_chars:
                        break
                if chars >= cfg.sample_chars:
                    break
        if misses:
            names = ", ".join(repr(m) for m in misses[:3]) + (f" and {len(misses) - 3} more" if len(misses) > 3 else "")
            warnings.warn(f"{len(misses)} training text(s) look like file names and were trained on as text: {names}; "
                          "pass Path(name) to read a file", stacklevel=2)
        if chars == 0:
            raise TokenizerError("no training text: the inputs gave no non-empty line (check the sources, "
                                 "the mixture, or the files passed)")
        args = _trainer_args(cfg)
        try:
            spm.SentencePieceTrainer.train(input=str(text_file), model_prefix=str(Path(tmp) / "spm"),
                                           minloglevel=0 if verbose else 2, **args)
        except RuntimeError as err:
            raise _explain_training_error(err, cfg, chars, lines) from None
        model_bytes = _finalize_model((Path(tmp) / SPM_FILE).read_bytes())
    (out / SPM_FILE).write_bytes(model_bytes)
    return export_hf(out, cfg)


def _explain_training_error(err: RuntimeError, cfg: TokenizerConfig, chars: int, lines: int) -> TokenizerError:
    """Turn SentencePiece's internal errors into a message that says what to change."""
    found = VOCAB_TOO_HIGH.search(str(err))
    if found:
        limit = int(found.group(2))
        return TokenizerError(f"vocab_size {cfg.vocab_size} is larger than {chars:,} characters in {lines:,} lines "
                              f"of training text support: use tokenizer.vocab_size <= {limit} "
                              f"(for example {limit}), or give more text (tokenizer.sample_chars)")
    found = _TOO_SMALL.search(str(err))
    if found:
        need = int(found.group(2))
        return TokenizerError(f"vocab_size {cfg.vocab_size} is smaller than the {need} pieces the characters of the "
                              f"training text need at character_coverage {cfg.character_coverage}: use "
                              f"tokenizer.vocab_size >= {need + 100} (for example {need + 100}), or lower "
                              "tokenizer.character_coverage so that rare characters fall back to bytes")
    return TokenizerError(f"SentencePiece training failed on {chars:,} characters in {lines:,} lines: {err}")


def _finalize_model(model_bytes: bytes) -> bytes:
    """Round piece scores (see SCORE_STEP) and drop the temporary paths, so equal training gives an equal hash."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model_bytes)
    del proto.trainer_spec.input[:]
    proto.trainer_spec.model_prefix = ""
    for piece in proto.pieces:
        if piece.type == NORMAL:
            piece.score = round(piece.score / SCORE_STEP) * SCORE_STEP
    return proto.SerializeToString()
