"""The torch_xla adapter: SPMD mesh over every chip, sharded batches, FSDPv2, one graph per optimizer step.

This package is the only place that imports torch_xla (`runtime`: the import, versions, graph cuts; `cache`:
the persistent compilation cache; `counters`: compiles and host transfers; `sharding`: FSDP specs and CPU copies
of shards; `backend`: `XlaBackend` and the loop's `XlaHooks`). It uses APIs present in both torch_xla 2.8 (Kaggle's TPU
image, `KAGGLE_TPU_PAIR`; CI runs the xla tests with it) and 2.9: `torch_xla.device`, `torch_xla.sync`,
`torch_xla.runtime.use_spmd` / `initialize_cache`, `torch_xla.distributed.spmd` (Mesh, ShardingSpec,
mark_sharding, XLAShardedTensor, apply_backward_optimization_barrier), the parallel loader (`ParallelLoader`,
what `MpDeviceLoader` wraps), `utils.checkpoint` and `debug.metrics`.

How the loop uses it (`loop_hooks(choice)` -> `XlaHooks`, the backend seams of `train.hooks.Hooks`):

- `device`: SPMD is switched on and a one-axis mesh spans every chip (8 on a v5e-8); the batch is split along
  that `data` axis, so the loop's micro-batch is the global one.
- `wrap_model`: with `train.fsdp` every weight is sharded along the same axis (FSDPv2 through `mark_sharding`,
  so the module and its state_dict keys stay unchanged; each decoder block's output is kept batch-split and
  its backward gets an optimization barrier, as torch_xla's FSDPv2 wrapper does per layer). The optimizer
  state created from the weights inherits their sharding; `prepare_optimizer` shards state loaded from a
  checkpoint the same way.
- `device_batches`: torch_xla's parallel loader uploads each step's micro-batches, split along the data axis,
  in a background thread while the device runs the previous step. The loader never cuts the graph itself:
  `after_optimizer_step` (one `torch_xla.sync()`) is the only cut, so forward and backward over every
  micro-batch, clipping and the update are one graph per step. The loop keeps the loss on the device and reads
  it on logging steps only: a step without logging transfers nothing to the host (`counters()` measures it).
- Checkpoints: `state_dict()` of a sharded model or optimizer hands out CPU tensors assembled from the shards
  (`cpu_copy`; `.cpu()` would compile a new gather graph per tensor on every save), so checkpoints are
  device-independent and saving adds no graph. Saves and evaluations by wall time (`train.save_minutes`,
  `train.eval_minutes`) are decided on the host by the one SPMD process's clock between steps, so every chip
  takes part in the same save and no graph changes (`train.clock.Clock.due_by_time`).
- `generate`: greedy samples with one fixed-shape graph for every position (not `model.generate`, which
  compiles a graph per length and syncs per token).
- Persistent compilation cache (`enable_persistent_cache`, `CACHE_DIR` under the run directory): compiled
  programs are written to disk, so a resumed session (the next Kaggle version) loads them instead of compiling
  again. It must be switched on before the first graph compiles, so the backend does it first of all.

Measured here (CPU PJRT device, transformers 5.x GPT-NeoX): SDPA attention given an `attention_mask` reads the
mask on the host every forward (transformers checks `mask.all()` to decide whether it may use `is_causal`): one
device-to-host transfer and a graph split per step. Eager attention with the same explicit mask, and SDPA with
no mask, transfer nothing. `ATTN_IMPLEMENTATION` is therefore "eager" on XLA: zero syncs with or without a mask.
"""

from __future__ import annotations

from .backend import XlaBackend as XlaBackend
from .backend import XlaHooks as XlaHooks
from .backend import loop_hooks as loop_hooks
from .cache import CACHE_DIR as CACHE_DIR
from .cache import cache_dir as cache_dir
from .cache import enable_persistent_cache as enable_persistent_cache
from .cache import persistent_cache_counts as persistent_cache_counts
from .counters import Counters as Counters
from .counters import compile_count as compile_count
from .counters import counters as counters
from .counters import executions as executions
from .counters import host_scalar_reads as host_scalar_reads
from .counters import transfers_from_device as transfers_from_device
from .runtime import ATTN_IMPLEMENTATION as ATTN_IMPLEMENTATION
from .runtime import DATA_AXIS as DATA_AXIS
from .runtime import KAGGLE_TPU_PAIR as KAGGLE_TPU_PAIR
from .runtime import MISSING_MESSAGE as MISSING_MESSAGE
from .runtime import SUPPORTED_RELEASES as SUPPORTED_RELEASES
from .runtime import XlaUnavailableError as XlaUnavailableError
from .runtime import available as available
from .runtime import device_info as device_info
from .runtime import set_seed as set_seed
from .runtime import sync as sync
from .runtime import use_xla_attention as use_xla_attention
from .runtime import versions as versions
from .sharding import cpu_copy as cpu_copy
from .sharding import cpu_state as cpu_state
