"""docs/RELIABILITY.md cites tests by name: each one must exist, so the table cannot drift from the suite."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_reliability_table_cites_exists():
    text = (ROOT / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    cited, current = [], None
    for file, name in re.findall(r"`(test_\w+\.py|…)::(\w+)`", text):
        current = current if file == "…" else file
        cited.append((current, name))
    assert len(cited) > 40
    missing = [f"{f}::{n}" for f, n in cited
               if not re.search(rf"^def {n}\(", (ROOT / "tests" / f).read_text(encoding="utf-8"), re.M)]
    assert missing == []
