"""The torch_xla adapter: SPMD mesh over every chip, sharded batches, FSDPv2, one graph per optimizer step.

This is the only module that imports torch_xla. It uses APIs present in both torch_xla 2.8 (Kaggle's TPU
image, `KAGGLE_TPU_PAIR`; CI runs the xla tests with it) and 2.9: `torch_xla.device`, `torch_xla.sync`,
`torch_xla.runtime.use_spmd` / `initialize_cache`, `torch_xla.distributed.spmd` (Mesh, ShardingSpec,
mark_sharding, XLAShardedTensor, apply_backward_optimization_barrier), the parallel loader (`ParallelLoader`,
what `MpDeviceLoader` wraps), `utils.checkpoint` and `debug.metrics`.

How the loop uses it (`loop_hooks(choice)` -> `XlaHooks`, the backend seams of `loop.Hooks`):

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
  takes part in the same save and no graph changes (the loop's `_due_by_time`).
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

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .layout import XLA_CACHE

# The attention implementation the XLA backend uses (see the module docstring for the measurement).
ATTN_IMPLEMENTATION = "eager"

# Name of the mesh axis the batch (and, with FSDP, every weight) is split along.
DATA_AXIS = "data"

# The torch + torch_xla pair of Kaggle's TPU v5e-8 image (Kaggle/docker-python tpu/config.txt, TORCH_VERSION,
# at commit 78aaa43f8cc8e6b01bbaa5a56c39b4a2f61a8277): what users get, and what .ci/xla.sh tests.
KAGGLE_TPU_PAIR = ("2.8.0", "2.8.0")
SUPPORTED_RELEASES = ("2.8", "2.9")  # torch_xla major.minor releases whose APIs this module uses

MISSING_MESSAGE = (
    "torch_xla is not installed, so the XLA (TPU) backend is unavailable. On Kaggle choose the "
    "'TPU VM v5e-8' accelerator (its image ships torch_xla); elsewhere install a matching pair, e.g. "
    f"`pip install torch=={KAGGLE_TPU_PAIR[0]} torch_xla=={KAGGLE_TPU_PAIR[1]}` (Kaggle's), or use "
    "train.backend=cpu / cuda."
)


class XlaUnavailableError(ImportError):
    """torch_xla is missing (or does not import)."""


def available() -> bool:
    """True when torch_xla can be imported (nothing is imported or initialised)."""
    return importlib.util.find_spec("torch_xla") is not None


def _xla():
    """Import torch_xla lazily with a clear message when it is missing."""
    try:
        import torch_xla
        import torch_xla.core.xla_model  # noqa: F401
        import torch_xla.debug.metrics  # noqa: F401
        import torch_xla.distributed.spmd  # noqa: F401
        import torch_xla.runtime  # noqa: F401
    except ImportError as err:
        raise XlaUnavailableError(f"{MISSING_MESSAGE} ({err})") from err
    return torch_xla


def sync() -> None:
    """Cut the lazy graph here and run it (no SPMD switch: safe once tensors live on the device)."""
    _xla().sync()


# ---------------------------------------------------------------- persistent compilation cache

CACHE_DIR = XLA_CACHE  # under the run directory: compiled programs, reused by the next session (carried on Kaggle)


def cache_dir(run_root: str | os.PathLike) -> Path:
    """Where a run keeps torch_xla's persistent compilation cache: RUN_DIR/xla_cache."""
    return Path(run_root) / CACHE_DIR


