"""The source registry: where each corpus comes from, and one way to read any of them as plain documents."""

from __future__ import annotations

import codecs
import contextlib
import email.utils
import glob
import gzip
import html.parser
import importlib.resources
import itertools
import json
import os
import re
import shlex
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import arithmetic
from .config import check_value
from .registry import REGISTRY as REGISTRY  # re-exported: the names live below config, which checks them
from .registry import Source as Source
from .registry import SourceError as SourceError
from .registry import registry_table as registry_table
from .registry import resolve as resolve


class BadUTF8(SourceError):
    """A file that is not UTF-8: the message names the file and the byte offset."""



def iter_texts(source: Source | str, seed: int = 0, on_bad_utf8: str = "error",
               skipped: Counter | None = None) -> Iterator[str]:
    """Yield the source's documents as strings, streaming; generators are endless, files are read once."""
    src = resolve(source) if isinstance(source, str) else source
    check_value("corpus.on_bad_utf8", on_bad_utf8, ValueError)
    if src.kind == "arithmetic":
        return (p.text() for p in arithmetic.problems(seed))
    if src.kind == "bundled":
        return _read_jsonl(paths(src)[0], src.text_field)
    if src.kind == "files":
        return _iter_files(src, on_bad_utf8, skipped)
    if src.kind == "debian":
        return _iter_debian(on_bad_utf8, skipped)
    if src.kind == "hub":
        return _iter_hub(src)
    raise SourceError(f"source {src.name!r}: unknown kind {src.kind!r}")


# ---------------------------------------------------------------- hub

HUB_MIRROR_ENV = "NBHELPERS_HUB_MIRROR"  # a folder of hub dataset repositories (<owner>/<name>/...) read instead
# datasets' words for a repository holding a loading script: >=4 refuses it, 3.x wants trust_remote_code=True
_SCRIPT_REFUSED = ("scripts are no longer supported", "trust_remote_code")
_NO_FILES = ("Unable to find", "data_files are invalid", "No (supported) data files")  # datasets: nothing matched


def _mirror_dir(src: Source) -> str | None:
    """The local copy of a hub source's repository under $NBHELPERS_HUB_MIRROR, or None to read the hub.

    The copy is laid out as on the hub (`hf download REPO --repo-type dataset --local-dir MIRROR/REPO`, or just
    the files an entry reads: hub_download_command). This is the one place open_hub takes its location from:
    the contract tests point it at local trees in the real formats, and nothing else about the loading differs.
    """
    mirror = os.environ.get(HUB_MIRROR_ENV)
    if not mirror:
        return None
    root = os.path.join(mirror, src.location)
    if not os.path.isdir(root):
        raise SourceError(f"source {src.name!r}: {HUB_MIRROR_ENV}={mirror} has no folder {root}; copy the "
                          f"repository there with `{hub_download_command(src, mirror)}`, or unset "
                          f"{HUB_MIRROR_ENV} to read from the Hugging Face hub")
    return root


def hub_download_command(src: Source, mirror: str = "DIR") -> str:
    """The `hf download` command that copies what `src` reads into a mirror folder."""
    revision = f" --revision {src.revision}" if src.revision else ""
    include = f" --include '{files_glob(src)}'" if src.files else ""
    return (f"hf download {src.location} --repo-type dataset{revision}{include} "
            f"--local-dir {os.path.join(mirror, src.location)}")


def open_hub(src: Source) -> Any:
    """The one loading call of a hub source: a streaming datasets.IterableDataset of its rows.

    An entry with `files` reads them with datasets' own parquet/json reader; one without (`hub:ID` in sft.data)
    goes through the repository, whose README `configs:` say which files a config and split are. No loading
    script is ever run (no trust_remote_code).
    """
    import datasets

    local = _mirror_dir(src)
    if src.shards:
        return _open_listed(src, local)
    if not src.files:
        return datasets.load_dataset(local or src.location, src.config, split=src.split, revision=src.revision,
                                     streaming=True)
    pattern = src.files.format(split=src.split)
    at = f"@{urllib.parse.quote(src.revision, safe='')}" if src.revision else ""
    root = local or f"hf://datasets/{src.location}{at}"  # the files at the pinned revision, as datasets addresses them
    reader = "parquet" if pattern.endswith(".parquet") else "json"
    return datasets.load_dataset(reader, data_files={src.split: f"{root}/{pattern}"}, split=src.split,
                                 streaming=True)


