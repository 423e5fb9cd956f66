"""The tokenizer stage: sample training text, train SentencePiece, export an identical Hugging Face fast tokenizer.

Exactness. The Hugging Face tokenizer built here gives the same ids and the same decoded text as
SentencePiece on the same `spm.model`, because:
- normalization is NFKC followed by SentencePiece's own precompiled character map (the map alone, as
  `tokenizers` applies it per grapheme, misses composed sequences such as "か" + U+3099), then the same
  space handling: leading/trailing spaces dropped, runs of spaces collapsed, the "▁" dummy prefix;
- control and byte pieces (<unk> <pad> <s> </s> <0x00>..<0xFF>) are never matched against text by
  SentencePiece; `tokenizers` puts every piece in its matcher, so on the HF side they get a score so low
  that the Viterbi search never picks them (every ASCII character is a required piece, so a path
  around them always exists), and special tokens in text are split like any text (`split_special_tokens`);
- piece scores are rounded to multiples of 1/32 so that SentencePiece's float32 path sums and
  `tokenizers`' float64 path sums are both exact, and equal-score paths break ties the same way
  (exact up to roughly 50,000 tokens in one encode call);
- trailing spaces are stripped after escaping (a literal trailing "▁" goes too), and decoding strips
  every leading space, as SentencePiece does with remove_extra_whitespaces.
Known residue: combining marks that NFKC reorders (marks out of canonical order) or composes with the
output of a compatibility mapping (an accent after "ⅷ"), and U+0344, normalize differently; Japanese
text, including decomposed kana with combining (han)dakuten, is exact.

BOS/EOS: `add_bos`/`add_eos` (TokenizerConfig, default off) apply to both `load_sentencepiece()` and the
HF tokenizer; the corpus packer and the instruction collator add EOS by id themselves.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import random
import re
import string
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import NORMALIZATIONS as NORMALIZATIONS  # re-exported: declared with the field, in config.py
from .config import TokenizerConfig, check_section
from .layout import SPM_FILE as SPM_FILE
from .sources import BadUTF8, file_hint

SETTINGS_FILE = "nbhelpers_tokenizer.json"
SPECIAL_TOKENS = {"unk": (0, "<unk>"), "pad": (1, "<pad>"), "bos": (2, "<s>"), "eos": (3, "</s>")}
SCORE_STEP = 1 / 32  # piece scores are rounded to this so both libraries sum path scores exactly
UNMATCHABLE_SCORE = -1e6  # HF-side score of control and byte pieces: never chosen for text
REQUIRED_CHARS = "".join(c for c in string.printable if c.isprintable() and c != " ")  # ASCII 0x21-0x7E
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece piece types
VOCAB_TOO_HIGH = re.compile(r"Vocabulary size (?:is )?too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class TokenizerError(ValueError):
    """Training or loading failed for a reason the user can fix; the message says how."""


# ---------------------------------------------------------------- training text


def split_line(line: str, max_bytes: int) -> list[str]:
    """Cut a line into pieces of at most `max_bytes` UTF-8 bytes (SentencePiece drops longer lines)."""
    if len(line) * 4 <= max_bytes or len(line.encode("utf-8")) <= max_bytes:
        return [line]
    pieces, start, size = [], 0, 0
    for i, ch in enumerate(line):
        width = len(ch.encode("utf-8"))
        if size + width > max_bytes:
            pieces.append(line[start:i])
            start, size = i, 0
        size += width
    pieces.append(line[start:])
    return pieces


def document_lines(text: str, max_bytes: int) -> Iterator[str]:
    """The non-empty lines of a document, long ones split; SentencePiece trains on lines."""
    for line in text.split("\n"):
        line = line.strip()
        if line:
            yield from split_line(line, max_bytes)


def _file_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file; a bad byte raises BadUTF8 naming the file, line and byte offset."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below; the open error gets its own message
    except OSError as err:
        raise TokenizerError(f"{path}: cannot read the training file ({err.strerror or err})") from None
    with fh:
        offset = 0
        for lineno, raw in enumerate(fh, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise BadUTF8(f"{path}: not UTF-8 at byte offset {offset + err.start} "
                              f"(line {lineno}, {err.reason}){file_hint(path)}") from None
            offset += len(raw)


_FILE_SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".json", ".csv", ".tsv", ".gz", ".xml", ".html")


def _looks_like_a_file(item: str) -> bool:
    """One word naming an existing file, or ending like a text file's name."""
    if len(item) > 4096 or any(c.isspace() for c in item):
        return False
    if item.lower().endswith(_FILE_SUFFIXES):
        return True
    try:
        return Path(item).expanduser().is_file()
    except (OSError, ValueError, RuntimeError):  # too long for the filesystem, a NUL, "~nobody": text
        return False


