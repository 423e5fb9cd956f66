"""The corpus stage (02): token budget, validation shard, the training stream's start, and parts built ahead.

Layout of `corpus/` (written by 02, read by every later notebook; small, so it is kept with the run):

    manifest.json    written last, atomically (it is what makes a corpus complete): settings, budget, the
                     validation shard, the training stream's start position, and the cleaning and mixture
                     report of the validation shard (the first `val_blocks` blocks of the stream: a sample);
                     sha256 checksums of itself and of the two files below, verified when read (reader.py)
    val-<fp>.bin     the validation shard (uint16, `block_len` tokens per block)
    dedup-<fp>.u64   the duplicate memory's hashes after the validation shard (the stream goes on with it)

The training stream itself is not built here: 03 produces it while it trains (`producer.py`), in parts of
`corpus.part_tokens`. `build_parts` makes the first parts ahead, into the same parts folder 03 reads (for
offline or CPU runs, where scratch is the run directory). `<fp>` fingerprints the stream settings and the
tokenizer: a build with other settings writes new files next to the old ones and switches the manifest only
when they are complete, so an interrupted build never damages the previous corpus. Shards are written as
`*.tmp` and renamed when complete; stray files of other fingerprints are removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CorpusConfig, RunConfig, model_parameters
from ..files import atomic_file, atomic_write_text
from ..layout import SPM_FILE, TOKEN_DTYPE
from ..tokenizer import tokenizer_hash
from .mixing import Mixer, validate_mixture
from .packing import check_vocab
from .parts import read_complete, stream_state, write_shard
from .reader import MANIFEST, SEAL, CorpusCorrupt, check_file, corpus_file, file_sha256, manifest_sha256, seal_manifest

FORMAT = 3  # 3: the training stream is produced while training, in parts; the manifest holds its start
# Settings that change the token stream; workers, budgets and parts_ahead do not.
STREAM_FIELDS = ("mixture", "symbol_level", "min_chars", "dedup", "block_len", "part_tokens", "val_blocks", "seed",
                 "on_bad_utf8", "shuffle_buffer", "on_exhausted")


class CorpusBuildError(RuntimeError):
    """A corpus that cannot be built as configured."""


@dataclass(frozen=True)
class TokenBudget:
    """Tokens to train on in all, as blocks, and as parts of the stream."""

    total: int
    blocks: int  # total // block_len: what the training steps are counted from
    part_blocks: int  # blocks in one part of the stream
    parts: int  # parts the budget reads (the last one partly)
    rule: str  # explicit | chinchilla
    model_params: int | None
    tokens_per_param: float


def part_blocks(corpus: CorpusConfig) -> int:
    """Blocks in one part of the training stream (corpus.part_tokens, whole blocks)."""
    if corpus.block_len < 2:
        raise CorpusBuildError(f"corpus.block_len must be at least 2, got {corpus.block_len}")
    if corpus.part_tokens < corpus.block_len:
        raise CorpusBuildError(f"corpus.part_tokens={corpus.part_tokens} is smaller than one block "
                               f"(corpus.block_len={corpus.block_len})")
    return corpus.part_tokens // corpus.block_len


def token_budget(cfg: RunConfig | CorpusConfig, vocab_size: int | None = None, n_params: int | None = None) -> TokenBudget:
    """The corpus token budget: explicit `corpus.token_budget`, or Chinchilla (tokens_per_param x parameters)."""
    corpus = cfg.corpus if isinstance(cfg, RunConfig) else cfg
    per_part = part_blocks(corpus)
    if corpus.token_budget < 0 or corpus.tokens_per_param <= 0:
        raise CorpusBuildError("corpus.token_budget must be >= 0 (0 = Chinchilla) and corpus.tokens_per_param > 0")
    if corpus.token_budget:
        total, rule = corpus.token_budget, "explicit"
    else:
        if n_params is None:
            if not isinstance(cfg, RunConfig) or vocab_size is None:
                raise CorpusBuildError("corpus.token_budget=0 (Chinchilla) needs the model: pass the RunConfig and "
                                       "the tokenizer's vocab_size, or n_params")
            n_params = model_parameters(cfg.model, vocab_size)["total"]
        total, rule = int(corpus.tokens_per_param * n_params), "chinchilla"
    blocks = total // corpus.block_len
    return TokenBudget(total, blocks, per_part, max(1, math.ceil(blocks / per_part)), rule, n_params,
                       corpus.tokens_per_param)


def fingerprint(corpus: CorpusConfig, tok_hash: str, cleaning: bool = True) -> str:
    """Hash of everything that changes the token stream."""
    data = {k: getattr(corpus, k) for k in STREAM_FIELDS}
    data["tokenizer"] = tok_hash
    data["cleaning"] = cleaning
    data["format"] = FORMAT
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def read_manifest(out: Path) -> dict | None:
    """The corpus folder's manifest, or None when there is none (or a broken one: an incomplete corpus)."""
    return read_complete(Path(out) / MANIFEST)


