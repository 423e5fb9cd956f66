"""Validation texts for perplexity: the corpus's held-out shard decoded back into documents, and held-out prose."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..layout import MANIFEST

PROSE_PATH = Path(__file__).resolve().parent.parent / "data" / "lm_eval_tasks" / "data" / "heldout_prose.json"


def heldout_prose(n: int | None = None, path: str | Path | None = None) -> list[str]:
    """Japanese paragraphs written for nbhelpers' evaluation, in no training source."""
    path = Path(path or PROSE_PATH)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    texts = data.get("texts") if isinstance(data, dict) else None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"{path}: expected {{\"texts\": [non-empty strings]}}")
    return texts[:n] if n else texts


def texts_from_blocks(blocks: Iterable[Any], tokenizer: Any, n: int, *, min_chars: int = 40,
                      max_blocks: int = 4096) -> list[str]:
    """Up to `n` documents decoded from packed token blocks, split at the EOS the packer put between documents.

    The first piece starts mid-document (the block boundary cut it), so it is dropped while whole documents follow.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: packed documents cannot be told apart")
    texts: list[str] = []
    current: list[int] = []
    first = True
    for b, block in enumerate(blocks):
        if b >= max_blocks:
            break
        for tok in (int(t) for t in block):
            if tok != eos:
                current.append(tok)
                continue
            if not first:
                text = tokenizer.decode(current, skip_special_tokens=True).strip()
                if len(text) >= min_chars:
                    texts.append(text)
                    if len(texts) >= n:
                        return texts
            first = False
            current = []
    if not texts and current:  # one long document without a boundary: better a cut document than none
        text = tokenizer.decode(current, skip_special_tokens=True).strip()
        if text:
            texts.append(text)
    return texts


def validation_texts(corpus_dir: str | Path | None, tokenizer: Any, n: int) -> dict[str, list[str]]:
    """Text sets to score: `corpus_val` (when a corpus exists) and `heldout_prose`, `n` texts each."""
    sets: dict[str, list[str]] = {}
    if corpus_dir is not None and (Path(corpus_dir) / MANIFEST).exists():
        from ..corpus import load_corpus

        corpus = load_corpus(corpus_dir)
        val = corpus.val
        texts = texts_from_blocks((val[i] for i in range(len(val))), tokenizer, n)
        if texts:
            sets["corpus_val"] = texts
    sets["heldout_prose"] = heldout_prose(n)
    return sets
