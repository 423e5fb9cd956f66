"""What goes wrong with a checkpoint: one exception (or warning) per kind, each message naming the checkpoint."""

from __future__ import annotations


class CheckpointMismatch(ValueError):
    """A checkpoint that belongs to another model configuration; the message names the field."""


class CheckpointIncomplete(RuntimeError):
    """A checkpoint with a missing, cut-short or corrupt part; the message names the checkpoint and the part."""


class LegacyCheckpoint(RuntimeError):
    """A checkpoint of pickled .pt parts: never loaded (unpickling can run code); the message says what to do."""


class UnsafeCheckpoint(RuntimeError):
    """A checkpoint file holding something other than tensors and plain values (pickled code): refused."""


class CheckpointWriteError(OSError):
    """A save that failed (a full disk, a quota): the earlier checkpoints are untouched; the message says so."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped or set aside while resuming."""

