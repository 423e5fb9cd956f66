"""The host's cores and memory: one probe each, read by the corpus workers, the launcher, the tokenizer and doctor."""

from __future__ import annotations

import os


def cpu_cores() -> int:
    """The cores this process may use (its CPU affinity: a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity call
        return os.cpu_count() or 1


def host_memory_bytes() -> int:
    """Physical RAM of this machine, 0 where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
