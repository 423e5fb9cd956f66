"""Per-document cleaning: NFKC, symbol thinning in prose, whitespace normalisation, minimum length.

Everything here is a pure function of one document so that worker processes can run it on every core;
duplicate removal needs the whole corpus and lives in the mixer (`mixing.py`), which sees every document.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import sys
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from ..layout import TOKEN_DTYPE

# Sentence punctuation, brackets and their kin, in the forms NFKC leaves (（→( ！→! ，→, ［→[ ～→~ …→...).
KEEP = set(
    "。、・「」『』【】〈〉《》〔〕〘〙〚〛()[]{}!?,.:;'\"“”‘’〝〟〜~-‐–—―/"
)

# Symbol tiers: a character of a tier is removed from prose when symbol_level >= the tier's threshold.
# Lower thresholds hold what carries least meaning in running text.
TIER_DECORATIVE = 0.25  # So (emoji, dingbats, box drawing, ■◆★), Co (private use), Cf (zero-width, bidi marks)
TIER_MARKUP = 0.5  # Sk (^ ` ¨), Pc (_), ASCII markup (# * | \\ < > = @), brackets and quotes outside KEEP
TIER_PUNCT = 0.75  # other punctuation outside KEEP (& % § ¶ † ‡ ※ ‰)
TIER_MATH = 1.0  # Sm and Sc (+ × ÷ = → $ ¥ €): only at level 1 ("every non-punctuation symbol")
ASCII_MARKUP = set("#*|\\<>=@^_`")

# Step columns of the per-document statistics a worker returns (see `clean_batch`).
STEPS = ("raw", "nfkc", "symbols", "whitespace", "short")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls but \t and \n
# After NFKC (which maps U+3000, NBSP and U+2000-200A to a plain space) only these other spaces are left.
_ODD_SPACES = ("\t", "\u1680", "\u2028", "\u2029")
# Patterns start with a literal ("  ", "\n\n\n") so that `re` skips ahead with a fast search.
_SPACE_RUNS = re.compile("   *")
_BLANK_LINES = re.compile("\n\n\n+")
_REPEATS = re.compile(r"([^\w\s])\1\1\1+")  # the same symbol 4+ times in a row: ----, !!!!!, ・・・・
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")
# Batches are cleaned as one joined string (one regex call per step instead of one per document);
# SENTINEL separates the documents and no step touches it (it is left out of every thinning class).
SENTINEL = "\ue000"
_SEP = "\n" + SENTINEL + "\n"


# Unicode category -> tier, for characters outside KEEP and ASCII_MARKUP (those are decided first).
_CATEGORY_TIER = {"Sk": TIER_MARKUP, "Pc": TIER_MARKUP, "So": TIER_DECORATIVE, "Co": TIER_DECORATIVE,
                  "Cf": TIER_DECORATIVE, "Ps": TIER_MARKUP, "Pe": TIER_MARKUP, "Pi": TIER_MARKUP, "Pf": TIER_MARKUP,
                  "Pd": TIER_MARKUP, "Po": TIER_PUNCT, "Sm": TIER_MATH, "Sc": TIER_MATH}


def symbol_tier(ch: str) -> float | None:
    """The thinning threshold of one (NFKC-normalised) character, or None when it is never thinned."""
    if ch in KEEP or ch == SENTINEL:
        return None
    if ch in ASCII_MARKUP:
        return TIER_MARKUP
    return _CATEGORY_TIER.get(unicodedata.category(ch))


def _char_class(ranges: list[tuple[int, int]]) -> re.Pattern | None:
    if not ranges:
        return None
    parts = [re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges]
    return re.compile("[" + "".join(parts) + "]+")


@functools.lru_cache(maxsize=8)
def _thinning_regexes(level: float) -> tuple[re.Pattern | None, re.Pattern | None, re.Pattern]:
    """What thinning at `level` removes, (BMP class, astral class), and the BMP repeat pattern; once per level.

    The scan skips the CJK and Hangul blocks and planes 2-3, which hold only letters (Lo) and unassigned code
    points (tests/test_clean.py checks this against the running Python's Unicode tables).
    Two removal classes because `re` tests astral ranges one by one: the astral class only runs on the rare
    text that holds an astral character (emoji). Planes 4-13 hold no symbols; planes 15-16 are private use.
    The third pattern is `_REPEATS` for text without astral characters after BMP thinning: its first group is
    an explicit class (what `[^\\w\\s]` matches in the BMP, less what thinning removed), which `re` scans for
    with a table lookup per character, about twice as fast as testing \\w and \\s.
    Built once before the workers fork (`warm`), so each worker inherits it instead of building it again.
    """
    ranges: list[tuple[int, int]] = []
    repeat: list[tuple[int, int]] = []
    keep, markup, tier_of, category = KEEP | {SENTINEL}, ASCII_MARKUP, _CATEGORY_TIER.get, unicodedata.category
    bound = level + 1e-9
    scan = itertools.chain(range(0x3400), range(0x4DC0, 0x4E00), range(0xA000, 0xAC00), range(0xD7A4, 0x20000),
                           range(0xE0000, 0xF0000))
    for cp in scan:
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF or ch in keep:
            tier = None
        elif ch in markup:
            tier = TIER_MARKUP
        else:
            tier = tier_of(category(ch))
        if tier is not None and tier <= bound:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
        elif cp < 0x10000 and not (ch.isalnum() or ch == "_" or ch.isspace()):  # what [^\w\s] matches
            if repeat and repeat[-1][1] == cp - 1:
                repeat[-1] = (repeat[-1][0], cp)
            else:
                repeat.append((cp, cp))
    if level + 1e-9 >= TIER_DECORATIVE:
        ranges.append((0xF0000, sys.maxunicode))  # private use planes (Co)
    bmp = [r for r in ranges if r[1] < 0x10000]
    astral = [r for r in ranges if r[0] >= 0x10000]
    rep = _char_class(repeat)
    rep_bmp = re.compile("(" + rep.pattern[:-1] + r")\1\1\1+") if rep is not None else _REPEATS
    return _char_class(bmp), _char_class(astral), rep_bmp


def warm(symbol_level: float) -> None:
    """Build the thinning patterns of `symbol_level` now (a worker's start, not its first batch)."""
    if symbol_level > 0:
        _thinning_regexes(round(float(symbol_level), 4))


def _ws(text: str) -> str:
    """Whitespace normalisation without the final strip (works on a joined batch)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _CONTROL.search(text):
        text = _CONTROL.sub("", text)
    for odd in _ODD_SPACES:
        if odd in text:
            text = text.replace(odd, " ")
    text = _SPACE_RUNS.sub(" ", text)
    text = text.replace(" \n", "\n").replace("\n ", "\n")  # no spaces at line ends (runs are single now)
    return _BLANK_LINES.sub("\n\n", text)


def normalise_whitespace(text: str) -> str:
    """Controls removed, space runs to one space, no spaces at line ends, at most one blank line."""
    return _ws(text).strip()


def _thin(text: str, level: float) -> str:
    bmp, astral, rep_bmp = _thinning_regexes(round(float(level), 4))
    if bmp is not None:
        text = bmp.sub("", text)
    has_astral = _ASTRAL.search(text) is not None
    if astral is not None and has_astral:
        text = astral.sub("", text)
    if level <= 0:
        return text
    return (_REPEATS if has_astral else rep_bmp).sub(r"\1\1\1", text)


def thin_symbols(text: str, level: float) -> str:
    """Remove the symbols whose tier is at or below `level`; collapse 4+ repeats of one symbol to 3."""
    return _thin(text, level) if level > 0 else text


def clean_text(text: str, symbol_level: float = 0.5, math: bool = False) -> str:
    """One document cleaned: NFKC, symbol thinning (skipped for math), whitespace normalisation."""
    text = unicodedata.normalize("NFKC", text)
    if not math:
        text = thin_symbols(text, symbol_level)
    return normalise_whitespace(text)


def clean_many(raw: list[str], symbol_level: float = 0.5, math: bool = False) -> tuple[list[str], np.ndarray]:
    """Clean a batch of documents; returns the texts and (n, 4) lengths: raw, after NFKC, thinning, whitespace."""
    n = len(raw)
    lens = np.zeros((n, 4), dtype=np.int64)
    if n == 0:  # a part of an empty file (blank lines only, an all-null column): nothing to clean
        return [], lens
    lens[:, 0] = [len(t) for t in raw]
    # NFKC per document: most documents pass its quick check untouched, a joined string would not
    a = [unicodedata.normalize("NFKC", t) for t in raw]
    lens[:, 1] = [len(t) for t in a]
    thin = not math and symbol_level > 0
    joined = _SEP.join(a)
    if joined.count(SENTINEL) == max(0, n - 1):
        if thin:
            joined = _thin(joined, symbol_level)
            lens[:, 2] = [len(p) for p in joined.split(_SEP)]
        c = [p.strip() for p in _ws(joined).split(SENTINEL)]
    else:  # a document holds the sentinel itself: clean them one by one
        b = [thin_symbols(t, symbol_level) for t in a] if thin else a
        if thin:
            lens[:, 2] = [len(t) for t in b]
        c = [normalise_whitespace(t) for t in b]
    if not thin:
        lens[:, 2] = lens[:, 1]
    lens[:, 3] = [len(t) for t in c]
    return c, lens


def doc_hash(text: str) -> int:
    """64-bit content hash used for exact-duplicate removal (8 bytes per document kept in memory)."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return h or 1  # 0 marks a dropped document in CleanedBatch.hashes


@dataclass
class CleanedBatch:
    """A worker's answer for one batch of raw documents of one source."""

    steps: np.ndarray  # (n, 5) int64: raw chars, after NFKC, after thinning, after whitespace, 1 if too short
    hashes: list[int]  # (n,) content hashes, 0 for documents dropped as too short (1 for all when not hashed)
    chars: list[int]  # (n,) cleaned characters
    texts: list[str | None] | None  # cleaned texts (None where dropped) when asked for
    tokens: np.ndarray | None  # flat uint16: each kept document's ids followed by EOS
    offsets: list[int] | None  # (n+1,) document i's tokens are tokens[offsets[i]:offsets[i+1]] (empty if dropped)
    samples: list[tuple[str, str]] = field(default_factory=list)  # (before, after) pairs where cleaning changed text


_SP = None  # the worker's SentencePieceProcessor, loaded once per process by `init_worker`
_THREADS = -1  # SentencePiece threads per batch: 1 in pool workers (one process per core already), else all


def init_worker(model_file: str | None, threads: int = -1) -> None:
    """Worker initializer: load the SentencePiece model once per worker process."""
    global _SP, _THREADS
    _THREADS = threads
    if model_file:
        import sentencepiece

        _SP = sentencepiece.SentencePieceProcessor(model_file=model_file)


def clean_batch(raw: list[str], symbol_level: float, math: bool, min_chars: int,
                tokenize: bool, keep_texts: bool, n_samples: int = 2, cleaning: bool = True,
                hashing: bool = True) -> CleanedBatch:
    """Clean (and optionally tokenize) a batch of one source's documents; runs in a worker process.

    `cleaning=False` takes the text as already clean (only the minimum length applies).
    """
    n = len(raw)
    steps = np.zeros((n, len(STEPS)), dtype=np.int64)
    kept: list[str] = []
    kept_idx: list[int] = []
    hashes = [0] * n
    texts: list[str | None] | None = [None] * n if keep_texts else None
    samples: list[tuple[str, str]] = []
    if cleaning:
        cleaned, lens = clean_many(raw, symbol_level, math)
        steps[:, :4] = lens
    else:
        cleaned = raw
        steps[:, :4] = np.array([len(t) for t in raw], dtype=np.int64)[:, None]
    for i, c in enumerate(cleaned):
        if len(c) < min_chars:
            steps[i, 4] = 1
            continue
        hashes[i] = doc_hash(c) if hashing else 1  # without dedup, 1 just marks the document as kept
        kept.append(c)
        kept_idx.append(i)
        if texts is not None:
            texts[i] = c
        if len(samples) < n_samples and c != raw[i]:
            samples.append((raw[i][:400], c[:400]))
    tokens = offsets = None
    if tokenize:
        if _SP is None:
            raise RuntimeError("clean_batch(tokenize=True) needs init_worker(model_file) first")
        # documents are joined with EOS: each ends with it; numpy output skips a Python int per token
        ids = _SP.encode(kept, add_eos=True, num_threads=_THREADS, out_type="numpy")  # [(len_i,) int32]
        lengths = np.zeros(n + 1, dtype=np.int64)  # (n+1,): 0, then each document's tokens (0 where dropped)
        lengths[np.array(kept_idx, dtype=np.int64) + 1] = [len(seq) for seq in ids]
        offsets = np.cumsum(lengths).tolist()
        tokens = np.concatenate(ids).astype(TOKEN_DTYPE) if ids else np.zeros(0, TOKEN_DTYPE)  # (offsets[-1],)
    return CleanedBatch(steps, hashes, steps[:, 3].tolist(), texts, tokens, offsets, samples)


@dataclass
class CleanStats:
    """What each cleaning step removed from one source (documents and characters)."""

    documents_in: int = 0
    characters_in: int = 0
    nfkc_chars_delta: int = 0  # characters NFKC removed (negative when it expanded, e.g. ㍻ -> 平成)
    symbol_chars: int = 0  # characters removed by symbol thinning
    whitespace_chars: int = 0  # characters removed by whitespace normalisation
    short_documents: int = 0  # documents under min_chars after cleaning
    short_chars: int = 0
    duplicate_documents: int = 0  # exact duplicates of an earlier document
    duplicate_chars: int = 0
    documents_out: int = 0
    characters_out: int = 0
    samples: list[tuple[str, str]] = field(default_factory=list)

    def add_steps(self, steps: np.ndarray) -> None:
        """Add the per-document step lengths (rows of `CleanedBatch.steps`) of consumed documents."""
        if len(steps) == 0:
            return
        raw, nfkc, sym, ws, short = steps.sum(axis=0).tolist()
        short_chars = int(steps[steps[:, 4] == 1, 3].sum())
        self.documents_in += len(steps)
        self.characters_in += raw
        self.nfkc_chars_delta += raw - nfkc
        self.symbol_chars += nfkc - sym
        self.whitespace_chars += sym - ws
        self.short_documents += short
        self.short_chars += short_chars

    def to_dict(self) -> dict:
        """JSON-able form for the manifest."""
        d = {k: v for k, v in self.__dict__.items() if k != "samples"}
        d["samples"] = [{"before": b, "after": a} for b, a in self.samples]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CleanStats:
        """Inverse of to_dict (resuming a build)."""
        d = dict(d)
        samples = [(s["before"], s["after"]) for s in d.pop("samples", [])]
        return cls(**d, samples=samples)
