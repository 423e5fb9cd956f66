"""This process's place among torchrun's processes, read from the environment torchrun sets (no torch import)."""

from __future__ import annotations

import os


def rank() -> int:
    """This process's rank among all of them (RANK), 0 when not under torchrun."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes train together (WORLD_SIZE), 1 when not under torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's rank on its own host (LOCAL_RANK): its GPU, and whether it owns the host's scratch."""
    return int(os.environ.get("LOCAL_RANK", "0"))
