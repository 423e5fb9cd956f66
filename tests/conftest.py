"""Shared test helpers: Debian's Japanese texts (real prose no one here wrote)."""

from __future__ import annotations

import pytest

from nbhelpers import sources


@pytest.fixture(scope="session")
def debian_files():
    """Debian's Japanese documentation files; skips when the packages are not installed."""
    files = sources.debian_files()
    if not files:
        pytest.skip("Debian's Japanese texts are absent: apt-get install debian-reference-ja manpages-ja")
    return files


@pytest.fixture(scope="session")
def debian_lines(debian_files):
    """Every non-empty line of the Debian Japanese texts, as plain text."""
    lines = []
    for path in debian_files:
        lines += [ln for ln in sources.read_debian_file(path).splitlines() if ln.strip()]
    return lines
