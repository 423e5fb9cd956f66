"""How each source is read: in pieces, epoch after epoch, each piece with the position a resume starts it from.

A piece is the unit of reading and of cleaning (one worker task; pieces.py). Two kinds of source, one sequence:

- Sliceable sources (plain-text, JSONL and parquet files, the bundled prose, Debian's texts, generated problems)
  are planned as slices (`Piece`: a byte range, a run of row groups, one Debian file, numbered problems) that a
  worker reads by itself, so no document crosses a process boundary. The plan of an epoch is a pure function
  of the source and the seed, so a resume at piece `seq` plans again and passes over the first `seq` pieces.
  With a shuffle, each piece's documents are shuffled, and the pieces in windows of WINDOW (the first SMALL
  stay first: they are small and get the first tokens out fast).
- Streamed sources (the hub, gzipped files) can only be read front to back. A reader thread reads them in
  pieces of up to STREAM_CHARS characters (and `shuffle_buffer` documents), shuffles each piece, and records the
  reader's position before it (`datasets`' own `IterableDataset.state_dict()` for the hub, file and document
  numbers for gzipped files), so a resume reopens the stream at that position and reads the piece again. A hub
  read that fails is retried HUB_RETRIES times with doubling waits from the last position, then
  `SourceStreamError` names the source (2 + 4 + ... + 32 s: about a minute of waiting); the hub's rate limit
  (HTTP 429) waits what its Retry-After asks, up to `sources.HUB_WAIT_BUDGET_S` in all, without counting.
  Errors that are not the network's (a missing configuration, a loading script) are named at once.

`piece_stream` yields (epoch, seq, position, piece) for one source, forever for `on_exhausted="repeat"`, with
`piece=None` at each epoch's end.
"""
from __future__ import annotations

import itertools
import queue
import random
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from .. import sources as src_mod
from ..sources import Source, SourceError
from .pieces import Piece, epoch_seed, plan_epoch, sliceable, utf8_ok

STREAM_CHARS = 1_000_000  # characters in a piece of a streamed source (at most `shuffle_buffer` documents)
PIECE_DOCS = 4096  # documents in a piece of a streamed source read without a shuffle
FIRST_STREAM_CHARS = 8_000  # the first pieces of a stream are smaller (sizes double up to STREAM_CHARS)
HUB_RETRIES = 5  # a failed hub read is tried again this many times, waiting HUB_WAIT_S, then twice as long, ...
HUB_WAIT_S = 2.0
READ_AHEAD = 2  # pieces a streamed source's reader thread holds ready


class SourceStreamError(SourceError):
    """A streamed source that kept failing after its retries: the message names the source and the last error."""


def _transient(err: BaseException) -> bool:
    """Whether a hub read failed the way a network does (worth reading again) rather than for good."""
    status, _ = src_mod.http_status(err)
    if status is not None:  # an HTTP answer: a rate limit or a server's bad moment is read again, a missing file not
        return status in src_mod.HUB_RETRY_STATUS
    if isinstance(err, (OSError, TimeoutError)):  # connection resets, timeouts, requests' and the hub's HTTP errors
        return True
    kind = type(err)
    return kind.__module__.split(".")[0] in ("httpx", "httpcore", "aiohttp", "requests", "urllib3", "fsspec") \
        or any(w in kind.__name__ for w in ("Timeout", "Connection", "Transport"))


def _pause(stop: threading.Event, seconds: float) -> bool:
    """Wait `seconds` before reading the hub again; True when the reader was stopped meanwhile."""
    return stop.wait(seconds)


