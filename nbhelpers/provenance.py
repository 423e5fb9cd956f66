"""Stage inputs: what a stage reads must have been made from what the run holds now.

Each artifact records what it was made from: the corpus manifest holds the tokenizer's sha256, its
vocabulary size and the corpus settings; a model's `final/` folder holds its config (vocabulary size)
and the tokenizer it was trained with. `check(run, stage)` compares them with the run's
tokenizer and configuration before a later stage reads `stage`'s output; `RunDir.require` calls it, so every
notebook and every training worker checks at the same boundary. An error names the artifact, what differs
and the notebook to run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import atomic_write_text, read_json
from .layout import CHECKPOINTS, CONFIG_FILE, CORPUS, FINAL, INPUTS_FILE, MANIFEST, PRETRAIN, SFT, SPM_FILE, STEP_PREFIX

if TYPE_CHECKING:
    from .rundir import RunDir

MODEL_NOTEBOOK = {PRETRAIN: "03_pretrain", SFT: "04_instruction_tuning"}
# sft settings that change which rows are trained (the schedule's may change between sessions: it is re-planned)
SFT_DATA_FIELDS = ("data", "template", "response_marker", "prompt_prefix", "max_length", "overflow", "on_invalid",
                   "max_examples", "arithmetic_pairs", "replay_ratio", "replay_len", "heldout_fraction", "micro_batch",
                   "fixed_length", "seed")


class StageMismatch(RuntimeError):
    """An earlier stage's output was made from other inputs than the run holds now; the message says what to rerun."""


def _tokenizer(run: RunDir) -> tuple[str | None, int | None]:
    """(sha256 of spm.model, vocabulary size) of the run's tokenizer; None for what it does not have."""
    from .tokenizer import tokenizer_hash

    if (run.tokenizer / SPM_FILE).is_file():
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=str(run.tokenizer / SPM_FILE))
        return tokenizer_hash(run.tokenizer), sp.get_piece_size()
    pieces = _pieces(run.tokenizer / "tokenizer.json")  # a tokenizer made elsewhere: only its size
    return None, len(pieces) if pieces is not None else None


