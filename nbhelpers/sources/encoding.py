"""What a file's bytes really are: UTF-8 checks, and the hint that names UTF-16, Shift-JIS or EUC-JP."""

from __future__ import annotations

import codecs
import gzip
import re
import shlex
import zlib
from pathlib import Path

from ..registry import SourceError


class BadUTF8(SourceError):
    """A file that is not UTF-8: the message names the file and the byte offset."""


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
