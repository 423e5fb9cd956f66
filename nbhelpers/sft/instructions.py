"""Instruction data: loading and validation (bundled, files, the Hub), dedup, the held-out split, encoding."""

from __future__ import annotations

import glob
import gzip
import importlib.resources
import json
import random
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .. import arithmetic, sources
from ..chat_format import ChatFormatError, chat_template, check_messages
from ..collator import IGNORE, OverflowStats, build_conversation, build_example, check_template, special_id
from ..config import SFTConfig, check_value
from ..registry import InstructionDataError, hub_fields, instruction_source

BUNDLED_FILE = "instructions_ja.jsonl"


@dataclass(frozen=True)
class Example:
    """One instruction pair and where it came from."""

    prompt: str
    target: str
    source: str  # the data name it was loaded from (bundled_instructions, files:..., a hub id)
    where: str = ""  # "path line N" or "dataset row N": for messages
    answer: int | None = None  # arithmetic problems: the exact answer, for accuracy
    # several turns ({"messages": [...]} lines): every assistant turn is trained; prompt/target hold the first turn
    messages: tuple[dict[str, str], ...] | None = None


# ---------------------------------------------------------------- validation


def validate_messages(value: Any, where: str, source: str) -> Example:
    """An Example of several turns from a row's `messages`, or InstructionDataError naming `where`."""
    try:
        messages = check_messages(value, where)
    except ChatFormatError as err:
        raise InstructionDataError(str(err)) from None
    if messages[-1]["role"] != "assistant":
        raise InstructionDataError(f"{where}: the conversation ends with a {messages[-1]['role']} message; it must end "
                                   "with the assistant's answer (a last message with no answer teaches nothing)")
    empty = next((i for i, m in enumerate(messages) if m["role"] == "assistant" and not m["content"].strip()), None)
    if empty is not None:
        raise InstructionDataError(f"{where}: message {empty} is an empty assistant answer; it teaches nothing but EOS")
    system = messages[0]["content"] + "\n\n" if messages[0]["role"] == "system" else ""
    first = 1 if system else 0
    return Example(system + messages[first]["content"], messages[first + 1]["content"], source, where,
                   messages=tuple(messages))


def validate(row: Any, where: str, source: str) -> Example:
    """An Example from a parsed row, or InstructionDataError naming `where` and what was expected."""
    if not isinstance(row, dict):
        raise InstructionDataError(f"{where}: expected a JSON object with string fields 'prompt' and 'target' (or a "
                                   f"'messages' list), got {type(row).__name__}")
    if "messages" in row:
        return validate_messages(row["messages"], where, source)
    for key in ("prompt", "target"):
        if key not in row:
            raise InstructionDataError(f"{where}: missing field {key!r} (fields: {sorted(row)}); each line must be "
                                       '{"prompt": "...", "target": "..."} or {"messages": [{"role": "user", '
                                       '"content": "..."}, {"role": "assistant", "content": "..."}, ...]}')
        if not isinstance(row[key], str):
            raise InstructionDataError(f"{where}: field {key!r} must be a string, got {type(row[key]).__name__}")
    if not row["target"].strip():
        raise InstructionDataError(f"{where}: empty target; an example with no response teaches nothing but EOS")
    return Example(row["prompt"], row["target"], source, where)


def _collect(rows: Iterable[tuple[str, Any]], source: str, on_invalid: str, errors: list[str]) -> list[Example]:
    """Validate (where, row) pairs; with on_invalid="error" raise once, listing the first problems."""
    check_value("sft.on_invalid", on_invalid, ValueError)
    good, bad = [], []
    for where, row in rows:
        if isinstance(row, InstructionDataError):  # a line that did not even parse
            bad.append(str(row))
            continue
        try:
            good.append(validate(row, where, source))
        except InstructionDataError as err:
            bad.append(str(err))
    if bad and on_invalid == "error":
        more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InstructionDataError(f"{len(bad)} invalid example(s) in {source}; nothing was trained. Fix them, or set "
                                   "sft.on_invalid=skip to leave them out:\n  " + "\n  ".join(bad[:5]) + more)
    errors.extend(bad)
    return good