def enable_persistent_cache(path: str | os.PathLike) -> Path | None:
    """Write compiled programs to `path` and load them from there instead of compiling again; None if too late.

    torch_xla reads the setting when it creates its computation cache, at the process's first compilation: after
    that it cannot change, and this warns and returns None (the next process picks it up). Entries are keyed by
    a hash of the traced graph (HLO, shapes, dtypes, sharding and devices), so a changed model, batch, precision
    or mesh only adds new entries; entries a newer torch_xla / libtpu cannot read are compiled again (torch_xla
    counts `PersistentCacheDeserializeFailure`). Deleting the folder is always safe.
    """
    torch_xla = _xla()
    import torch_xla.runtime as xr

    path = Path(path).expanduser().resolve()
    current = os.environ.get("XLA_PERSISTENT_CACHE_PATH")
    if torch_xla._XLAC._xla_computation_cache_is_initialized():
        if current and Path(current).resolve() == path:
            return path
        warnings.warn(f"torch_xla compiled graphs before the persistent cache was set up: {path} is used from the "
                      "next session on (enable it before any XLA computation)", RuntimeWarning, stacklevel=2)
        return None
    path.mkdir(parents=True, exist_ok=True)
    xr.initialize_cache(str(path), readonly=False)
    return path


def persistent_cache_counts() -> dict[str, int]:
    """torch_xla's persistent-cache counters in this process: misses (compiled, then written), hits (loaded from
    disk) and deserialize failures (found on disk but unreadable here, compiled again)."""
    return {"misses": _counter("PersistentCacheMiss"), "hits": _counter("PersistentCacheHit"),
            "deserialize_failures": _counter("PersistentCacheDeserializeFailure")}


def use_xla_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Switch a loaded model to the attention XLA runs without host reads (`ATTN_IMPLEMENTATION`); weights unchanged.

    `from_pretrained` picks SDPA, which reads the mask on the host every forward on XLA (see the module docstring).
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", ATTN_IMPLEMENTATION) != ATTN_IMPLEMENTATION:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model


def set_seed(seed: int) -> None:
    """Seed the XLA device's random generator (sampling on the device draws from it, not from torch's CPU one)."""
    _xla()
    import torch_xla
    import torch_xla.core.xla_model as xm

    xm.set_rng_state(int(seed), torch_xla.device())


def versions() -> dict[str, Any]:
    """torch and torch_xla versions, the PJRT device type and the number of devices (chips)."""
    info: dict[str, Any] = {"torch": torch.__version__, "torch_xla": None, "device_type": None, "device_count": 0}
    if not available():
        info["error"] = MISSING_MESSAGE
        return info
    torch_xla = _xla()
    import torch_xla.runtime as xr

    info["torch_xla"] = torch_xla.__version__
    info["device_type"] = xr.device_type()
    info["device_count"] = xr.global_runtime_device_count()
    return info


# ---------------------------------------------------------------- metrics


def _metric_samples(name: str) -> int:
    _xla()
    import torch_xla.debug.metrics as met

    data = met.metric_data(name)
    return int(data[0]) if data else 0


def _counter(name: str) -> int:
    _xla()
    import torch_xla.debug.metrics as met

    value = met.counter_value(name)
    return int(value) if value else 0


def compile_count() -> int:
    """XLA graph compilations so far in this process (samples of the `CompileTime` metric)."""
    return _metric_samples("CompileTime")


def transfers_from_device() -> int:
    """Device-to-host transfers so far (samples of `TransferFromDeviceTime`): every `.item()`, `.cpu()`, print."""
    return _metric_samples("TransferFromDeviceTime")


def executions() -> int:
    """Graph executions so far (samples of `ExecuteTime`, or `ExecuteReplicatedTime` under SPMD)."""
    return _metric_samples("ExecuteTime") + _metric_samples("ExecuteReplicatedTime")


def host_scalar_reads() -> int:
    """Scalar reads forced by Python (`aten::_local_scalar_dense`: `.item()`, `if tensor:`), a typical hidden sync."""
    return _counter("aten::_local_scalar_dense")


@dataclass(frozen=True)
class Counters:
    """A snapshot of the counters above; subtract two to get what happened in between."""

    compiles: int
    transfers_from_device: int
    executions: int
    scalar_reads: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(a - b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, int, int, int]:
        return (self.compiles, self.transfers_from_device, self.executions, self.scalar_reads)