class _HubReader:
    """A hub dataset read row by row; its position is `datasets`' own resumable state; failed reads are retried.

    A row may hold several documents (`sources.hub_texts`): the position of a document inside a row is the
    state before the row plus how many of its documents were given.
    """

    def __init__(self, src: Source, position: dict | None, stop: threading.Event) -> None:
        self.src, self.stop = src, stop
        self.ds: Any = None  # opened by the first read (which is retried like any other)
        self.rows: Any = None
        self.row_state: dict | None = position["hub"] if position else None  # datasets' state before the row given
        self.buffer: list[str] = []  # that row's documents not given yet
        self.given = 0
        self.first = position is None  # an epoch's first row is checked for the text fields
        if position and position.get("in_row"):  # resuming inside a row: read it again, pass what was given
            self._fill()
            self.given, self.buffer = position["in_row"], self.buffer[position["in_row"]:]

    def _open(self, state: dict | None) -> None:
        self.ds = src_mod.hub.open_hub(self.src)
        if state is not None:
            self.ds.load_state_dict(state)
        self.rows = iter(self.ds)

    def position(self) -> dict:
        if self.buffer:
            return {"hub": self.row_state, "in_row": self.given}
        return {"hub": self.ds.state_dict() if self.ds is not None else self.row_state, "in_row": 0}

    def _row(self) -> dict | None:
        """The next row, reading again from the last position when the hub fails (HUB_RETRIES times)."""
        attempt, limited = 0, 0.0
        while True:
            try:
                if self.rows is None:
                    self._open(self.row_state)
                return next(self.rows, None)
            except SourceError:
                raise
            except Exception as err:  # noqa: BLE001 - classified: a network failure is read again
                if not _transient(err):
                    raise src_mod.hub_error(self.src, err) from err
                status, headers = src_mod.http_status(err)
                # a rate limit clears within its window: it waits as the server asks, up to a budget, uncounted
                rate_limited = status == 429 and limited < src_mod.HUB_WAIT_BUDGET_S
                if attempt == HUB_RETRIES and not rate_limited:
                    raise SourceStreamError(
                        f"source {self.src.name!r} ({self.src.location}): reading the hub stream failed "
                        f"{HUB_RETRIES + 1} times in a row; last error {type(err).__name__}: {str(err)[:300]}"
                    ) from err
                wait = src_mod.hub_wait(err, attempt, f"source {self.src.name!r}", HUB_WAIT_S)
                wait = HUB_WAIT_S * 2**attempt if wait is None else wait
                if _pause(self.stop, wait):
                    return None
                if rate_limited:
                    limited += wait
                else:
                    attempt += 1
                self.rows = None  # open again at the position after the last row it gave

    def _fill(self) -> bool:
        """Read rows until one gives documents; False at the end of the dataset."""
        while not self.buffer:
            if self.ds is not None:
                self.row_state = self.ds.state_dict()
            row = self._row()
            if self.first:
                src_mod.check_first_row(self.src, row)
                self.first = False
            if row is None:
                return False
            self.buffer, self.given = src_mod.hub_texts(self.src, row), 0
        return True

    def next(self) -> str | None:
        """The next document, or None at the end of the dataset."""
        if not self._fill():
            return None
        self.given += 1
        return self.buffer.pop(0)

    def close(self) -> None:
        close = getattr(self.rows, "close", None)
        if close is not None:
            close()


class _FileReader:
    """Files read front to back (gzipped ones cannot be sliced); `position()` is (file, documents into it)."""

    def __init__(self, src: Source, position: dict | None, on_bad_utf8: str, skipped: Counter,
                 checked: dict[str, bool]) -> None:
        self.src, self.on_bad_utf8, self.skipped, self.checked = src, on_bad_utf8, skipped, checked
        self.files = src_mod.paths(src)
        self.file, self.doc = (position["file"], position["doc"]) if position else (0, 0)
        self.docs: Iterator[str] | None = None

    def _open(self) -> Iterator[str] | None:
        while self.file < len(self.files):
            path = self.files[self.file]
            if utf8_ok(path, self.on_bad_utf8, self.skipped, self.checked):
                docs = src_mod.file_docs(path, self.src.text_field)
                for _ in itertools.islice(docs, self.doc):  # a resume inside this file: pass its first documents
                    pass
                return docs
            self.file, self.doc = self.file + 1, 0
        return None

    def position(self) -> dict:
        return {"file": self.file, "doc": self.doc}

    def next(self) -> str | None:
        while True:
            if self.docs is None:
                self.docs = self._open()
                if self.docs is None:
                    return None
            try:
                doc = next(self.docs, None)
            except (EOFError, OSError, zlib.error) as err:  # a truncated or corrupt gzip file
                raise SourceError(f"{self.files[self.file]}: cannot be read after document {self.doc} "
                                  f"({type(err).__name__}: {err})") from None
            if doc is not None:
                self.doc += 1
                return doc
            self.docs, self.file, self.doc = None, self.file + 1, 0

    def close(self) -> None:
        self.docs = None