def _check_encoding(path: Path, data: bytes) -> None:
    """InstructionDataError when a whole file is in another encoding (UTF-16, Shift-JIS, EUC-JP), with the fix.

    Checked before any line is used, whatever sft.on_invalid says: skipping its lines one by one would drop
    the Japanese ones and keep the ASCII ones without a word.
    """
    try:
        data.decode("utf-8")
        if b"\x00" not in data or not sources.utf16_order(data[:sources.SNIFF_BYTES]):
            return
    except UnicodeDecodeError:
        pass
    hint = sources.encoding_hint(data[:sources.SNIFF_BYTES], path)
    if hint:
        raise InstructionDataError(f"{path}: not UTF-8{hint}")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, parsed object or the parse error) for each non-blank line of a JSONL file (.gz allowed).

    A UTF-8 BOM at the start is dropped; CR and CRLF line ends count as LF (JSON strings hold no raw CR).
    """
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    _check_encoding(path, data)
    data = data.removeprefix(sources.BOM.encode())
    for lineno, raw in enumerate(data.splitlines(), 1):
        where = f"{path} line {lineno}"
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            yield where, InstructionDataError(f"{where}: not UTF-8 at byte {err.start} of the line")
            continue
        if not line:
            continue
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as err:
            yield where, InstructionDataError(f"{where}: not JSON ({err.msg} at column {err.colno})")


def read_jsonl(path: str | Path, source: str | None = None, on_invalid: str = "error",
               errors: list[str] | None = None) -> list[Example]:
    """Examples from a JSONL file of {"prompt", "target"} objects (the report's format), validated line by line."""
    path = Path(path)
    if not path.is_file():
        raise InstructionDataError(f"{path}: no such file")
    return _collect(_jsonl_rows(path), source or str(path), on_invalid, errors if errors is not None else [])


# ---------------------------------------------------------------- sources


def read_hub(src: sources.Source, limit: int = 0, on_invalid: str = "error",
             errors: list[str] | None = None) -> list[Example]:
    """Examples from a hub instruction dataset: prompt fields joined by a blank line, the target field as is."""
    prompt_fields, target_field = hub_fields(src.text_field, src.name)
    try:  # the corpus sources' loading call: no loading scripts, $NBHELPERS_HUB_MIRROR honoured
        rows = iter(sources.open_hub(src))
        first = next(rows, None)
    except Exception as err:  # no network, unknown id, gated, a loading script: one message naming the dataset
        offline = "bundled_instructions, arithmetic_instructions or files:PATH (JSONL of prompt/target)"
        cause = err if isinstance(err, sources.SourceError) else sources.hub_error(src, err, offline)
        raise InstructionDataError(f"instruction {cause}") from err
    if first is None:
        return []
    missing = [f for f in [*prompt_fields, target_field] if f not in first]
    if missing:
        raise InstructionDataError(f"{src.location}: rows have no field(s) {missing}; fields: {sorted(first)}")

    def pair(i: int, row: dict[str, Any]) -> tuple[str, Any]:
        if not prompt_fields:  # a conversation column
            return f"{src.location} row {i}", {"messages": row[target_field]}
        parts = [row[f] for f in prompt_fields]
        bad = next((v for v in parts if v is not None and not isinstance(v, str)), None)
        prompt = bad if bad is not None else "\n\n".join(p.strip() for p in parts if p and p.strip())
        return f"{src.location} row {i}", {"prompt": prompt, "target": row[target_field]}

    def pairs() -> Iterator[tuple[str, Any]]:
        yield pair(0, first)
        for i, row in enumerate(rows, 1):
            if limit and i >= limit:
                return
            yield pair(i, row)

    return _collect(tqdm(pairs(), desc=src.name, unit=" rows"), src.name, on_invalid,
                    errors if errors is not None else [])


def load_source(name: str, cfg: SFTConfig, errors: list[str] | None = None) -> list[Example]:
    """The examples of one data name: bundled_instructions, arithmetic_instructions, files:GLOB, hub:..., a registry hub entry."""
    errors = errors if errors is not None else []
    if name == "bundled_instructions":
        path = Path(str(importlib.resources.files("nbhelpers") / "data" / BUNDLED_FILE))
        return read_jsonl(path, name, cfg.on_invalid, errors)
    if name == "arithmetic_instructions":  # distinct pairs: the generator repeats small problems now and then
        out: dict[tuple[str, str], Example] = {}
        for i, p in enumerate(arithmetic.problems(cfg.seed, 20 * cfg.arithmetic_pairs + 100)):
            ex = Example(**p.instruction(), source=name, where=f"arithmetic problem {i}", answer=p.answer)
            out.setdefault(_pair_key(ex), ex)
            if len(out) == cfg.arithmetic_pairs:
                break
        return list(out.values())
    if name.startswith("files:") or name.endswith((".jsonl", ".jsonl.gz")):
        pattern = name[len("files:"):] if name.startswith("files:") else name
        matched = sorted(glob.glob(pattern, recursive=True))
        if not matched:
            raise InstructionDataError(f"{name}: no files match {pattern!r}")
        paths, others = sources.regular_files(matched)  # a FIFO or device would block the read: warned, skipped
        if not paths:
            raise InstructionDataError(f"{name}: {pattern!r} matches no regular file, only {'; '.join(others)}")
        sources.warn_skipped(others)
        return [ex for p in paths for ex in read_jsonl(p, name, cfg.on_invalid, errors)]
    src = instruction_source(name)
    return read_hub(src, cfg.max_examples, cfg.on_invalid, errors)


@dataclass
class InstructionData:
    """Examples split into training and held-out sets, with per-source counts and skipped lines."""

    train: list[Example]
    heldout: list[Example]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # invalid lines left out (on_invalid="skip")
    duplicates: dict[str, int] = field(default_factory=dict)  # per source: examples left out as repeats


def _pair_key(ex: Example) -> tuple[str, str]:
    """What makes two examples the same: prompt and target, ignoring whitespace at their ends."""
    return ex.prompt.strip(), ex.target.strip()


def dedup(examples: Sequence[Example], seen: set[tuple[str, str]]) -> list[Example]:
    """The examples whose (prompt, target) is not in `seen` nor earlier in the list; `seen` grows with them."""
    out = []
    for ex in examples:
        key = _pair_key(ex)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def load_instructions(cfg: SFTConfig) -> InstructionData:
    """Load every name in `cfg.data`, validate, and hold out `heldout_fraction` of each source (seeded)."""
    check_template(cfg.template, cfg.response_marker)
    if not cfg.data:
        raise InstructionDataError("sft.data is empty: name at least one instruction source")
    data = InstructionData([], [])
    seen: set[tuple[str, str]] = set()  # across sources too: a pair in two sources could land on both sides
    for name in cfg.data:
        loaded = load_source(name, cfg, data.errors)
        # before the split: a repeated pair would otherwise be trained on and scored as held out
        got = dedup(loaded, seen)
        if len(got) < len(loaded):
            data.duplicates[name] = len(loaded) - len(got)
        if cfg.max_examples and len(got) > cfg.max_examples:
            got = got[: cfg.max_examples]
        order = list(range(len(got)))
        random.Random(f"{cfg.seed}:{name}").shuffle(order)
        n_held = min(len(got) - 1, max(1, round(len(got) * cfg.heldout_fraction))) if len(got) > 1 else 0
        held = set(order[:n_held])
        data.heldout += [got[i] for i in sorted(held)]
        data.train += [ex for i, ex in enumerate(got) if i not in held]
        data.counts[name] = {"examples": len(got), "train": len(got) - n_held, "heldout": n_held}
    if not data.train:
        raise InstructionDataError(f"no training examples in {', '.join(cfg.data)}")
    data.counts["skipped_invalid"] = {"examples": len(data.errors), "train": 0, "heldout": 0}
    dropped = sum(data.duplicates.values())
    data.counts["duplicates_dropped"] = {"examples": dropped, "train": 0, "heldout": 0}
    if dropped:
        per = ", ".join(f"{n} in {name}" for name, n in data.duplicates.items())
        warnings.warn(f"{dropped} duplicate instruction example(s) left out ({per}): the same prompt and target as "
                      "an earlier example, which would otherwise be trained on and also scored as held out",
                      stacklevel=2)
    return data


# ---------------------------------------------------------------- encoding


def attach_chat_template(tokenizer: Any, cfg: SFTConfig) -> Any:
    """The tokenizer with the chat template of `cfg.template` and `cfg.prompt_prefix`: saved with it into sft/final,
    so apply_chat_template, pipeline("text-generation") and other tools prompt the model as it was tuned."""
    tokenizer.chat_template = chat_template(cfg.template, cfg.prompt_prefix)
    # the template writes the prefix as text ("</s>"): tools tokenize it with the tokenizer's own setting, which
    # must read it as the EOS token, as the collator does (with True it became "▁" + EOS, before the turn's text)
    tokenizer.split_special_tokens = False
    return tokenizer


def encode(tokenizer: Any, examples: Sequence[Example], cfg: SFTConfig) -> tuple[list[dict[str, list[int]]],
                                                                                   OverflowStats]:
    """Token rows for the examples that fit (see collator.build_example) and the truncation / drop counts."""
    stats = OverflowStats()
    rows = []
    for ex in tqdm(examples, desc="encode", unit=" ex", mininterval=2):
        if ex.messages is not None:  # several turns: through the same chat template, every answer trained
            row = build_conversation(tokenizer, ex.messages, cfg.max_length, template=cfg.template,
                                     prefix=cfg.prompt_prefix, overflow=cfg.overflow, stats=stats)
        else:
            row = build_example(tokenizer, ex.prompt, ex.target, cfg.max_length, template=cfg.template,
                                prefix=cfg.prompt_prefix, overflow=cfg.overflow, stats=stats)
        if row is not None:
            rows.append(row)
    return rows, stats


def data_table(data: InstructionData, stats: dict[str, OverflowStats]) -> list[dict[str, Any]]:
    """Rows for the notebook: examples per source, then encoded / truncated / dropped per split."""
    keys = ("examples", "train", "heldout", "truncated", "truncated_tokens", "dropped")
    table = [{"what": name, **c} for name, c in data.counts.items()]
    table += [{"what": f"{split}: encoded", "examples": s.examples, "truncated": s.truncated,
               "truncated_tokens": s.truncated_tokens, "dropped": s.dropped} for split, s in stats.items()]
    return [{"what": row["what"], **{k: row.get(k, "") for k in keys}} for row in table]  # "" where n/a


def trained_tokens(rows: Sequence[dict[str, Sequence[int]]]) -> int:
    """How many labels are trained (not -100) in all rows."""
    return sum(sum(1 for t in r["labels"] if t != IGNORE) for r in rows)


def interleave(examples: Sequence[Example], n: int) -> list[Example]:
    """Up to n examples taken in turn from each source, so a large source does not crowd out a small one."""
    by_source: dict[str, list[Example]] = {}
    for ex in examples:
        by_source.setdefault(ex.source, []).append(ex)
    out: list[Example] = []
    for i in range(max((len(v) for v in by_source.values()), default=0)):
        out += [v[i] for v in by_source.values() if i < len(v)]
    return out[:n]


def explain_row(tokenizer: Any, row: dict[str, Sequence[int]]) -> dict[str, Any]:
    """What one encoded example shows the model (context) and what it learns (trained), as text and counts."""
    context = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab == IGNORE]
    trained = [lab for lab in row["labels"] if lab != IGNORE]
    return {"context": tokenizer.decode(context), "trained": tokenizer.decode(trained),
            "context_tokens": len(context), "trained_tokens": len(trained)}


def pad_id(tokenizer: Any) -> int:
    """The pad id batches use (EOS when the tokenizer has no pad token)."""
    return special_id(tokenizer, "pad")