def counters() -> Counters:
    """Snapshot of compiles, device-to-host transfers, graph executions and host scalar reads."""
    return Counters(compile_count(), transfers_from_device(), executions(), host_scalar_reads())


def metrics_report() -> str:
    """torch_xla's short metrics report (compile and transfer totals) for a notebook cell."""
    _xla()
    import torch_xla.debug.metrics as met

    return met.short_metrics_report()


# ---------------------------------------------------------------- the backend


class XlaBackend:
    """The XLA device with an SPMD mesh over every chip; see the module docstring for how the loop uses it."""

    name = "xla"

    def __init__(self, *, fsdp: bool = False, precision: str = "bf16", cache: str | os.PathLike | None = None) -> None:
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"train.precision: the XLA backend runs bf16 or fp32, got {precision!r}")
        torch_xla = _xla()
        if cache is not None:  # before anything compiles (see enable_persistent_cache)
            enable_persistent_cache(cache)
        import numpy as np
        import torch_xla.distributed.spmd as xs
        import torch_xla.runtime as xr

        _enable_spmd(xr)
        self.fsdp = fsdp
        self.precision = precision
        self.num_devices = xr.global_runtime_device_count()
        # One axis over every chip: the batch is split along it, and with FSDP every weight as well.
        self.mesh = xs.Mesh(np.arange(self.num_devices), (self.num_devices,), (DATA_AXIS,))
        xs.set_global_mesh(self.mesh)
        self.device = torch_xla.device()
        self._batch_spec = xs.ShardingSpec(self.mesh, (DATA_AXIS, None))  # (B, T): B split over the chips
        self._sharded: set[int] = set()  # ids of models already sharded (prepare_model is idempotent)

    # -- model and optimizer

    def check_batch(self, micro_batch: int, what: str = "train.micro_batch") -> None:
        """The global micro-batch must split evenly over the chips."""
        if micro_batch % self.num_devices:
            raise ValueError(
                f"{what}={micro_batch} must be a multiple of the {self.num_devices} XLA devices "
                "(each micro-batch is split evenly along the mesh's data axis)"
            )

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move the model to the XLA device; with FSDP shard every weight along the data axis."""
        import torch_xla.distributed.spmd as xs

        model = model.to(self.device)
        if any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()):
            _use_xla_checkpoint(model)
        if not self.fsdp or id(model) in self._sharded:
            return model  # replicated weights: the SPMD partitioner all-reduces the gradients of the split batch
        self._sharded.add(id(model))
        # Checkpoints read state_dict(): hand out CPU copies assembled from the shards (see cpu_copy).
        model.register_state_dict_post_hook(_model_state_to_cpu)
        for param in model.parameters():
            xs.mark_sharding(param, self.mesh, _fsdp_spec(param, self.num_devices))
        # As torch_xla's FSDPv2 wrapper does per wrapped layer: keep each block's output split along the batch
        # (so the compiler all-gathers weights instead of re-sharding activations) and put an optimization
        # barrier on its backward (so gradients are reduce-scattered layer by layer, not in one huge fusion).
        blocks = set(getattr(model, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in blocks:
                module.register_forward_hook(self._shard_block_output)
                xs.xla_sharding.apply_backward_optimization_barrier(module)
        return model

    def _shard_block_output(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        import torch_xla.distributed.spmd as xs

        hidden = output[0] if isinstance(output, tuple) else output
        if isinstance(hidden, torch.Tensor) and hidden.dim() >= 2 and hidden.shape[0] % self.num_devices == 0:
            xs.mark_sharding(hidden, self.mesh, (DATA_AXIS,) + (None,) * (hidden.dim() - 1))  # (B, T, H)

    def shard_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """FSDP: shard optimizer state like its parameter (after `load_state_dict`); CPU copies in `state_dict()`."""
        if not self.fsdp:
            return
        import torch_xla
        import torch_xla.distributed.spmd as xs

        if id(optimizer) not in self._sharded:
            self._sharded.add(id(optimizer))
            optimizer.register_state_dict_post_hook(_optimizer_state_to_cpu)

        for group in optimizer.param_groups:
            for param in group["params"]:
                for value in optimizer.state.get(param, {}).values():
                    if (isinstance(value, torch.Tensor) and value.shape == param.shape
                            and value.device.type == "xla"
                            and not torch_xla._XLAC._get_xla_sharding_spec(value)):
                        xs.mark_sharding(value, self.mesh, _fsdp_spec(param, self.num_devices))

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the XLA device (fp32 master weights and optimizer state), or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast("xla", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- data

    def device_stream(self, cpu_items: Iterable[Any], *, prefetch: int = 4) -> Iterator[Any]:
        """Items of CPU tensors (dicts, lists of dicts) moved by torch_xla's parallel loader, split on the batch.

        A background thread reads `cpu_items` and uploads each tensor sharded along the data axis while the
        device runs the previous step. The loader never cuts the graph itself (`step_end` does), and it is
        closed when this generator is closed or collected.
        """
        import torch_xla.distributed.parallel_loader as pl

        errors: list[BaseException] = []

        def guarded() -> Iterator[Any]:
            try:
                yield from cpu_items
            except Exception as err:  # the loader thread would only print it: re-raised below, in this thread
                errors.append(err)

        loader = pl.ParallelLoader(
            guarded(),
            [self.device],
            # PerDeviceLoader calls torch_xla.sync() every `batches_per_execution` items, which does not line up
            # with optimizer steps under gradient accumulation: switch it off, the step hook cuts instead.
            batches_per_execution=2**62,
            loader_prefetch_size=prefetch,
            device_prefetch_size=max(2, prefetch // 2),
            input_sharding=self._batch_spec,
        )
        try:
            yield from loader.per_device_loader(self.device)
            if errors:
                raise errors[0]
        finally:
            loader.close()

    def loader(self, batches: Any, start: int, count: int, *, prefetch: int = 4) -> Iterator[dict[str, torch.Tensor]]:
        """Device batches `batches.batch(i)` for `i` in `[start, start + count)` (see `device_stream`)."""
        return self.device_stream((batches.batch(i) for i in range(start, start + count)), prefetch=prefetch)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One CPU batch onto the device, split along the data axis."""
        import torch_xla.core.xla_model as xm

        keys = list(batch)
        moved = xm.send_cpu_data_to_device([batch[k].contiguous() for k in keys], self.device, self._batch_spec)
        return dict(zip(keys, moved))

    # -- graph cuts and host reads

    def step_end(self) -> None:
        """Cut the graph once per optimizer step (or per eval micro-batch) and launch it asynchronously."""
        import torch_xla

        torch_xla.sync()

    def wait(self) -> None:
        """Block until every launched graph has run (for timing)."""
        import torch_xla.core.xla_model as xm

        xm.wait_device_ops()

    def add_step_closure(self, fn: Any, args: tuple = ()) -> None:
        """Run `fn(*args)` right after the next `step_end()`, when its tensors are materialised."""
        import torch_xla.core.xla_model as xm

        xm.add_step_closure(fn, args=args)

    def rng_state(self) -> int:
        """The XLA RNG seed (dropout on the device; the CPU RNG states are saved separately)."""
        import torch_xla.core.xla_model as xm

        return int(xm.get_rng_state(self.device))

    def set_rng_state(self, seed: int) -> None:
        """Restore the XLA RNG seed saved by `rng_state()`."""
        set_seed(seed)

    # -- generation with one graph

    def greedy_generate(self, model: torch.nn.Module, prompt_ids: list[list[int]], max_new_tokens: int,
                        pad_id: int) -> list[list[int]]:
        """Greedy continuations (new ids only) with one fixed-shape program for every position.

        `model.generate` grows the sequence by one token per call, so XLA would compile a graph per length and
        read a stop flag on the host per token; `fixed_shapes.decode` runs the same (rows, width) program every
        step (rows padded to split over the chips) and reads the buffer once at the end.
        """
        from .fixed_shapes import decode

        rows = _round_up(max(1, len(prompt_ids)), self.num_devices)
        return decode(model, prompt_ids, max_new_tokens, pad_id=pad_id, rows=rows, after_step=self.step_end)


