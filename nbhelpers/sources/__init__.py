"""The sources: where each corpus comes from, and iter_texts, which reads any of them as plain documents.

One purpose a module: `encoding` (UTF-8 checks and the hint naming a file's real encoding), `local` (a `files:`
glob and the bundled prose: plain text, JSONL, parquet), `slices` (byte ranges and row-group runs of a local file,
which corpus/pieces.py plans), `hub` (the Hugging Face hub: open_hub, file names, errors, 429 waits), `debian`
(Debian's Japanese documentation). The names stay reachable as `nbhelpers.sources.X`; a test that patches one
patches it in the module that looks it up (e.g. `sources.local.TEXT_CHUNK`, `sources.slices.RANGE_BYTES`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from .. import arithmetic
from ..config import check_value
from ..registry import REGISTRY as REGISTRY  # re-exported: the names live below config, which checks them
from ..registry import Source as Source
from ..registry import SourceError as SourceError
from ..registry import registry_table as registry_table
from ..registry import resolve as resolve
from . import debian, hub, local
from .debian import debian_docs as debian_docs
from .debian import debian_files as debian_files
from .debian import html_text as html_text
from .debian import man_text as man_text
from .debian import read_debian_file as read_debian_file
from .debian import require_debian_files as require_debian_files
from .encoding import BOM as BOM
from .encoding import SNIFF_BYTES as SNIFF_BYTES
from .encoding import BadUTF8 as BadUTF8
from .encoding import check_not_utf16 as check_not_utf16
from .encoding import decode_utf8 as decode_utf8
from .encoding import encoding_hint as encoding_hint
from .encoding import file_hint as file_hint
from .encoding import to_lf as to_lf
from .encoding import utf16_order as utf16_order
from .hub import HUB_MIRROR_ENV as HUB_MIRROR_ENV
from .hub import HUB_RETRY_STATUS as HUB_RETRY_STATUS
from .hub import HUB_WAIT_BUDGET_S as HUB_WAIT_BUDGET_S
from .hub import check_first_row as check_first_row
from .hub import http_status as http_status
from .hub import hub_download_command as hub_download_command
from .hub import hub_error as hub_error
from .hub import hub_file_names as hub_file_names
from .hub import hub_file_url as hub_file_url
from .hub import hub_get as hub_get
from .hub import hub_texts as hub_texts
from .hub import hub_wait as hub_wait
from .hub import open_hub as open_hub
from .hub import retry_after_s as retry_after_s
from .local import _WARNED as _WARNED  # noqa: F401  (tests patch sources.local._WARNED)
from .local import TEXT_CHUNK as TEXT_CHUNK
from .local import NotAFileWarning as NotAFileWarning
from .local import file_docs as file_docs
from .local import parquet_file as parquet_file
from .local import paths as paths
from .local import read_bytes as read_bytes
from .local import read_jsonl as read_jsonl
from .local import regular_files as regular_files
from .local import split_paragraphs as split_paragraphs
from .local import stream_paragraphs as stream_paragraphs
from .local import utf8_valid as utf8_valid
from .local import warn_skipped as warn_skipped
from .slices import FIRST_RANGE_BYTES as FIRST_RANGE_BYTES
from .slices import LINE_ENDS as LINE_ENDS
from .slices import PARAGRAPH_ENDS as PARAGRAPH_ENDS
from .slices import RANGE_BYTES as RANGE_BYTES
from .slices import file_kind as file_kind
from .slices import range_docs as range_docs
from .slices import row_group_docs as row_group_docs
from .slices import row_group_ranges as row_group_ranges
from .slices import text_ranges as text_ranges


def iter_texts(source: Source | str, seed: int = 0, on_bad_utf8: str = "error",
               skipped: Counter | None = None) -> Iterator[str]:
    """Yield the source's documents as strings, streaming; generators are endless, files are read once."""
    src = resolve(source) if isinstance(source, str) else source
    check_value("corpus.on_bad_utf8", on_bad_utf8, ValueError)
    if src.kind == "arithmetic":
        return (p.text() for p in arithmetic.problems(seed))
    if src.kind == "bundled":
        return local.read_jsonl(local.paths(src)[0], src.text_field)
    if src.kind == "files":
        return local.iter_files(src, on_bad_utf8, skipped)
    if src.kind == "debian":
        return debian.iter_debian(on_bad_utf8, skipped)
    if src.kind == "hub":
        return hub.iter_hub(src)
    raise SourceError(f"source {src.name!r}: unknown kind {src.kind!r}")