def _input_texts(inputs: Any, misses: list[str] | None = None) -> Iterator[str]:
    """A path (str or PathLike) is one file; in an iterable, Path items are files and str items texts, except in a
    list or tuple whose every item is a str that looks like a file name: those are files. Other str items that
    look like file names are added to `misses` (the caller warns)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [Path(inputs)]
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(i, str) and _looks_like_a_file(i)
                                                              for i in inputs):
        inputs = [Path(i).expanduser() for i in inputs]  # ["data/train.txt"]: the caller means files
    for item in inputs:
        if isinstance(item, str) and misses is not None and _looks_like_a_file(item):
            misses.append(item)
        if isinstance(item, os.PathLike):
            yield from _file_lines(Path(item))
        elif isinstance(item, str):
            yield item
        else:
            raise TokenizerError(f"training input must be text (str) or a file path (Path), got {type(item).__name__}")


@dataclass
class TextSample:
    """A shuffled training sample written to `path`, plus held-out documents for the statistics."""

    path: Path
    lines: int = 0
    chars: int = 0
    documents: int = 0
    heldout: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what differs from what was asked (also warned)

    @property
    def heldout_chars(self) -> int:
        return sum(len(t) for t in self.heldout)


def sample_text(documents: Iterable[str], path: str | os.PathLike, sample_chars: int, heldout_chars: int = 0,
                seed: int = 0, max_sentence_length: int = 16384, buffer_lines: int = 100_000,
                heldout_every: int = 20, progress: bool = True, stall_docs: int = 1000) -> TextSample:
    """Write up to `sample_chars` characters of lines from `documents`, shuffled in a bounded buffer, to `path`.

    About one document in `heldout_every` goes, whole, to the held-out list (until `heldout_chars`) and
    none of its text is trained on. Memory stays bounded by `buffer_lines` lines plus the held-out text.

    A repeating source with little text could bring back only held-out documents, forever: after a run of
    `stall_docs` (or four times the held-out count) such documents, half the held-out documents (at least one)
    go back to training and nothing more is held out. That, and a stream that ends before `sample_chars`, is
    said in `notes` and warned.
    """
    from tqdm.auto import tqdm

    if sample_chars <= 0:
        raise TokenizerError(f"sample_chars must be positive, got {sample_chars}")
    rng = random.Random(seed)
    sample = TextSample(Path(path))
    sample.path.parent.mkdir(parents=True, exist_ok=True)
    buffer: list[str] = []
    held = 0
    bar = tqdm(total=sample_chars, unit="char", unit_scale=True, desc="sampling text", disable=not progress)
    with open(sample.path, "w", encoding="utf-8") as out:

        def emit(line: str) -> None:
            out.write(line + "\n")
            sample.lines += 1

        held_keys: list[bytes] = []  # a repeating source (a new epoch) must not bring held-out text back
        held_set: set[bytes] = set()
        streak = 0  # documents in a row that were already held out
        for doc in documents:
            key = hashlib.blake2b(doc.encode("utf-8"), digest_size=16).digest() if heldout_chars else b""
            if key in held_set:
                streak += 1
                if streak > max(stall_docs, 4 * len(held_keys)):  # every distinct document is held out
                    heldout_chars = held = _give_back(sample, held_keys, held_set)
                    streak = 0
                continue
            streak = 0
            if held < heldout_chars and rng.randrange(heldout_every) == 0:
                sample.heldout.append(str(doc))
                held_keys.append(key)
                held_set.add(key)
                held += len(doc)
                continue
            sample.documents += 1
            for line in document_lines(doc, max_sentence_length):
                line = line[: sample_chars - sample.chars]
                sample.chars += len(line)
                bar.update(len(line))
                if len(buffer) < buffer_lines:
                    buffer.append(line)
                else:  # emit a random buffered line and keep the new one: a bounded shuffle
                    j = rng.randrange(buffer_lines)
                    emit(buffer[j])
                    buffer[j] = line
                if sample.chars >= sample_chars:
                    break
            if sample.chars >= sample_chars:
                break
        rng.shuffle(buffer)
        for line in buffer:
            emit(line)
    bar.close()
    if sample.chars < sample_chars:
        _note(sample, f"the sources ran out after {sample.chars:,} characters of training text ({sample.documents:,} "
                      f"documents; tokenizer.sample_chars asks for {sample_chars:,})")
    return sample


def _note(sample: TextSample, text: str) -> None:
    sample.notes.append(text)
    warnings.warn(text, stacklevel=3)


def _give_back(sample: TextSample, keys: list[bytes], held: set[bytes]) -> int:
    """Move the later half of the held-out documents (at least one) back to training; return the held-out chars."""
    n = len(sample.heldout)
    keep = n // 2
    back = sample.heldout[keep:]
    for key in keys[keep:]:
        held.discard(key)
    del sample.heldout[keep:], keys[keep:]
    kept = sum(len(t) for t in sample.heldout)
    _note(sample, f"the sources hold only {n} distinct document(s) that the held-out sample had taken, and a "
                  f"repeating source brought back nothing else: {len(back)} went back to training "
                  f"({sum(map(len, back)):,} characters); the held-out sample is {keep} document(s), {kept:,} "
                  "characters (tokenizer.heldout_chars asks for more). Add text to the mixture for a fuller one")
    return kept


# ---------------------------------------------------------------- settings


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
    check_section(config, TokenizerError)  # config.py's rules: model type, normalization, vocabulary range
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
        max_sentence_length=cfg.max_sentence_length, num_threads=cfg.num_threads or os.cpu_count() or 1,
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
            for text in _input_texts(inputs, misses):
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


# ---------------------------------------------------------------- Hugging Face export


def build_hf_backend(model_bytes: bytes, add_bos: bool = False, add_eos: bool = False):
    """A `tokenizers.Tokenizer` that encodes and decodes exactly as SentencePiece does with this model."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    proto = pb.ModelProto()
    proto.ParseFromString(model_bytes)
    spec = proto.normalizer_spec
    if proto.trainer_spec.model_type != pb.TrainerSpec.UNIGRAM:
        raise TokenizerError("only unigram SentencePiece models are exported")
    vocab = [(p.piece, p.score if p.type == NORMAL else UNMATCHABLE_SCORE) for p in proto.pieces]
    backend = Tokenizer(models.Unigram(vocab, unk_id=proto.trainer_spec.unk_id,
                                       byte_fallback=proto.trainer_spec.byte_fallback))
    steps = []
    if "nfkc" in spec.name:
        steps.append(normalizers.NFKC())  # composes sequences the per-grapheme charsmap lookup misses
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:  # only " " counts, as in SentencePiece: tabs and newlines stay
        steps += [normalizers.Replace(Regex(r"\A +"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.remove_extra_whitespaces:
        # SentencePiece strips trailing spaces after escaping them, so a literal trailing "▁" goes too
        steps.append(normalizers.Replace(Regex(r"▁+\z" if spec.escape_whitespaces else r" +\z"), ""))
    if spec.add_dummy_prefix:
        # Metaspace leaves text that already starts with a literal "▁" alone; SentencePiece prefixes it anyway
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
    backend.normalizer = normalizers.Sequence(steps)
    if spec.add_dummy_prefix:
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    steps = [decoders.Replace("▁", " ")]
    if proto.trainer_spec.byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if spec.add_dummy_prefix:
        # SentencePiece drops all leading spaces of the decoded text when remove_extra_whitespaces is on
        steps.append(decoders.Strip(content=" ", left=1 << 20 if spec.remove_extra_whitespaces else 1, right=0))
    backend.decoder = decoders.Sequence(steps)
    backend.post_processor = _post_processor(add_bos, add_eos)
    return backend


def _post_processor(add_bos: bool, add_eos: bool):
    """TemplateProcessing adding <s> and/or </s> around each sequence, as configured."""
    from tokenizers import processors

    bos, eos = SPECIAL_TOKENS["bos"], SPECIAL_TOKENS["eos"]
    single = f"{bos[1] + ':0 ' if add_bos else ''}$A:0{' ' + eos[1] + ':0' if add_eos else ''}"
    pair = f"{single}{' ' + bos[1] + ':1' if add_bos else ''} $B:1{' ' + eos[1] + ':1' if add_eos else ''}"
    specials = [(t, i) for flag, (i, t) in ((add_bos, bos), (add_eos, eos)) if flag]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def export_hf(out_dir: str | os.PathLike, config: TokenizerConfig | None = None):
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json next to spm.model; return the tokenizer."""
    from transformers import PreTrainedTokenizerFast

    cfg = config or TokenizerConfig()
    out = Path(out_dir)
    backend = build_hf_backend((out / SPM_FILE).read_bytes(), cfg.add_bos, cfg.add_eos)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **{f"{k}_token": t for k, (_, t) in SPECIAL_TOKENS.items()},
        add_bos_token=cfg.add_bos,
        add_eos_token=cfg.add_eos,
        split_special_tokens=True,  # "<s>" typed in text is text, as in SentencePiece
        clean_up_tokenization_spaces=False,  # decoded text must equal SentencePiece's
        model_max_length=1 << 30,  # the model's context is set by the corpus block length, not here
    )
    tok.save_pretrained(out)
    # the generic class name loads under transformers 4.x and 5.x alike
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_cfg.update(tokenizer_class="PreTrainedTokenizerFast", add_bos_token=cfg.add_bos, add_eos_token=cfg.add_eos)
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    # transformers 5 no longer writes this file; older versions (and other tools) still read it
    special_map = {f"{k}_token": t for k, (_, t) in SPECIAL_TOKENS.items()}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2), encoding="utf-8")
    settings = {"add_bos": cfg.add_bos, "add_eos": cfg.add_eos, "sha256": tokenizer_hash(out),
                "config": dataclasses.asdict(cfg)}
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return tok


# ---------------------------------------------------------------- loading


def _require(out_dir: Path) -> Path:
    path = Path(out_dir) / SPM_FILE
    if not path.exists():
        raise TokenizerError(f"{path} not found: train the tokenizer first (notebooks/01_tokenizer)")
    return path


def _bos_eos(out_dir: Path) -> tuple[bool, bool]:
    path = Path(out_dir) / SETTINGS_FILE
    if not path.exists():
        return False, False
    data = json.loads(path.read_text(encoding="utf-8"))
    return bool(data.get("add_bos")), bool(data.get("add_eos"))


def load_sentencepiece(out_dir: str | os.PathLike):
    """The fast SentencePiece processor of a trained tokenizer, with the saved BOS/EOS choice."""
    import sentencepiece as spm

    path = _require(Path(out_dir))
    add_bos, add_eos = _bos_eos(Path(out_dir))
    return spm.SentencePieceProcessor(model_file=str(path), add_bos=add_bos, add_eos=add_eos)


def load_hf(out_dir: str | os.PathLike):
    """The Hugging Face tokenizer of a trained tokenizer (what AutoTokenizer.from_pretrained gives)."""
    from transformers import AutoTokenizer

    _require(Path(out_dir))
    return AutoTokenizer.from_pretrained(str(out_dir))


def tokenizer_hash(out_dir: str | os.PathLike) -> str:
    """sha256 of spm.model: the corpus manifest records it to tie token ids to this tokenizer."""
    return hashlib.sha256(_require(Path(out_dir)).read_bytes()).hexdigest()


# ---------------------------------------------------------------- statistics


def tokenizer_stats(sp: Any, texts: Iterable[str]) -> dict[str, Any]:
    """Characters per token, byte-fallback and unknown rates, and token lengths on `texts` (held-out text)."""
    texts = [t for t in texts if t]
    ids_list = sp.encode(texts, add_bos=False, add_eos=False)
    tokens = sum(len(ids) for ids in ids_list)
    chars = sum(len(t) for t in texts)
    byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i)}
    unk = sp.unk_id()
    counts: Counter = Counter(i for ids in ids_list for i in ids)
    lengths: Counter = Counter()  # token length in characters ("▁" counts as one) -> occurrences; 0 = byte piece
    for i, n in counts.items():
        lengths[0 if i in byte_ids else len(sp.id_to_piece(i))] += n
    vocab_lengths: Counter = Counter(
        0 if i in byte_ids else len(sp.id_to_piece(i))
        for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))
    )
    return {
        "vocab_size": sp.get_piece_size(),
        "texts": len(texts),
        "chars": chars,
        "tokens": tokens,
        "chars_per_token": chars / tokens if tokens else 0.0,
        "byte_fallback_rate": sum(counts[i] for i in byte_ids) / tokens if tokens else 0.0,
        "unk_rate": counts[unk] / tokens if tokens else 0.0,
        "vocab_used": len(counts) / sp.get_piece_size(),
        "token_lengths": dict(sorted(lengths.items())),
        "vocab_lengths": dict(sorted(vocab_lengths.items())),
    }


def compare(sp: Any, hf: Any, texts: Iterable[str]) -> list[dict[str, Any]]:
    """Per text: both libraries' ids and decoded text, and whether they agree (decode skips special tokens)."""
    rows = []
    for text in texts:
        sp_ids = sp.encode(text)
        hf_ids = hf.encode(text)
        sp_text = sp.decode(sp_ids)
        hf_text = hf.decode(hf_ids, skip_special_tokens=True)
        rows.append({"text": text, "pieces": " ".join(sp.id_to_piece(sp_ids)), "tokens": len(sp_ids),
                     "same_ids": sp_ids == hf_ids, "same_text": sp_text == hf_text, "decoded": sp_text})
    return rows