def check_corpus(run: RunDir) -> None:
    """The corpus was tokenized by the run's tokenizer and built with the configuration's corpus settings."""
    from .corpus.build import STREAM_FIELDS

    path = run.corpus / MANIFEST
    manifest = read_json(path)
    rerun = "Rerun notebooks/02_corpus (`python -m nbhelpers run ... --only 02 --force`)"
    made_with, vocab = manifest.get("tokenizer_hash"), manifest.get("vocab_size")
    tok_hash, tok_vocab = _tokenizer(run)
    if None not in (made_with, tok_hash) and made_with != tok_hash or None not in (vocab, tok_vocab) and vocab != tok_vocab:
        raise StageMismatch(
            f"{path}: the corpus was tokenized by another tokenizer (sha256 {str(made_with)[:12]}…, {vocab} pieces) "
            f"than {run.tokenizer} holds now (sha256 {tok_hash[:12]}…, {tok_vocab} pieces): its token ids stand for "
            f"other pieces. {rerun}, or restore the tokenizer it was built with.")
    built = manifest.get("config") or {}
    want = run.config.corpus
    differ = [f"corpus.{k}={built[k]!r} when built, {getattr(want, k)!r} now" for k in STREAM_FIELDS
              if k in built and _plain(built[k]) != _plain(getattr(want, k))]
    if "block_len" not in built and manifest.get("block_len") != want.block_len:
        differ.append(f"corpus.block_len={manifest.get('block_len')!r} when built, {want.block_len!r} now")
    if differ:
        raise StageMismatch(f"{path}: the corpus was built with other settings than this configuration: "
                            f"{'; '.join(differ)}. {rerun}, or set them back.")


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples are lists, ints in a float field are floats) for comparing."""
    return json.loads(json.dumps(value))


def check_model(run: RunDir, stage: str) -> None:
    """`stage`/final is whole and was trained with the run's tokenizer (its vocabulary size and pieces).

    Its architecture may differ from `model.*`: 04, 05 and 06 use the model as trained.
    """
    final = getattr(run, stage) / FINAL
    notebook = MODEL_NOTEBOOK[stage]
    saved = read_json(final / CONFIG_FILE)
    from .checkpoint import safetensors_problem  # torch and safetensors: only for a stage that reads a model

    for weights in sorted(final.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            raise StageMismatch(f"{problem}: the model of notebooks/{notebook} is damaged (an interrupted copy or "
                                f"sync?). Rerun notebooks/{notebook}; its newest checkpoint lets it finish quickly.")
    _, tok_vocab = _tokenizer(run)
    if tok_vocab is not None and saved.get("vocab_size") != tok_vocab:
        raise StageMismatch(
            f"{final}: the model has a {saved.get('vocab_size')}-token vocabulary but {run.tokenizer} has {tok_vocab} "
            f"pieces: it was trained with another tokenizer. Rerun notebooks/{notebook}, or restore that tokenizer.")
    theirs, ours = _pieces(final / "tokenizer.json"), _pieces(run.tokenizer / "tokenizer.json")
    if theirs is not None and ours is not None and theirs != ours:
        first = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
        raise StageMismatch(
            f"{final}: the model was trained with another tokenizer than {run.tokenizer} holds now (same size, "
            f"but piece {first} is {theirs[first]!r} there and {ours[first]!r} here). Rerun notebooks/{notebook}, "
            "or restore that tokenizer.")


def _pieces(path: Path) -> list[str] | None:
    """The vocabulary of a Hugging Face tokenizer.json (its unigram pieces, by id), or None when absent."""
    if not path.is_file():
        return None
    vocab = read_json(path).get("model", {}).get("vocab")
    return [p[0] for p in vocab] if isinstance(vocab, list) else None


def check(run: RunDir, stage: str) -> None:
    """Before reading `stage`'s output: it (and the corpus, when one exists) agrees with the run's inputs."""
    if stage in (PRETRAIN, SFT):
        check_model(run, PRETRAIN)
    if stage == SFT:
        check_model(run, SFT)
    if stage in (CORPUS, PRETRAIN, SFT) and (run.corpus / MANIFEST).exists():
        check_corpus(run)  # 03 trains on it; 04 replays it; 06 scores its held-out blocks


def stage_inputs(run: RunDir, stage: str) -> dict[str, Any]:
    """What a training stage trains from: resuming its checkpoints is right only when this is unchanged."""
    cfg = run.config
    tok_hash, tok_vocab = _tokenizer(run)
    out: dict[str, Any] = {"tokenizer": tok_hash or tok_vocab}
    if stage == PRETRAIN:
        manifest = read_json(run.corpus / MANIFEST)
        # the stream's identity, not its length: a corpus grown by a later part continues the same stream
        out.update(model=dataclasses.asdict(cfg.model), corpus=manifest.get("fingerprint") or manifest.get("config"),
                   data_seed=cfg.train.seed)
    else:
        result = json.dumps(run.metrics().get(PRETRAIN), sort_keys=True, default=str)
        out.update(pretrained=hashlib.sha256(result.encode()).hexdigest(),  # 03's recorded result: a rerun changes it
                   sft={k: getattr(cfg.sft, k) for k in SFT_DATA_FIELDS})
    return _plain(out)


def check_resume(run: RunDir, stage: str, write: bool = True) -> None:
    """Before training `stage`: checkpoints already there were trained from the same inputs, or StageMismatch.

    The inputs are recorded in `<stage>/inputs.json` (by `write`, the main rank); checkpoints without that
    file (older runs) are taken as they are.
    """
    folder = getattr(run, stage)
    path = folder / INPUTS_FILE
    now = stage_inputs(run, stage)
    has_checkpoints = any((folder / CHECKPOINTS).glob(f"{STEP_PREFIX}*"))
    if has_checkpoints and path.is_file():
        before = read_json(path)
        differ = _differences(before, now)
        if differ:
            raise StageMismatch(
                f"{folder / CHECKPOINTS} holds a training run made from other inputs than now: {'; '.join(differ)}. "
                f"Resuming it would continue that run, not this one. Set them back to resume it, or move {folder} "
                f"away to train afresh (nothing is deleted for you).")
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(now, indent=2, ensure_ascii=False))


def _differences(before: Any, now: Any, where: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        return [d for k in sorted(set(before) | set(now))
                for d in _differences(before.get(k), now.get(k), f"{where}.{k}" if where else k)]
    if before == now:
        return []
    show = (lambda v: (str(v)[:12] + "…") if isinstance(v, str) and len(v) > 16 else repr(v))  # noqa: E731
    return [f"{where} {show(before)} then, {show(now)} now"]
