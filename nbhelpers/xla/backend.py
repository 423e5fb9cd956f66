"""The XLA backend: an SPMD mesh over every chip, FSDPv2, the parallel loader, and the loop's hooks."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ..decoding import new_tokens
from .cache import cache_dir, enable_persistent_cache
from .runtime import DATA_AXIS, _xla
from .sharding import _enable_spmd, _fsdp_spec, _model_state_to_cpu, _optimizer_state_to_cpu, _use_xla_checkpoint


class XlaBackend:
    """The XLA device with an SPMD mesh over every chip; see the package docstring for how the loop uses it."""

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


class XlaHooks:
    """The loop's backend seams (the methods of `train.hooks.Hooks`) for torch_xla; see the package docstring."""

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
        """Greedy continuations of `prompts` through `decoding.new_tokens` with one fixed-shape program.

        `model.generate` grows the sequence by one token per call, so XLA would compile a graph per length and
        read a stop flag on the host per token; the fixed-shape path runs the same (rows, width) program every
        step (rows padded to split over the chips) and reads the buffer once at the end.
        """
        prompts = list(prompts)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        ids = [tokenizer(p, return_token_type_ids=False)["input_ids"] for p in prompts]
        backend = self._backend()
        with torch.no_grad(), autocast():  # one batch, its rows split evenly over the chips
            new = new_tokens(model, ids, max_new_tokens, pad_id=pad, fixed=True, batch_size=max(1, len(ids)),
                             rows_multiple=backend.num_devices, after_step=backend.step_end)
        out = []
        for prompt, tokens in zip(prompts, new):
            if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
            out.append({"prompt": prompt, "text": tokenizer.decode(tokens, skip_special_tokens=True)})
        return out


def loop_hooks(choice: Any = None, run_root: str | os.PathLike | None = None) -> XlaHooks:
    """The hooks `train.train` uses on the XLA backend; with `run_root`, compiled programs persist in its xla_cache/."""
    _xla()
    return XlaHooks(choice, run_root)