def _write_manifest(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Seal the manifest with its sha256 and write it atomically; returns what was written."""
    manifest = seal_manifest(manifest)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def _record_checksums(out: Path, manifest: dict[str, Any]) -> bool:
    """Give a manifest of an earlier nbhelpers the checksums of its files as they are now; True when it added any."""
    added = False
    if SEAL not in manifest["val"]:
        manifest["val"][SEAL] = file_sha256(corpus_file(out, manifest["val"]["file"], "val.file"))
        added = True
    start = manifest["train_start"]
    if "dedup_sha256" not in start:
        start["dedup_sha256"] = file_sha256(corpus_file(out, start["dedup_file"], "train_start.dedup_file"))
        added = True
    return added or SEAL not in manifest


def _intact(out: Path, manifest: dict[str, Any]) -> bool:
    """Whether a built corpus still matches its checksums (one that does not is built again, with a warning)."""
    try:
        if manifest.get(SEAL) is not None and manifest[SEAL] != manifest_sha256(manifest):
            raise CorpusCorrupt(f"{out / MANIFEST}: its content differs from the sha256 recorded when it was written")
        check_file(corpus_file(out, manifest["val"]["file"], "val.file"), manifest["val"].get(SEAL), "validation shard")
        start = manifest["train_start"]
        check_file(corpus_file(out, start["dedup_file"], "train_start.dedup_file"), start.get("dedup_sha256"),
                   "duplicate memory at the stream's start")
    except (CorpusCorrupt, OSError) as err:
        warnings.warn(f"{err}; building the corpus again", stacklevel=3)
        return False
    return True


def check_val_budget(corpus: CorpusConfig, budget: TokenBudget) -> None:
    """The validation shard may hold at most the training budget's tokens: a bigger one is a setting's typo."""
    val_tokens = corpus.val_blocks * corpus.block_len
    if budget.total and val_tokens > budget.total:
        raise CorpusBuildError(
            f"corpus.val_blocks={corpus.val_blocks} makes a validation shard of {val_tokens:,} tokens "
            f"({val_tokens * 2 / 1e9:.2f} GB), more than the training budget of {budget.total:,} tokens "
            f"({budget.rule}); use corpus.val_blocks <= {max(1, budget.total // corpus.block_len):,}")


def _cleanup(out: Path, manifest: dict) -> None:
    """Remove shards, duplicate logs and temporaries of other fingerprints."""
    keep = {MANIFEST, manifest["val"]["file"], manifest["train_start"]["dedup_file"]}
    for f in out.iterdir():
        if f.is_file() and f.name not in keep and (f.name.startswith(("val-", "train-", "dedup-")) or f.suffix == ".tmp"):
            f.unlink(missing_ok=True)


def _tokenizer(tokenizer_dir: str | os.PathLike) -> tuple[Path, int, int]:
    """(spm.model, vocabulary, EOS id) of a trained tokenizer; named errors when it is missing or unusable."""
    model_file = Path(tokenizer_dir) / SPM_FILE
    if not model_file.exists():
        raise FileNotFoundError(f"{model_file} not found; train the tokenizer first (notebooks/01_tokenizer)")
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    vocab = sp.get_piece_size()
    check_vocab(vocab)
    if sp.eos_id() < 0:
        raise CorpusBuildError(f"{model_file}: the tokenizer has no EOS piece; documents are joined with EOS")
    return model_file, vocab, sp.eos_id()


def build_corpus(cfg: RunConfig | CorpusConfig, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                 workers: int | None = None, progress: bool = True, n_params: int | None = None,
                 cleaning: bool = True) -> dict[str, Any]:
    """Build the validation shard and the training stream's start position (once); returns the manifest.

    A corpus already built with the same settings and tokenizer is kept (its budget is brought up to date: a
    new model size changes the budget, not the stream). `cleaning=False` packs sources that hold
    already-cleaned text as they are (minimum length and dedup apply).
    """
    from tqdm.auto import tqdm

    corpus = cfg.corpus if isinstance(cfg, RunConfig) else cfg
    validate_mixture(corpus.mixture)  # unknown names and bad weights fail before anything else
    model_file, vocab, eos = _tokenizer(tokenizer_dir)
    tok_hash = tokenizer_hash(tokenizer_dir)
    budget = token_budget(cfg, vocab, n_params)
    fp = fingerprint(corpus, tok_hash, cleaning)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = read_manifest(out)
    if old and old.get("fingerprint") == fp and old.get("format") == FORMAT and _intact(out, old):
        changed = _record_checksums(out, old)
        if old["budget"] != dataclasses.asdict(budget):
            old["budget"] = dataclasses.asdict(budget)
            changed = True
        if changed:
            old = _write_manifest(out, old)
        _cleanup(out, old)
        return old
    check_val_budget(corpus, budget)
    # a killed build's temporaries (a typo'd size: gigabytes); files.atomic_file names them .NAME.XXXX.tmp
    for stale in [p for pattern in ("val-*.tmp", "dedup-*.tmp", ".val-*.tmp", ".dedup-*.tmp") for p in out.glob(pattern)]:
        stale.unlink(missing_ok=True)

    started = time.time()
    with Mixer(corpus, model_file=str(model_file), workers=workers, cleaning=cleaning) as mixer:
        val_tokens = corpus.val_blocks * corpus.block_len
        with tqdm(total=val_tokens, desc="corpus val", unit="tok", unit_scale=True, disable=not progress) as bar:
            w, filled, n = write_shard(out / f"val-{fp}.bin", corpus.block_len, corpus.val_blocks, mixer, bar)
        if not filled:
            raise CorpusBuildError(f"the sources ran out before the validation shard was full ({n} of "
                                   f"{corpus.val_blocks} blocks); lower corpus.val_blocks or add text")
        start = stream_state(mixer)
        dedup_file = f"dedup-{fp}.u64"
        with atomic_file(out / dedup_file) as fh:
            (mixer.dedup.array() if mixer.dedup is not None else np.zeros(0, np.uint64)).tofile(fh)
        val_sha, dedup_sha = file_sha256(out / f"val-{fp}.bin"), file_sha256(out / dedup_file)  # once, when written
        requested = validate_mixture(corpus.mixture)
        manifest = {
            "format": FORMAT, "fingerprint": fp, "block_len": corpus.block_len, "dtype": np.dtype(TOKEN_DTYPE).name,
            "vocab_size": vocab, "eos_id": eos, "tokenizer_hash": tok_hash, "cleaning": cleaning,
            "budget": dataclasses.asdict(budget), "config": dataclasses.asdict(corpus),
            "val": {"file": f"val-{fp}.bin", "blocks": n, "tokens": n * corpus.block_len, "documents": w.documents,
                    "tail_tokens_dropped": w.tail_dropped, "tokens_by_source": dict(w.tokens_by_source),
                    SEAL: val_sha},
            "train_start": {**start, "dedup_file": dedup_file, "dedup_sha256": dedup_sha},
            "mixture": {
                "method": "quota interleave: the next document comes from the source furthest below its token share",
                "on_exhausted": corpus.on_exhausted, "requested": requested,
                "realised": realised_shares([{"tokens_by_source": w.tokens_by_source}], requested),
                "sample": "the validation shard (the first val_blocks blocks of the stream)",
            },
            "sources": source_report(start["sources"], requested),
            "end_rule": "each shard ends at its last full block; the rest of the document crossing it is dropped",
            "build_seconds": round(time.time() - started, 2),
        }
    manifest = _write_manifest(out, manifest)
    _cleanup(out, manifest)
    return manifest


def source_report(state: dict[str, Any], requested: dict[str, float]) -> dict[str, Any]:
    """Per source, from a stream state: weight, tokens given, documents and characters kept, epochs, cleaning."""
    return {name: {"weight": requested[name], "tokens": st["units"], "documents": st["stats"]["documents_out"],
                   "characters": st["stats"]["characters_out"], "epochs": st["epoch"] + 1, "cleaning": st["stats"],
                   "skipped_files": st["skipped_files"]}
            for name, st in state.items()}


def realised_shares(shards: list[dict[str, Any]], requested: dict[str, float]) -> dict[str, float]:
    """Each source's share of the tokens of some shards (the validation shard, parts: their `tokens_by_source`)."""
    by_source: dict[str, int] = {}
    for shard in shards:
        for name, n in shard["tokens_by_source"].items():
            by_source[name] = by_source.get(name, 0) + n
    total = max(1, sum(by_source.values()))
    return {name: by_source.get(name, 0) / total for name in requested}


def train_start(corpus_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """(manifest, the training stream's start state, the duplicate memory's hashes at that start) of a built corpus."""
    from .reader import load_corpus

    manifest = load_corpus(corpus_dir).manifest
    start = manifest["train_start"]
    dedup_file = corpus_file(Path(corpus_dir), start["dedup_file"], "train_start.dedup_file")
    check_file(dedup_file, start.get("dedup_sha256"), "duplicate memory at the stream's start")
    hashes = np.fromfile(dedup_file, dtype=np.uint64)
    if len(hashes) != start["dedup"]:
        raise CorpusBuildError(f"{Path(corpus_dir) / start['dedup_file']}: {len(hashes)} hashes, the manifest says "
                               f"{start['dedup']}; rebuild the corpus (notebooks/02_corpus)")
    return manifest, {"sources": start["sources"], "dedup": start["dedup"]}, hashes
