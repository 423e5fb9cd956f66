"""SPMD sharding: the FSDP split of a weight, CPU copies assembled from shards, XLA gradient checkpointing."""

from __future__ import annotations

from typing import Any

import torch

from .runtime import DATA_AXIS


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
