"""Atomic, resumable training checkpoints that load nothing able to run code, and know when they are whole.

Layout of `<root>/step_00000120/` (written as `<root>/.tmp-step_00000120/` and renamed, so a kill leaves the
previous one whole):

    model.safetensors       weights (fp32 master weights as trained; tied tensors stored once)
    optimizer.safetensors   optimizer.state_dict(): its tensors, and its structure as JSON in the header
    scheduler.safetensors   lr scheduler state (the loop rebuilds the schedule from state.json's plan)
    scaler.safetensors      GradScaler state (fp16 only)
    rng_rank<r>.safetensors python, numpy, torch and CUDA generator states of rank r
    arrays.safetensors      named numpy arrays that travel with the data position (e.g. dedup hashes)
    state.json              step, data position, lr plan, configuration, and `files` (written last), sealed by
                            `state_crc32`, a CRC-32 of its own other content

Nothing is unpickled: every part is safetensors (tensors) plus JSON (numbers, strings, lists, tuples and dicts
in the header's metadata). `state.json` lists every other file with its size and a CRC-32 of its content
(names, dtypes, shapes and bytes of its tensors), and carries a CRC-32 of itself, so no byte of a checkpoint is
unchecked; its `step` must match the folder's name. A checkpoint is complete when state.json parses, its own
CRC holds, and every listed file is there with that size and a safetensors header that spans exactly the
file: `verify` checks this without reading the data (instant on Drive, even for a 9.3 GB checkpoint).
Loading a part reads all of it anyway, so its CRC is checked then, from memory (about 2 GB/s, no second
read); `load` also checks the parts it does not load itself (the arrays, the scheduler, other ranks' RNG
states), so a damaged one falls back like any other. `load_latest` resumes from the newest checkpoint that
loads whole and warns about each newer one it sets aside, naming it and the damage.

A folder of pickled `.pt` parts is refused (LegacyCheckpoint) and never unpickled.

Modules: `folder` (names, listing, state.json and its CRC), `parts` (state as safetensors + JSON), `verify`
(completeness), `saving` (atomic save, room, pruning), `loading` (load, fall back past damage), `errors`.
"""

from __future__ import annotations

from .errors import CheckpointIncomplete as CheckpointIncomplete
from .errors import CheckpointMismatch as CheckpointMismatch
from .errors import CheckpointWarning as CheckpointWarning
from .errors import CheckpointWriteError as CheckpointWriteError
from .errors import LegacyCheckpoint as LegacyCheckpoint
from .errors import UnsafeCheckpoint as UnsafeCheckpoint
from .folder import ASIDE as ASIDE
from .folder import FORMAT as FORMAT
from .folder import PREFIX as PREFIX
from .folder import STATE_CRC as STATE_CRC
from .folder import STATE_FILE as STATE_FILE
from .folder import checkpoint_dir as checkpoint_dir
from .folder import clean_incomplete as clean_incomplete
from .folder import latest as latest
from .folder import list_checkpoints as list_checkpoints
from .folder import read_state as read_state
from .folder import seal_state as seal_state
from .folder import state_crc as state_crc
from .loading import check_model_config as check_model_config
from .loading import load as load
from .loading import load_latest as load_latest
from .loading import load_rng as load_rng
from .loading import load_weights as load_weights
from .loading import model_config_dict as model_config_dict
from .loading import read_arrays as read_arrays
from .loading import read_part as read_part
from .loading import restore_rng as restore_rng
from .parts import content_crc as content_crc
from .parts import safetensors_problem as safetensors_problem
from .saving import capture_rng as capture_rng
from .saving import prune as prune
from .saving import save as save
from .verify import verify as verify
