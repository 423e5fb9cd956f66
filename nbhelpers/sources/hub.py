"""The Hugging Face hub: a source's file names, the one loading call (open_hub), its errors and 429 waits."""

from __future__ import annotations

import email.utils
import gzip
import itertools
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from ..registry import Source, SourceError

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
    if src.file_count:
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
    """The source's `files` as one glob (a listed source's file number as *), for `hf download --include`."""
    return re.sub(r"\{index[^}]*\}", "*", src.files).format(split=src.split)


def hub_file_names(src: Source) -> list[str]:
    """The data files of a listed hub source (`file_count` > 0): its `files` pattern for index 0, 1, ..."""
    return [src.files.format(split=src.split, index=i) for i in range(src.file_count)]


def hub_endpoint() -> str:
    """The hub's address (HF_ENDPOINT, read at each call: a mirror or a test's local server can stand in)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_file_url(src: Source, name: str) -> str:
    """The download address of one file of a hub dataset at the source's revision (no API call: a file fetch)."""
    revision = urllib.parse.quote(src.revision or "main", safe="")
    return f"{hub_endpoint()}/datasets/{src.location}/resolve/{revision}/{urllib.parse.quote(name)}"


def _open_listed(src: Source, local: str | None) -> Any:
    """A listed source's rows as a resumable IterableDataset: one datasets shard per file, each fetched when read."""
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


def iter_hub(src: Source) -> Iterator[str]:
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