class StreamedPieces:
    """A reader thread that reads one epoch of a streamed source into pieces ahead of their use.

    Iterating gives (seq, position, piece) in order; an error in the thread is raised here, after the pieces
    read before it. `close()` stops the thread.
    """

    def __init__(self, src: Source, name: str, seed: int, epoch: int, seq: int, position: dict | None,
                 shuffle_docs: int, on_bad_utf8: str, skipped: Counter, checked: dict[str, bool]) -> None:
        self.stop = threading.Event()
        self.queue: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        args = (src, name, seed, epoch, seq, position, shuffle_docs, on_bad_utf8, skipped, checked)
        self.thread = threading.Thread(target=self._run, args=args, name=f"read {name}", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, src: Source, name: str, seed: int, epoch: int, seq: int, position: dict | None,
             shuffle_docs: int, on_bad_utf8: str, skipped: Counter, checked: dict[str, bool]) -> None:
        reader: Any = None
        try:
            if src.kind == "hub":
                reader = _HubReader(src, position, self.stop)
            else:
                reader = _FileReader(src, position, on_bad_utf8, skipped, checked)
            base = epoch_seed(seed, epoch, name)
            while not self.stop.is_set():
                start = reader.position()
                limit = min(FIRST_STREAM_CHARS << min(seq, 20), STREAM_CHARS)  # piece `seq` has the same size always
                docs: list[str] = []
                chars = 0
                while chars < limit and len(docs) < (shuffle_docs if shuffle_docs > 1 else PIECE_DOCS):
                    doc = reader.next()
                    if doc is None:
                        break
                    docs.append(doc)
                    chars += len(doc)
                if not docs:
                    break
                if shuffle_docs > 1:
                    random.Random(base * 1_000_003 + seq).shuffle(docs)
                if not self._put((seq, start, Piece("docs", docs=tuple(docs)))):
                    return
                seq += 1
            self._put(None)
        except BaseException as err:  # noqa: BLE001 - raised in the reading thread's consumer, in order
            self._put(err)
        finally:
            if reader is not None:
                reader.close()

    def __iter__(self) -> Iterator[tuple[int, dict, Piece]]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stop.set()


def piece_stream(src: Source, name: str, *, seed: int, shuffle_buffer: int, on_exhausted: str, on_bad_utf8: str,
                 epoch: int = 0, seq: int = 0, position: dict | None = None, skipped: Counter | None = None,
                 checked: dict[str, bool] | None = None) -> Iterator[tuple[int, int, dict | None, Piece | None]]:
    """(epoch, seq, position, piece) for every piece of a source from piece `seq` of `epoch` on; None ends an epoch.

    `position` is where a streamed source's piece `seq` starts (None for sliceable sources, whose epochs are
    planned again). Epochs follow each other while `on_exhausted` is "repeat".
    """
    skipped = Counter() if skipped is None else skipped
    checked = {} if checked is None else checked
    while True:
        if sliceable(src):
            planned = plan_epoch(src, name, seed, epoch, shuffle_buffer > 1, on_bad_utf8, skipped, checked)
            for k, piece in enumerate(planned):
                if k >= seq:
                    yield epoch, k, None, piece
        else:
            reader = StreamedPieces(src, name, seed, epoch, seq, position, shuffle_buffer, on_bad_utf8, skipped,
                                    checked)
            try:
                for k, start, piece in reader:
                    yield epoch, k, start, piece
            finally:
                reader.close()
        yield epoch, -1, None, None
        if on_exhausted != "repeat":
            return
        epoch, seq, position = epoch + 1, 0, None

