"""torch_xla itself: the version pair, the lazy import, graph cuts, seeds, attention, device facts.

Every other module of the adapter reaches torch_xla through `_xla()` here, so a missing torch_xla gives one
clear message. See the package docstring for what the adapter does and the measurements behind it.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..platform import host_memory_bytes, xla_installed

# The attention implementation the XLA backend uses (see the package docstring for the measurement).
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
    """True when torch_xla can be imported (nothing is imported or initialised): `platform.xla_installed`."""
    return xla_installed()


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


def use_xla_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Switch a loaded model to the attention XLA runs without host reads (`ATTN_IMPLEMENTATION`); weights unchanged.

    `from_pretrained` picks SDPA, which reads the mask on the host every forward on XLA (see the package docstring).
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
        memory = host_memory_bytes()
    else:
        accel = os.environ.get("TPU_ACCELERATOR_TYPE", "v5litepod").split("-")[0].lower()
        memory = _TPU_MEMORY.get(accel, 16 * 2**30)
        kind = f"{kind} {accel}"
    return kind, count, int(memory)