def files_glob(src: Source) -> str:
    """The source's `files` as one glob (a listed source's shard number as *), for `hf download --include`."""
    return re.sub(r"\{shard[^}]*\}", "*", src.files).format(split=src.split)


def hub_file_names(src: Source) -> list[str]:
    """The data files of a listed hub source (`shards` > 0): its `files` pattern for shard 0, 1, ..."""
    return [src.files.format(split=src.split, shard=i) for i in range(src.shards)]


def hub_endpoint() -> str:
    """The hub's address (HF_ENDPOINT, read at each call: a mirror or a test's local server can stand in)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_file_url(src: Source, name: str) -> str:
    """The download address of one file of a hub dataset at the source's revision (no API call: a file fetch)."""
    revision = urllib.parse.quote(src.revision or "main", safe="")
    return f"{hub_endpoint()}/datasets/{src.location}/resolve/{revision}/{urllib.parse.quote(name)}"


def _open_listed(src: Source, local: str | None) -> Any:
    """A listed source's rows as a resumable IterableDataset: one shard per file name, each fetched when read."""
    import datasets

    names = hub_file_names(src)
    reader = "parquet" if src.files.endswith(".parquet") else "json"
    if local is not None:  # a partial copy reads the names it has
        have = [os.path.join(local, n) for n in names if os.path.isfile(os.path.join(local, n))]
        if not have:
            raise SourceError(f"source {src.name!r}: {local} has none of its files ({names[0]}, ...); "
                              f"copy them with `{hub_download_command(src, os.path.dirname(os.path.dirname(local)))}`")
        return datasets.load_dataset(reader, data_files={src.split: have}, split=src.split, streaming=True)
    if reader != "json":
        raise SourceError(f"source {src.name!r}: listed files are read as gzipped or plain JSON lines; got {src.files}")
    return datasets.IterableDataset.from_generator(
        _json_lines_rows, gen_kwargs={"urls": [hub_file_url(src, n) for n in names]})


def _json_lines_rows(urls: list[str]) -> Iterator[dict[str, Any]]:
    """The rows of JSON-lines files (gzipped where named .gz) fetched from the hub one after another."""
    for url in urls:
        with hub_get(url) as resp:
            stream: Any = gzip.GzipFile(fileobj=resp) if url.endswith(".gz") else resp
            for line in stream:
                if line.strip():
                    yield json.loads(line)


HUB_RETRY_STATUS = (429, 500, 502, 503, 504)  # a rate limit or a server's bad moment: read again after a wait
HUB_MAX_WAIT_S = 600.0  # the longest wait one rate limit gets (the hub's windows are 5 minutes)
HUB_WAIT_BUDGET_S = 1800.0  # the most one file waits in all before its read fails
HUB_WAIT_S = 2.0  # a wait when the server names none; it doubles at each try


