"""The Hugging Face twin of a SentencePiece model (export, exact by construction), loading, the hash, statistics.

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
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import TokenizerConfig
from ..layout import SPM_FILE

SETTINGS_FILE = "nbhelpers_tokenizer.json"
SPECIAL_TOKENS = {"unk": (0, "<unk>"), "pad": (1, "<pad>"), "bos": (2, "<s>"), "eos": (3, "</s>")}
SCORE_STEP = 1 / 32  # piece scores are rounded to this so both libraries sum path scores exactly
UNMATCHABLE_SCORE = -1e6  # HF-side score of control and byte pieces: never chosen for text
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece piece types


class TokenizerError(ValueError):
    """Training or loading failed for a reason the user can fix; the message says how."""


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
