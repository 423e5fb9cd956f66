"""metrics.jsonl: the loop appends one JSON record per log, eval, sample and event; `read_metrics` reads it back."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..layout import STAGE_METRICS as METRICS_FILE

__all__ = ["METRICS_FILE", "MetricsLog", "read_metrics"]


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a torn last line from a killed process is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


class MetricsLog:
    """Appends JSON records to metrics.jsonl (rank 0 only), flushed per record."""

    def __init__(self, path: Path, enabled: bool, keep_until: int) -> None:
        self.path, self.enabled = path, enabled
        self._fh = None
        self.tracker: Any = None  # trackers.Tracker (train.report_to): a live copy of each record
        if enabled:
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= keep_until] if keep_until >= 0 else []
            # a resumed run drops what the killed session logged after its checkpoint: it is logged again
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, **record: Any) -> None:
        """Append `record` (and hand it to the tracker)."""
        if self._fh is not None:
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()
        if self.tracker is not None:
            self.tracker.log(record)

    def close(self) -> None:
        """Close the file and the tracker."""
        if self._fh is not None:
            self._fh.close()
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
