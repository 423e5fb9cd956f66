"""Debian's Japanese documentation (debian-reference-ja, manpages-ja) as plain-text documents."""

from __future__ import annotations

import html.parser
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..registry import SourceError
from .encoding import BadUTF8, decode_utf8
from .local import read_bytes, split_paragraphs


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


def require_debian_files() -> list[Path]:
    """debian_files(), or a SourceError saying which packages to install when there are none."""
    files = debian_files()
    if not files:
        raise SourceError("source 'debian_ja': no files; install them with "
                          "`apt-get install debian-reference-ja manpages-ja`")
    return files


def read_debian_file(path: Path) -> str:
    """One Debian file as plain text (book, HTML chapter or man page)."""
    text = decode_utf8(read_bytes(path), path)
    if path.name.endswith(".html"):
        return html_text(text)
    if "/man/" in str(path):
        return man_text(text)
    return text


def debian_docs(path: Path) -> list[str]:
    """The documents (paragraphs) of one Debian file: what iter_texts and a corpus piece of it give."""
    return list(split_paragraphs(read_debian_file(path)))


def iter_debian(on_bad_utf8: str, skipped: Counter | None) -> Iterator[str]:
    """The paragraphs of Debian's Japanese files, file by file; a missing package set is a SourceError."""
    for path in require_debian_files():
        try:
            yield from debian_docs(path)
        except BadUTF8:
            if on_bad_utf8 == "error":
                raise
            if skipped is not None:
                skipped[str(path)] += 1