def retry_after_s(headers: Any, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (a number, or an HTTP date), or None without one."""
    value = (headers.get("Retry-After") if headers is not None else None) or ""
    value = value.strip()
    if not value:  # the hub's own header: RateLimit: "api";r=0;t=55 (t: seconds until its window resets)
        reset = re.search(r"\bt=(\d+)", (headers.get("RateLimit") if headers is not None else None) or "")
        return float(reset.group(1)) if reset else None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def http_status(err: BaseException) -> tuple[int | None, Any]:
    """The HTTP status and headers of an error raised for a response (urllib's, requests', httpx', the hub's)."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code, err.headers
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return (int(status), getattr(response, "headers", None)) if isinstance(status, int) else (None, None)


def hub_wait(err: BaseException, attempt: int, what: str, base_s: float = HUB_WAIT_S) -> float | None:
    """Seconds to wait before reading `what` again after `err`, said aloud; None: not worth another try.

    A 429 is the hub's rate limit, which clears within its window: the wait is what the server asks
    (Retry-After, or the reset of the hub's RateLimit header; at most HUB_MAX_WAIT_S), so a long session waits
    minutes instead of ending. Other failures wait `base_s`, doubling with each attempt.
    """
    status, headers = http_status(err)
    if status is not None and status not in HUB_RETRY_STATUS:
        return None
    asked = retry_after_s(headers) if status is not None else None
    wait = min(HUB_MAX_WAIT_S, asked if asked is not None else base_s * 2**attempt)
    why = (f"the hub's rate limit (HTTP 429; the server asks for {asked:g} s)" if status == 429 and asked is not None
           else f"HTTP {status}" if status is not None else f"{type(err).__name__}: {str(err)[:200]}")
    print(f"reading {what}: {why}; waiting {wait:.0f} s, then reading on"
          + ("" if os.environ.get("HF_TOKEN") else " (HF_TOKEN is not set: a token's limits are higher)"),
          flush=True)
    return wait


class _NoAuthOnRedirect(urllib.request.HTTPRedirectHandler):
    """Follows the hub's redirect to its storage without the token (the signed address needs none)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def hub_get(url: str, timeout: float = 60.0, sleep: Any = None) -> Any:
    """An open HTTP response for a hub file, with HF_TOKEN when set; a 429 or a 5xx waits and tries again."""
    headers = {"User-Agent": "nbhelpers"}
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    opener = urllib.request.build_opener(_NoAuthOnRedirect)
    waited, attempt = 0.0, 0
    while True:
        try:
            return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
        except (urllib.error.URLError, OSError) as err:
            if waited >= HUB_WAIT_BUDGET_S:
                raise
            wait = hub_wait(err, attempt, url.rsplit("/", 1)[-1])
            if wait is None:
                raise
            (sleep or time.sleep)(wait)
            waited += wait
            attempt += 1


def hub_error(src: Source, err: Exception, offline: str = "bundled_prose, arithmetic or files:GLOB") -> SourceError:
    """A SourceError naming the source, what went wrong and what to do instead (`offline`: sources to use)."""
    text = str(err)
    if any(m in text for m in _SCRIPT_REFUSED):
        hint = (" The repository ships a loading script, which datasets>=4 refuses and nbhelpers never runs: read "
                "its data files instead (a registry entry with files=PATTERN), or download them and use files:GLOB.")
    elif isinstance(err, ValueError) and "BuilderConfig" in text:
        hint = (f" The repository has no configuration {src.config!r} (any more): use one it lists, or pin a "
                "revision that has it.")
    elif src.files and (isinstance(err, FileNotFoundError) or any(m in text for m in _NO_FILES)):
        hint = f" {_no_files(src)}"
    else:
        hint = (f" Offline, use {offline} instead, or copy the data first with "
                f"`{hub_download_command(src)}` and set {HUB_MIRROR_ENV}=DIR.")
    where = ", ".join(f"{k} {v}" for k, v in (("config", src.config), ("revision", src.revision)) if v)
    return SourceError(f"source {src.name!r} ({src.location}{', ' + where if where else ''}) could not be loaded "
                       f"from the Hugging Face hub: {type(err).__name__}: {text[:300].rstrip('.')}.{hint}")


def _no_files(src: Source) -> str:
    return (f"The repository has no files {files_glob(src)!r} at revision {src.revision}, or they hold no rows: the "
            "registry entry's files or revision must follow the repository.")


def _field_texts(value: Any) -> list[str]:
    """The texts one field gives: a non-blank string, or each distinct non-blank string of a list."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return list(dict.fromkeys(v for v in value if isinstance(v, str) and v.strip()))
    return []


def hub_texts(src: Source, row: dict[str, Any]) -> list[str]:
    """The documents of one hub row: the fields of text_field (FIELD or FIELD+FIELD...) joined by newlines.

    A field holding a list of strings gives one document per distinct string (JaMARD: a question followed by
    each of its verified answers); a row missing any part gives none, so no document is empty or half.
    """
    parts = [_field_texts(row.get(field)) for field in src.text_field.split("+")]
    return ["\n".join(combo) for combo in itertools.product(*parts)]


def check_first_row(src: Source, first: dict[str, Any] | None) -> None:
    """A SourceError when a hub dataset's first row is missing or lacks the fields of text_field."""
    if first is None:  # datasets<5 streams nothing where a pattern matches no file
        raise SourceError(f"source {src.name!r} ({src.location}): no rows in split {src.split!r}. "
                          + (_no_files(src) if src.files else "The repository has no data files for it."))
    missing = [f for f in src.text_field.split("+") if f not in first]
    if missing:
        raise SourceError(f"source {src.name!r} ({src.location}): rows have no field(s) {missing}; fields: "
                          f"{sorted(first)}")


def _iter_hub(src: Source) -> Iterator[str]:
    """Stream a hub dataset's documents; an unreachable hub, a missing config or a script names the source."""
    try:
        rows = iter(open_hub(src))
        first = next(rows, None)
    except SourceError:
        raise
    except Exception as err:  # connection errors, missing configs, loading scripts: all name the source
        raise hub_error(src, err) from err
    check_first_row(src, first)
    yield from hub_texts(src, first)
    for row in rows:
        yield from hub_texts(src, row)


# ---------------------------------------------------------------- local files


def decode_utf8(data: bytes, path: Path | str) -> str:
    """Decode bytes as UTF-8, or raise BadUTF8 naming the file and the first bad byte offset."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadUTF8(f"{path}: not UTF-8 at byte offset {err.start} ({err.reason})"
                      f"{encoding_hint(data[:SNIFF_BYTES], path)}") from None
    if "\x00" in text:
        check_not_utf16(path, data[:SNIFF_BYTES])
    return text.removeprefix(BOM)


# ---------------------------------------------------------------- what a file's bytes really are

BOM = "\ufeff"  # a UTF-8 byte order mark (Windows editors write one): dropped at the start of a file
SNIFF_BYTES = 1 << 16  # the head of a file read to tell what encoding it is in
_JAPANESE = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")  # kana and common kanji: what a right guess decodes to
# Japanese encodings a file that is not UTF-8 may be in: (Python codec, the name iconv takes)
JAPANESE_ENCODINGS = (("euc_jp", "euc-jp"), ("cp932", "cp932"))


def utf16_order(head: bytes) -> str | None:
    """"utf-16le" / "utf-16be" when bytes look like UTF-16 (a BOM, or NULs on one side of each pair), else None.

    ASCII characters in UTF-16 are a NUL and the character: text with any ASCII in it (line ends, digits) has
    NULs at odd offsets (little-endian) or even ones (big-endian); UTF-8 text has none, or a few anywhere.
    """
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16le" if head[0] == 0xFF else "utf-16be"
    even, odd = head[0::2].count(0), head[1::2].count(0)
    enough = max(4, len(head) // 200)
    for order, on, off in (("utf-16le", odd, even), ("utf-16be", even, odd)):
        if on >= enough and off * 10 <= on:
            try:  # a whole number of pairs that decodes: not random bytes
                codecs.getincrementaldecoder(order)().decode(head[: len(head) // 2 * 2], final=False)
            except UnicodeDecodeError:
                continue
            return order
    return None


def encoding_hint(head: bytes, path: Path | str = "FILE") -> str:
    """What a file that is not UTF-8 is likely to be, and the command that converts it ("" when unclear).

    UTF-16 shows in its NULs; Shift-JIS (cp932) and EUC-JP are told apart by decoding the head both ways and
    counting the kana and kanji each gives (EUC-JP read as cp932 gives half-width katakana, not kana).
    """
    order = utf16_order(head)
    if order:
        return f"; it looks like {order.upper()}: convert it with {_iconv(order, path)}"
    best, score = None, 0
    for codec, name in JAPANESE_ENCODINGS:
        try:
            text = codecs.getincrementaldecoder(codec)().decode(head, final=False)  # the head may end mid-character
        except UnicodeDecodeError:
            continue
        n = len(_JAPANESE.findall(text))
        if n > score:
            best, score = name, n
    if best is None:
        return ""
    return f"; it looks like {'Shift-JIS (cp932)' if best == 'cp932' else 'EUC-JP'}: convert it with {_iconv(best, path)}"


def _iconv(encoding: str, path: Path | str) -> str:
    """The shell command that converts a file to UTF-8 in place."""
    p = shlex.quote(str(path))
    return f"`iconv -f {encoding} -t utf-8 {p} > {p}.utf8 && mv {p}.utf8 {p}`"


def read_head(path: Path | str) -> bytes:
    """The first SNIFF_BYTES bytes of a (possibly gzipped) file, for encoding_hint; b"" when unreadable."""
    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as fh:
            return fh.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return b""


def check_not_utf16(path: Path | str, head: bytes | None = None) -> None:
    """BadUTF8 when a file whose bytes decode as UTF-8 holds NULs in UTF-16's pattern (ASCII text in UTF-16).

    Such a file decodes without an error, and cleaning would drop the NULs: one long document of another text.
    A stray NUL in UTF-8 text passes (cleaning drops it).
    """
    head = read_head(path) if head is None else head
    if utf16_order(head):
        raise BadUTF8(f"{path}: not UTF-8 (NUL bytes between the characters){encoding_hint(head, path)}")


def file_hint(path: Path | str) -> str:
    """encoding_hint of a file's head: what to add to a message about a file that is not UTF-8."""
    return encoding_hint(read_head(path), path)


def to_lf(text: str) -> str:
    """CRLF (Windows) and lone CR (old Mac) line ends as LF, so a blank line ends a document in every file."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _read_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")  # a line holding only whitespace ends a document
TEXT_CHUNK = 1 << 22  # bytes read at a time from a plain-text file


def _split_paragraphs(text: str) -> Iterator[str]:
    """Plain text files: documents are separated by blank lines (CR and CRLF line ends count as LF)."""
    for part in _PARAGRAPH_BREAK.split(to_lf(text)):
        part = part.strip()
        if part:
            yield part


def _text_chunks(path: Path) -> Iterator[str]:
    """A (possibly gzipped) text file decoded in chunks that end at a line end; memory is one chunk.

    A chunk never splits a UTF-8 character (a newline byte is never part of one), so a bad byte is found at
    the same offset as when the whole file is decoded at once. A chunk may end at a CR (old Mac line ends) but
    never between the CR and LF of a CRLF. A UTF-8 BOM at the start is dropped; UTF-16 is refused (BadUTF8).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        offset = 0
        rest = b""
        size = min(TEXT_CHUNK, 1 << 16)  # a small first chunk: the first documents come out at once
        while True:
            block = fh.read(size)
            size = min(2 * size, TEXT_CHUNK)
            data = rest + block
            if block:  # a CR as the last byte may be half a CRLF: not cut there
                cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
                if cut == 0:  # no line end yet: read on
                    rest = data
                    continue
                data, rest = data[:cut], data[cut:]
            if data:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise BadUTF8(f"{path}: not UTF-8 at byte offset {offset + err.start} ({err.reason})"
                                  f"{file_hint(path)}") from None
                if "\x00" in text:
                    check_not_utf16(path)
                yield text.removeprefix(BOM) if offset == 0 else text
                offset += len(data)
            if not block:
                return


def _stream_paragraphs(path: Path) -> Iterator[str]:
    """Plain text files, streaming: the same documents as `_split_paragraphs` on the whole text."""
    carry = ""  # the text after the last break: a document that may go on in the next chunk
    for text in _text_chunks(path):
        parts = _PARAGRAPH_BREAK.split(carry + to_lf(text))
        carry = parts.pop()
        for part in parts:
            part = part.strip()
            if part:
                yield part
    carry = carry.strip()
    if carry:
        yield carry


def _read_jsonl(path: Path, field: str) -> Iterator[str]:
    """The texts of a (possibly gzipped) JSONL file, line by line; a bad line is named by number and offset."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        offset = 0
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise BadUTF8(f"{path} line {lineno} (file offset {offset}): not UTF-8 at byte offset {err.start} "
                              f"({err.reason}){file_hint(path)}") from None
            if "\x00" in line:
                check_not_utf16(path)
            if lineno == 1:
                line = line.removeprefix(BOM)
            offset += len(raw)
            if line:
                yield _parse_json_line(line, path, lineno, field)


def paths(src: Source) -> list[Path]:
    """The files of a `files:` or bundled source, sorted; none matching is an error naming the pattern."""
    if src.kind == "bundled":
        return [Path(str(importlib.resources.files("nbhelpers") / "data" / src.location))]
    matched = sorted(glob.glob(src.location, recursive=True))
    if not matched:
        raise SourceError(f"source {src.name!r}: no files match {src.location!r}")
    files, others = regular_files(matched)
    if not files:
        raise SourceError(f"source {src.name!r}: {src.location!r} matches no regular file, only "
                          f"{'; '.join(others)}")
    warn_skipped(others)
    return files


class NotAFileWarning(UserWarning):
    """A path a glob matched that is not a regular file (a FIFO, socket, device, folder): it is not read."""


_WARNED: set[str] = set()  # paths warned about in this process: a glob is expanded again each epoch


def regular_files(matched: list[str]) -> tuple[list[Path], list[str]]:
    """(the regular files among glob matches, "PATH (what it is)" for the others).

    Opening a FIFO blocks until something writes to it, and a device may never end: only regular files (or
    links to them) are read.
    """
    files, others = [], []
    for name in matched:
        try:
            mode = os.stat(name).st_mode
        except OSError as err:  # a link to nothing, or a file removed since the glob
            what = f"unreadable ({err.strerror or err})"
        else:
            if stat.S_ISREG(mode):
                files.append(Path(name))
                continue
            what = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        others.append(f"{name} ({what})")
    return files, others


def warn_skipped(others: list[str]) -> None:
    """A NotAFileWarning for each path regular_files left out, once a process (a glob is expanded each epoch)."""
    for other in others:
        if other not in _WARNED:
            _WARNED.add(other)
            warnings.warn(f"skipped {other}: not a regular file (only regular files are read)", NotAFileWarning,
                          stacklevel=3)


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def _part_kind(path: Path) -> str | None:
    """How workers can read a file in parts: "jsonl" / "text" (byte ranges), "parquet" (row groups); None for gzip."""
    if path.name.endswith(".gz"):
        return None
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix, "text")


def _iter_files(src: Source, on_bad_utf8: str, skipped: Counter | None) -> Iterator[str]:
    for path in paths(src):
        # skip: a file is checked whole before any of it is used, so it gives all its documents or none
        if on_bad_utf8 == "skip" and path.suffix != ".parquet" and not utf8_valid(path):
            if skipped is not None:
                skipped[str(path)] += 1
            continue
        if path.name.endswith((".jsonl", ".jsonl.gz")):
            yield from _read_jsonl(path, src.text_field)
        elif path.suffix == ".parquet":  # Arrow strings are UTF-8 already
            table = parquet_file(path, src.text_field)
            with _parquet_errors(path):
                for batch in table.iter_batches(columns=[src.text_field], batch_size=1024):
                    yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))
        else:
            yield from _stream_paragraphs(path)


@contextlib.contextmanager
def _parquet_errors(path: Path | str, what: str = "") -> Iterator[None]:
    """pyarrow's errors on a damaged parquet file (which name no file) as a SourceError naming it."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise SourceError(f"{path}{what}: not a readable parquet file ({type(err).__name__}: {str(err)[:300]}); "
                          "the file is damaged or cut short: copy it again, or leave it out of the glob") from None