class XlaHooks:
    """The loop's backend seams (the methods of `loop.Hooks`) for torch_xla; see the module docstring."""

    def __init__(self, choice: Any = None, run_root: str | os.PathLike | None = None) -> None:
        self.choice = choice
        self.precision = getattr(choice, "precision", "bf16")
        self.cache = cache_dir(run_root) if run_root is not None else None
        self.backend: XlaBackend | None = None

    def _backend(self) -> XlaBackend:
        if self.backend is None:
            self.backend = XlaBackend(precision=self.precision, cache=self.cache)
        return self.backend

    def device(self, choice: Any) -> torch.device:
        """The XLA device, with SPMD switched on before any tensor exists."""
        return self._backend().device

    def wrap_model(self, model: torch.nn.Module, choice: Any, cfg: Any) -> torch.nn.Module:
        """Shard the (already moved) model's weights with FSDP when `train.fsdp`; the module stays the same."""
        backend = self._backend()
        backend.fsdp = bool(getattr(cfg, "fsdp", False))
        backend.check_batch(int(getattr(cfg, "micro_batch", backend.num_devices)))
        return backend.prepare_model(model)

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Shard optimizer state loaded from a checkpoint like its parameters (FSDP)."""
        self._backend().shard_optimizer_state(optimizer)

    def device_batches(self, groups: Iterable[list[dict[str, torch.Tensor]]], device: torch.device
                       ) -> Iterator[list[dict[str, torch.Tensor]]]:
        """Each step's micro-batches through torch_xla's parallel loader, split along the data axis."""
        return self._backend().device_stream(groups)

    def after_optimizer_step(self) -> None:
        """The one graph cut of a training step."""
        self._backend().step_end()

    def after_eval_batch(self) -> None:
        """One graph per evaluation forward (the same graph every batch)."""
        self._backend().step_end()

    def generate(self, model: torch.nn.Module, tokenizer: Any, prompts: Iterable[str], max_new_tokens: int,
                 device: torch.device, autocast: Any) -> list[dict[str, str]]:
        """Greedy continuations of `prompts` with one compiled graph (see `XlaBackend.greedy_generate`)."""
        prompts = list(prompts)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        ids = [tokenizer(p, return_token_type_ids=False)["input_ids"] for p in prompts]
        with torch.no_grad(), autocast():
            new = self._backend().greedy_generate(model, ids, max_new_tokens, pad)
        out = []
        for prompt, tokens in zip(prompts, new):
            if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
            out.append({"prompt": prompt, "text": tokenizer.decode(tokens, skip_special_tokens=True)})
        return out


def loop_hooks(choice: Any = None, run_root: str | os.PathLike | None = None) -> XlaHooks:
    """The hooks `loop.train` uses on the XLA backend; with `run_root`, compiled programs persist in its xla_cache/."""
    _xla()
    return XlaHooks(choice, run_root)


# HBM per chip by TPU generation (TPU_ACCELERATOR_TYPE on TPU VMs, e.g. "v5litepod-8"); v5e is the target.
_TPU_MEMORY = {"v2": 8 * 2**30, "v3": 16 * 2**30, "v4": 32 * 2**30, "v5litepod": 16 * 2**30, "v5e": 16 * 2**30,
               "v5p": 95 * 2**30, "v6e": 32 * 2**30}


def device_info() -> tuple[str, int, int]:
    """(device kind, number of devices, memory per device in bytes), without creating any tensor."""
    _xla()
    import torch_xla.runtime as xr

    kind = str(xr.device_type() or os.environ.get("PJRT_DEVICE", "TPU"))
    count = int(xr.global_runtime_device_count())
    if kind.upper() == "CPU":
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        accel = os.environ.get("TPU_ACCELERATOR_TYPE", "v5litepod").split("-")[0].lower()
        memory = _TPU_MEMORY.get(accel, 16 * 2**30)
        kind = f"{kind} {accel}"
    return kind, count, int(memory)


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _use_xla_checkpoint(model: torch.nn.Module) -> None:
    """Gradient checkpointing through torch_xla's checkpoint, whose optimization barriers stop XLA from
    merging the recomputed forward into the first one (which would undo the memory saving)."""
    import functools

    import torch_xla.utils.checkpoint as xcp

    fn = functools.partial(xcp.checkpoint, use_reentrant=True)  # the only mode torch_xla's checkpoint has
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) is True:
            module._gradient_checkpointing_func = fn


def _enable_spmd(xr: Any) -> None:
    """Switch the process to SPMD once; it must happen before the first XLA tensor is created."""
    if not xr.is_spmd():
        xr.use_spmd()


def _fsdp_spec(param: torch.Tensor, num_devices: int) -> tuple[str | None, ...]:
    """Split a weight along its largest dimension that divides evenly (else its largest, padded); scalars replicate."""
    if param.dim() == 0:
        return ()
    dims = sorted(range(param.dim()), key=lambda d: -param.shape[d])
    even = [d for d in dims if param.shape[d] % num_devices == 0]
    spec: list[str | None] = [None] * param.dim()
    spec[(even or dims)[0]] = DATA_AXIS
    return tuple(spec)


def cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of a (possibly sharded) XLA tensor, assembled from its shards without compiling anything.

    `.cpu()` on a sharded tensor compiles and runs a small "replicate" graph, anew on every call (one per
    weight and optimizer moment per checkpoint); reading the local shards is a plain transfer.
    """
    if tensor.device.type != "xla":
        return tensor.detach()
    import torch_xla
    import torch_xla.distributed.spmd as xs

    spec = torch_xla._XLAC._get_xla_sharding_spec(tensor)
    if not spec or "replicated" in spec or "maximal" in spec:
        return tensor.detach().cpu()
    full = torch.empty(tensor.shape, dtype=tensor.dtype)
    for shard in xs.XLAShardedTensor(tensor.detach()).local_shards:
        if shard.indices is Ellipsis:
            return shard.data.clone()
        index = tuple(shard.indices)
        full[index] = shard.data[tuple(slice(0, s.stop - s.start) for s in index)]  # drop the shard's padding
    return full


def cpu_state(obj: Any) -> Any:
    """Copy every tensor inside `obj` (dicts, lists, tuples) to the CPU with `cpu_copy`."""
    if isinstance(obj, torch.Tensor):
        return cpu_copy(obj)
    if isinstance(obj, dict):
        return type(obj)((k, cpu_state(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_state(v) for v in obj)
    return obj


def _model_state_to_cpu(module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: sharded weights come back as CPU tensors (tied weights stay one object)."""
    import torch_xla

    torch_xla.sync()  # everything materialised: shards can be read
    copies: dict[int, torch.Tensor] = {}
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.device.type == "xla":
            if id(value) not in copies:
                copies[id(value)] = cpu_copy(value)
            state_dict[key] = copies[id(value)]


def _optimizer_state_to_cpu(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """Optimizer state_dict post-hook: sharded moments come back as CPU tensors (new dicts, live state untouched)."""
    import torch_xla

    torch_xla.sync()
    state_dict["state"] = {k: {n: cpu_copy(v) if isinstance(v, torch.Tensor) else v for n, v in per.items()}
                           for k, per in state_dict["state"].items()}
    return state_dict
