"""Build the corpus: token budget, validation shard, session-sized train parts, manifest; resumable and atomic.

Layout of `corpus/`: `manifest.json` (written last, atomically: it is what makes a corpus complete),
`val-<fp>.bin`, `train-<fp>-<part>.bin` (uint16, `block_len` tokens per block) and `dedup-<fp>-<part>.npy`
(the duplicate hashes so far, so the next part stays duplicate-free). `<fp>` fingerprints the corpus
settings and the tokenizer: a build with other settings writes new files next to the old ones and
switches the manifest only when its first part is complete, so an interrupted build never damages the
previous corpus. Shards are written as `*.tmp` and renamed when complete; stray files are removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CorpusConfig, RunConfig
from ..files import atomic_write_text, read_json
from ..tokenizer import tokenizer_hash
from .mixing import Mixer, validate_mixture
from .packing import BlockWriter, check_vocab
from .reader import MANIFEST

FORMAT = 2  # 2: plain-text files and generated sources are read in parts (other order, resume state)
# Settings that change the token stream; workers, budgets and build_tokens do not (parts are session-sized).
STREAM_FIELDS = ("mixture", "symbol_level", "min_chars", "dedup", "block_len", "session_tokens", "val_blocks",
                 "seed", "on_bad_utf8", "shuffle_buffer", "on_exhausted")


class CorpusBuildError(RuntimeError):
    """A corpus that cannot be built as configured."""


@dataclass(frozen=True)
class TokenBudget:
    """Tokens to train on in all, and the per-session part size."""

    total: int
    per_session: int
    parts: int
    rule: str  # explicit | chinchilla
    model_params: int | None
    tokens_per_param: float

    def part_tokens(self, k: int, block_len: int) -> int:
        """Tokens of part k (a multiple of block_len; the last part holds the remainder)."""
        left = self.total - k * self.per_session
        return max(0, min(self.per_session, left)) // block_len * block_len


def token_budget(cfg: RunConfig | CorpusConfig, vocab_size: int | None = None, n_params: int | None = None) -> TokenBudget:
    """The corpus token budget: explicit `corpus.token_budget`, or Chinchilla (tokens_per_param x parameters)."""
    corpus = cfg.corpus if isinstance(cfg, RunConfig) else cfg
    if corpus.session_tokens < corpus.block_len:
        raise CorpusBuildError(f"corpus.session_tokens={corpus.session_tokens} is smaller than one block "
                               f"(corpus.block_len={corpus.block_len})")
    if corpus.token_budget < 0 or corpus.tokens_per_param <= 0:
        raise CorpusBuildError("corpus.token_budget must be >= 0 (0 = Chinchilla) and corpus.tokens_per_param > 0")
    if corpus.token_budget:
        total, rule = corpus.token_budget, "explicit"
    else:
        if n_params is None:
            if not isinstance(cfg, RunConfig) or vocab_size is None:
                raise CorpusBuildError("corpus.token_budget=0 (Chinchilla) needs the model: pass the RunConfig and "
                                       "the tokenizer's vocab_size, or n_params")
            from ..model import count_parameters

            n_params = count_parameters(cfg.model, vocab_size)
        total, rule = int(corpus.tokens_per_param * n_params), "chinchilla"
    parts = max(1, math.ceil(total / corpus.session_tokens))
    return TokenBudget(total, corpus.session_tokens, parts, rule, n_params, corpus.tokens_per_param)


def fingerprint(corpus: CorpusConfig, tok_hash: str, cleaning: bool = True) -> str:
    """Hash of everything that changes the token stream."""
    data = {k: getattr(corpus, k) for k in STREAM_FIELDS}
    data["tokenizer"] = tok_hash
    data["cleaning"] = cleaning
    data["format"] = FORMAT
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        return read_json(path)
    except ValueError:
        return None  # a broken manifest is an incomplete corpus: rebuild


def _fill(writer: BlockWriter, mixer: Mixer, bar: Any) -> bool:
    """Pack runs of documents until the shard is full; False when the stream ended first."""
    add, take = writer.add, mixer.take
    pending = 0  # tokens not yet shown: the bar moves in steps of 64k, not per run
    while not writer.full:
        got = take(writer.target - writer.tokens)  # the run's last document is the one that fills the shard
        if got is None:
            bar.update(pending)
            return False
        name, tokens, docs = got
        pending += add(tokens, name, docs)
        if pending >= 65536:
            bar.update(pending)
            pending = 0
    bar.update(pending)
    return True


def _write_shard(path: Path, block_len: int, blocks: int, mixer: Mixer, bar: Any) -> tuple[BlockWriter, bool, int]:
    """Write one shard atomically (tmp + rename); returns the writer, whether it filled, and its block count."""
    tmp = path.with_name(path.name + ".tmp")
    writer = BlockWriter(tmp, block_len, blocks)
    try:
        filled = _fill(writer, mixer, bar)
        n = writer.finish()
    except BaseException:
        writer.abort()
        raise
    os.replace(tmp, path)
    return writer, filled, n


def _cleanup(out: Path, manifest: dict) -> None:
    """Remove shards, dedup files and temporaries the manifest does not reference."""
    keep = {MANIFEST, manifest["val"]["file"], *(p["file"] for p in manifest["parts"])}
    if manifest.get("state", {}).get("dedup_file"):
        keep.add(manifest["state"]["dedup_file"])
    for f in out.iterdir():
        if f.is_file() and f.name not in keep and (f.name.startswith(("val-", "train-", "dedup-")) or f.suffix == ".tmp"):
            f.unlink(missing_ok=True)


def build_corpus(cfg: RunConfig | CorpusConfig, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                 parts: int | None = None, workers: int | None = None, progress: bool = True,
                 n_params: int | None = None, cleaning: bool = True) -> dict[str, Any]:
    """Build (or extend) the corpus so that `parts` session parts exist; returns the manifest.

    `parts` None means ceil(corpus.build_tokens / corpus.session_tokens), at least 1, at most the budget's
    parts. Built parts are kept: calling again with a larger `parts` appends the next ones (next session).
    `cleaning=False` packs sources that hold already-cleaned text as they are (minimum length and dedup apply).
    """
    from tqdm.auto import tqdm

    corpus = cfg.corpus if isinstance(cfg, RunConfig) else cfg
    validate_mixture(corpus.mixture)  # unknown names and bad weights fail before anything else
    if corpus.block_len < 2:
        raise CorpusBuildError(f"corpus.block_len must be at least 2, got {corpus.block_len}")
    model_file = Path(tokenizer_dir) / "spm.model"
    if not model_file.exists():
        raise FileNotFoundError(f"{model_file} not found; train the tokenizer first (notebooks/01_tokenizer)")
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    vocab = sp.get_piece_size()
    check_vocab(vocab)
    eos = sp.eos_id()
    if eos < 0:
        raise CorpusBuildError(f"{model_file}: the tokenizer has no EOS piece; documents are joined with EOS")
    tok_hash = tokenizer_hash(tokenizer_dir)
    budget = token_budget(cfg, vocab, n_params)
    fp = fingerprint(corpus, tok_hash, cleaning)
    want = parts if parts is not None else max(1, math.ceil(corpus.build_tokens / corpus.session_tokens))
    if want < 1:
        raise ValueError(f"parts must be >= 1, got {want}")
    target = min(want, budget.parts)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(out)
    manifest = old if old and old.get("fingerprint") == fp and old.get("format") == FORMAT else None
    if manifest is not None:
        manifest["budget"] = dataclasses.asdict(budget)  # a new model size changes the budget, not the parts
        if len(manifest["parts"]) >= target or manifest.get("stopped"):
            _cleanup(out, manifest)
            return manifest

    state = manifest["state"] if manifest else {}
    dedup = np.load(out / state["dedup_file"]) if state.get("dedup_file") else None
    started = time.time()
    with Mixer(corpus, model_file=str(model_file), workers=workers, state=state.get("sources"),
               dedup_hashes=dedup, cleaning=cleaning) as mixer:
        if manifest is None:
            val_tokens = corpus.val_blocks * corpus.block_len
            with tqdm(total=val_tokens, desc="corpus val", unit="tok", unit_scale=True, disable=not progress) as bar:
                w, filled, n = _write_shard(out / f"val-{fp}.bin", corpus.block_len, corpus.val_blocks, mixer, bar)
            if not filled:
                raise CorpusBuildError(f"the sources ran out before the validation shard was full ({n} of "
                                       f"{corpus.val_blocks} blocks); lower corpus.val_blocks or add text")
            manifest = {
                "format": FORMAT, "fingerprint": fp, "block_len": corpus.block_len, "dtype": "uint16",
                "vocab_size": vocab, "eos_id": eos, "tokenizer_hash": tok_hash,
                "budget": dataclasses.asdict(budget),
                "config": dataclasses.asdict(corpus),
                "val": {"file": f"val-{fp}.bin", "blocks": n, "tokens": n * corpus.block_len,
                        "documents": w.documents, "tail_tokens_dropped": w.tail_dropped,
                        "tokens_by_source": dict(w.tokens_by_source)},
                "parts": [], "train_blocks": 0, "train_tokens": 0, "stopped": None,
                "end_rule": "each shard ends at its last full block; the rest of the document crossing it is dropped",
            }
        for k in range(len(manifest["parts"]), target):
            blocks = budget.part_tokens(k, corpus.block_len) // corpus.block_len
            if blocks == 0:
                break
            name = f"train-{fp}-{k:05d}.bin"
            with tqdm(total=blocks * corpus.block_len, desc=f"corpus part {k + 1}/{budget.parts}", unit="tok",
                      unit_scale=True, disable=not progress) as bar:
                w, filled, n = _write_shard(out / name, corpus.block_len, blocks, mixer, bar)
            dedup_file = None
            if mixer.dedup is not None:
                dedup_file = f"dedup-{fp}-{k:05d}.npy"
                tmp = out / (dedup_file + ".tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, mixer.dedup.array())
                os.replace(tmp, out / dedup_file)
            manifest["parts"].append({"index": k, "file": name, "blocks": n, "tokens": n * corpus.block_len,
                                      "documents": w.documents, "tail_tokens_dropped": w.tail_dropped,
                                      "tokens_by_source": dict(w.tokens_by_source)})
            if not filled:
                manifest["stopped"] = mixer.stopped
            _update_summary(manifest, mixer, corpus, dedup_file, time.time() - started)
            atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
            _cleanup(out, manifest)
            if not filled:
                break
    return manifest


def _update_summary(manifest: dict, mixer: Mixer, corpus: CorpusConfig, dedup_file: str | None, seconds: float) -> None:
    """Totals, requested vs realised shares and per-source statistics after a part."""
    parts = manifest["parts"]
    by_source: dict[str, int] = {}
    for p in parts:
        for s, t in p["tokens_by_source"].items():
            by_source[s] = by_source.get(s, 0) + t
    train_tokens = sum(by_source.values())
    manifest["train_blocks"] = sum(p["blocks"] for p in parts)
    manifest["train_tokens"] = manifest["train_blocks"] * corpus.block_len
    state = mixer.state()
    requested = validate_mixture(corpus.mixture)
    manifest["mixture"] = {
        "method": "quota interleave: the next document comes from the source furthest below its token share",
        "on_exhausted": corpus.on_exhausted,
        "requested": requested,
        "realised": {s: by_source.get(s, 0) / max(1, train_tokens) for s in requested},
    }
    manifest["sources"] = {
        name: {
            "weight": requested[name],
            "train_tokens": by_source.get(name, 0),
            "tokens": st["units"],  # all tokens (with EOS) this source gave the stream, validation included
            "documents": st["stats"]["documents_out"],
            "characters": st["stats"]["characters_out"],
            "epochs": st["epoch"] + 1,
            "cleaning": st["stats"],
            "skipped_files": st["skipped_files"],
        }
        for name, st in state.items()
    }
    manifest["state"] = {"sources": state, "dedup_file": dedup_file,
                         "dedup_hashes": len(mixer.dedup) if mixer.dedup is not None else 0}
    manifest["last_build_seconds"] = round(seconds, 2)