def _is_text_type(kind: Any) -> bool:
    """Whether an Arrow type holds strings: plain, large, view, or dictionary-encoded ones."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):  # parquet's dictionary pages, kept as such (pandas categoricals, read_dictionary)
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def parquet_file(path: Path | str, field: str) -> Any:
    """A pyarrow ParquetFile that has the text column, or a SourceError listing the columns it has."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _parquet_errors(path):
        table = pq.ParquetFile(path)
    if field not in table.schema_arrow.names:
        raise SourceError(f"{path}: no column {field!r}; columns: {table.schema_arrow.names}")
    kind = table.schema_arrow.field(field).type
    if not (_is_text_type(kind) or pa.types.is_null(kind)):  # null: a column with no values, which gives no documents
        raise SourceError(f"{path}: column {field!r} holds {kind}, not text (string); name the text column with "
                          "files:GLOB#COLUMN")
    return table


def _json_text(line: str, field: str) -> str:
    """The string `field` of one JSON object line; ValueError says what is wrong with the line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get(field), str):
        raise ValueError(f"expected an object with a string field {field!r}")
    return row[field]


def _parse_json_line(line: str, path: Path, lineno: int, field: str) -> str:
    try:
        return _json_text(line, field)
    except ValueError as err:
        raise SourceError(f"{path} line {lineno}: {err}") from None


# ---------------------------------------------------------------- slices of a file (what corpus/pieces.py plans)

RANGE_BYTES = 192_000  # a slice of a plain-text or JSONL file: about 64,000 Japanese characters (3 bytes each)
FIRST_RANGE_BYTES = 24_000  # the first slices of a file are smaller (sizes double): the first tokens come out at once
PARAGRAPH_ENDS = (b"\n\n", b"\n\r\n", b"\r\r")  # blank lines a plain-text file is cut at (LF, CRLF, CR line ends)
LINE_ENDS = (b"\n",)  # a JSONL file is cut at line ends


def file_kind(path: Path) -> str | None:
    """How a file can be read in slices: "jsonl" / "text" (byte ranges), "parquet" (row groups); None for gzip."""
    if path.name.endswith(".gz"):
        return None
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix, "text")


def _next_break(fh: Any, pos: int, size: int, ends: tuple[bytes, ...] = PARAGRAPH_ENDS) -> int:
    """Offset just after the first of `ends` at or after `pos`, or `size` when there is none.

    Cutting a plain-text file there gives the same documents as splitting the whole text: the left side ends
    with a paragraph break, and the right side's leading whitespace is stripped from its first document.
    """
    fh.seek(pos)
    base, carry = pos, b""
    keep = max(map(len, ends)) - 1  # a break may straddle two reads
    while True:
        block = fh.read(1 << 16)
        if not block:
            return size
        data = carry + block
        hits = [(k, len(e)) for e in ends if (k := data.find(e)) >= 0]
        if hits:
            k, n = min(hits)
            return base + k + n
        carry = data[len(data) - keep:] if keep else b""
        base += len(data) - len(carry)


def text_ranges(path: Path, first: int | None = None, size: int | None = None,
                ends: tuple[bytes, ...] = PARAGRAPH_ENDS) -> Iterator[tuple[int, int]]:
    """Byte ranges of a file, each ending just after one of `ends`; sizes double from `first` to `size`."""
    first, size = first or FIRST_RANGE_BYTES, size or RANGE_BYTES
    total = path.stat().st_size
    start, step = 0, first
    with open(path, "rb") as fh:
        while start < total:
            end = _next_break(fh, start + step, total, ends) if start + step < total else total
            yield start, end
            start, step = end, min(2 * step, size)


def _line_at(path: str, offset: int) -> tuple[int, int]:
    """(line number, the line's first byte) of a byte offset in a file: only for error messages."""
    lineno, line_start, pos = 1, 0, 0
    with open(path, "rb") as fh:
        while pos < offset:
            block = fh.read(min(1 << 20, offset - pos))
            if not block:
                break
            n = block.count(b"\n")
            if n:
                lineno += n
                line_start = pos + block.rfind(b"\n") + 1
            pos += len(block)
    return lineno, line_start


def row_group_ranges(path: Path, field: str, first: int | None = None,
                     size: int | None = None) -> Iterator[tuple[int, int]]:
    """Runs of a parquet file's row groups holding about `size` bytes of the text column (`first` for the first)."""
    first, size = first or FIRST_RANGE_BYTES, size or RANGE_BYTES
    meta = parquet_file(path, field).metadata
    column = [meta.schema.column(i).path for i in range(meta.num_columns)].index(field)
    start, got, want = 0, 0, first
    for i in range(meta.num_row_groups):
        got += meta.row_group(i).column(column).total_uncompressed_size
        if got >= want:
            yield start, i + 1
            start, got, want = i + 1, 0, min(2 * want, size)
    if start < meta.num_row_groups:
        yield start, meta.num_row_groups


def utf8_valid(path: Path) -> bool:
    """Whether the whole file decodes as UTF-8 (read in chunks)."""
    try:
        for _ in _text_chunks(path):
            pass
    except BadUTF8:
        return False
    return True


def row_group_docs(path: str, field: str, start: int, end: int) -> list[str]:
    """The texts of row groups [start, end) of a parquet file (nulls skipped, as the streaming reader does)."""
    table = parquet_file(path, field)
    with _parquet_errors(path, f" (row groups {start} to {end - 1})"):
        column = table.read_row_groups(range(start, end), columns=[field])
    return [t for t in column.column(0).to_pylist() if isinstance(t, str)]


def range_docs(kind: str, path: str, start: int, end: int, field: str = "text") -> list[str]:
    """The paragraphs ("text") or JSON lines' texts ("jsonl") of bytes [start, end), errors named as when streaming."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        at = start + err.start
        if kind == "jsonl":  # the line, and the offset in it
            lineno, line_start = _line_at(path, at)
            raise BadUTF8(f"{path} line {lineno} (file offset {line_start}): not UTF-8 at byte offset "
                          f"{at - line_start} ({err.reason}){file_hint(path)}") from None
        raise BadUTF8(f"{path}: not UTF-8 at byte offset {at} ({err.reason}){file_hint(path)}") from None
    if "\x00" in text:
        check_not_utf16(path)
    if start == 0:
        text = text.removeprefix(BOM)
    if kind != "jsonl":
        return list(_split_paragraphs(text))
    docs = []
    for i, line in enumerate(text.split("\n")):
        line = line.strip()
        if line:
            try:
                docs.append(_json_text(line, field))
            except ValueError as err:  # the line number is counted only now, on the error's way out
                raise SourceError(f"{path} line {_line_at(path, start)[0] + i}: {err}") from None
    return docs


# ---------------------------------------------------------------- Debian's Japanese documentation


class _HTMLText(html.parser.HTMLParser):
    """Collect the visible text of an HTML page, one block element per paragraph."""

    BLOCKS = {"p", "div", "li", "h1", "h2", "h3", "h4", "pre", "tr", "dt", "dd", "table", "br"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_text(text: str) -> str:
    """Visible text of an HTML document, paragraphs separated by blank lines."""
    parser = _HTMLText()
    parser.feed(text)
    return "".join(parser.parts)


_TROFF_ESCAPE = re.compile(r"\\f[BIRP]|\\f\(..|\\[&/,:%]|\\s[+-]?\d|\\\*\(..|\\\*.|\\\(..")


def man_text(text: str) -> str:
    """Readable text of a troff man page: requests dropped, font escapes removed, paragraphs kept."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith("."):
            request = line[1:].split(None, 1)
            if request and request[0] in ("SH", "SS", "PP", "LP", "P", "TP", "HP", "IP", "sp", "br"):
                out.append("")
                if len(request) > 1 and request[0] in ("SH", "SS", "IP"):
                    out.append(request[1].strip('"'))
            elif len(request) > 1 and request[0] in ("B", "I", "BI", "BR", "IR", "RB", "RI"):
                out.append(request[1].replace('"', ""))
            continue
        out.append(_TROFF_ESCAPE.sub("", line).replace("\\-", "-").replace("\\e", "\\"))
    return "\n".join(out)


def debian_files() -> list[Path]:
    """Debian's Japanese text files present on this machine (empty when the packages are absent)."""
    files = sorted(Path("/usr/share/debian-reference").glob("*.ja.txt.gz"))
    files += sorted(Path("/usr/share/debian-reference").glob("*.ja.html"))
    files += sorted(Path("/usr/share/man/ja").glob("man*/*.gz"))
    return files


def read_debian_file(path: Path) -> str:
    """One Debian file as plain text (book, HTML chapter or man page)."""
    text = decode_utf8(_read_bytes(path), path)
    if path.name.endswith(".html"):
        return html_text(text)
    if "/man/" in str(path):
        return man_text(text)
    return text


def _iter_debian(on_bad_utf8: str, skipped: Counter | None) -> Iterator[str]:
    files = debian_files()
    if not files:
        raise SourceError("source 'debian_ja': no files; install them with "
                          "`apt-get install debian-reference-ja manpages-ja`")
    for path in files:
        try:
            yield from _split_paragraphs(read_debian_file(path))
        except BadUTF8:
            if on_bad_utf8 == "error":
                raise
            if skipped is not None:
                skipped[str(path)] += 1
