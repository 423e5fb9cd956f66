"""Memory by part (weights, gradients, optimizer state, activations), what a device holds aside, and the fit verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import ModelConfig
from ..model import parameter_breakdown, resolve
from .flops import TPU_V5E_NAMES

if TYPE_CHECKING:
    import pandas as pd

    from ..device import DeviceChoice

GiB = 2**30
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}  # bytes of one activation element
# optimizer state per parameter: fp32 m and v, 8-bit m and v; Muon keeps one fp32 momentum per hidden-matrix
# entry (`hidden_matrix_parameters`) and AdamW's 8 bytes for the rest (`optimizer_state_bytes`)
OPTIMIZER_BYTES = {"adamw": 8.0, "adamw8bit": 2.0, "muon": 4.0}

# Memory of one device as torch reports it (total_memory), when the device does not say: a T4's 16 GB less ECC.
DEVICE_MEMORY = {"T4": 15_828_320_256, "v5e": 16 * 10**9}

# What a CUDA process holds outside the tensors the plan counts (bytes), per GPU:
# - the CUDA context with the kernels loaded lazily: about 400 MB with CUDA >= 11.7's lazy module loading
#   (pytorch/pytorch issue 109888; PR 86509 measured 287 MB after a first tensor, 667 MB without lazy loading);
#   training loads more kernels (cuBLAS, cuDNN, attention) as it goes: 0.5 GiB;
# - cuBLAS workspaces: PyTorch's default CUBLAS_WORKSPACE_CONFIG below Hopper, ":4096:2:16:8", is 8.125 MiB per
#   handle and stream, plus 1 MiB of cuBLASLt workspace on small GPUs (PyTorch PR 120925); the forward and the
#   autograd thread use one each: 32 MiB;
# - with more than one training process, NCCL's buffers (NCCL_BUFFSIZE, 4 MiB by default, per channel, peer and
#   protocol, sent and received) and its kernels: 0.25 GiB.
CUDA_RESERVE = {"cuda_context": 0.5 * GiB, "cublas_workspace": 32 * 2**20}
NCCL_RESERVE = 0.25 * GiB
# The caching allocator rounds and splits blocks: a share of the planned tensors is held but not usable
# (torch.cuda.memory_reserved() above memory_allocated()). An assumption of this planner, to be checked on a GPU.
FRAGMENTATION = 0.05
# The profiles plan at most this share of the usable memory: the estimate's own error, and a margin for peaks
# the plan does not model.
PLAN_HEADROOM = 0.9



def activation_parts(cfg: ModelConfig, vocab_size: int, seq_len: int, precision: str,
                     gradient_checkpointing: bool, attention: str = "sdpa") -> dict[str, float]:
    """Bytes kept for the backward pass per token of the batch: `layers` (all of them), `recompute`, `head`.

    Per layer the saved tensors are the residual input, both LayerNorm outputs, Q, K and V, the attention
    output and the MLP's two intermediate tensors: 8H + 2I elements; under autocast the residual stream and
    LayerNorm outputs stay fp32 (about 2H bytes more). Eager attention also keeps the T x T softmax per head
    (fp32, plus a 16-bit copy under autocast); SDPA keeps only a log-sum-exp. With gradient checkpointing each
    layer keeps only its fp32 input (4H bytes) and `recompute` is the one layer rebuilt at a time in backward.
    The head keeps the fp32 log-softmax of the logits (4V) and the final norm's input and output.
    Checked against the tensors autograd actually saves in tests/test_planner.py.
    """
    c = resolve(cfg)
    h, inter, heads, n_layers = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers
    mixed = precision in ("fp16", "bf16")
    layer = PRECISION_BYTES[precision] * (8 * h + 2 * inter) + (2 * h if mixed else 0)
    if attention == "eager":
        layer += heads * seq_len * (6 if mixed else 4)
    head = 4 * vocab_size + 2 * 4 * h
    if gradient_checkpointing:
        return {"layers": n_layers * 4.0 * h, "recompute": float(layer), "head": float(head)}
    return {"layers": float(n_layers * layer), "recompute": 0.0, "head": float(head)}


def activation_bytes_per_token(cfg: ModelConfig, vocab_size: int, seq_len: int, precision: str,
                               gradient_checkpointing: bool, attention: str = "sdpa") -> float:
    """Total bytes kept for backward per token of the batch (the sum of `activation_parts`)."""
    return sum(activation_parts(cfg, vocab_size, seq_len, precision, gradient_checkpointing, attention).values())


def hidden_matrix_parameters(cfg: ModelConfig) -> int:
    """Entries of the hidden 2-D weights (fused QKV, attention output, the MLP's two): what Muon updates."""
    c = resolve(cfg)
    h, inter = c.hidden_size, c.intermediate_size
    return c.num_hidden_layers * (3 * h * h + h * h + 2 * h * inter)


def optimizer_state_bytes(cfg: ModelConfig, vocab_size: int, optimizer: str) -> float:
    """Bytes of optimizer state for the whole model (Muon: a momentum on the hidden matrices, AdamW's on the rest)."""
    n = parameter_breakdown(cfg, vocab_size)["total"]
    if optimizer == "muon":
        matrices = hidden_matrix_parameters(cfg)
        return OPTIMIZER_BYTES["muon"] * matrices + OPTIMIZER_BYTES["adamw"] * (n - matrices)
    return OPTIMIZER_BYTES[optimizer] * n


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device by part for one training configuration."""

    precision: str
    optimizer: str
    gradient_checkpointing: bool
    parts: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def memory_plan(cfg: ModelConfig, vocab_size: int, batch_per_device: int, seq_len: int, precision: str = "fp32",
                optimizer: str = "adamw", gradient_checkpointing: bool = False, attention: str = "sdpa",
                fsdp_devices: int = 1, accelerator: bool = True) -> MemoryPlan:
    """Memory of one device: fp32 master weights, fp32 gradients, optimizer state, autocast copies, activations.

    `fsdp_devices` > 1 divides weights, gradients and optimizer state (FSDP); `accelerator` adds FRAGMENTATION (5%) for
    the caching allocator's rounding and split blocks (not on a CPU). What the device holds outside these tensors
    (CUDA context, cuBLAS workspaces, NCCL buffers) is `reserve()`, taken off the usable memory instead.
    """
    if precision not in PRECISION_BYTES:
        raise ValueError(f"precision: expected one of {', '.join(PRECISION_BYTES)}, got {precision!r}")
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZER_BYTES)}, got {optimizer!r}")
    parts = parameter_breakdown(cfg, vocab_size)
    n = parts["total"]
    mixed = precision in ("fp16", "bf16")
    tokens = batch_per_device * seq_len
    act = activation_bytes_per_token(cfg, vocab_size, seq_len, precision, gradient_checkpointing, attention)
    out = {
        "weights": 4.0 * n / fsdp_devices,  # fp32 master weights; autocast computes in 16 bits from them
        "gradients": 4.0 * n / fsdp_devices,
        "optimizer_state": optimizer_state_bytes(cfg, vocab_size, optimizer) / fsdp_devices,
        # autocast's 16-bit copies of the matmul weights live from forward until backward has used them
        "autocast_copies": 2.0 * (n - parts["embed_in"]) / fsdp_devices if mixed else 0.0,
        "activations": act * tokens,
        # the returned logits plus their fp32 gradient during backward
        "logits_transient": tokens * vocab_size * (PRECISION_BYTES[precision] + 4),
    }
    if accelerator:
        out["fragmentation"] = FRAGMENTATION * sum(out.values())
    return MemoryPlan(precision, optimizer, gradient_checkpointing, out)


def memory_grid(cfg: ModelConfig, vocab_size: int, batch_per_device: int, seq_len: int, attention: str = "sdpa",
                fsdp_devices: int = 1, accelerator: bool = True, usable_bytes: float | None = None) -> pd.DataFrame:
    """GiB by part for fp32 / fp16 / bf16 x AdamW / 8-bit AdamW / Muon x with / without gradient checkpointing; `fits`
    when within PLAN_HEADROOM of `usable_bytes`."""
    import pandas as pd

    rows = []
    for precision in PRECISION_BYTES:
        for optimizer in OPTIMIZER_BYTES:
            for ckpt in (False, True):
                m = memory_plan(cfg, vocab_size, batch_per_device, seq_len, precision, optimizer, ckpt, attention,
                                fsdp_devices, accelerator)
                row = {"precision": precision, "optimizer": optimizer, "grad_ckpt": ckpt}
                row.update({k: round(v / GiB, 2) for k, v in m.parts.items()})
                row["total_GiB"] = round(m.total / GiB, 2)
                if usable_bytes:
                    row["fits"] = m.total <= PLAN_HEADROOM * usable_bytes
                rows.append(row)
    return pd.DataFrame(rows)


def reserve(choice: DeviceChoice, processes: int = 1) -> dict[str, float]:
    """Bytes a device holds outside the planned tensors: the CUDA context and cuBLAS workspaces on a GPU, plus NCCL's
    buffers when several processes train together. Empty elsewhere (a TPU's runtime reserve is not stated here)."""
    if choice.backend != "cuda":
        return {}
    out = dict(CUDA_RESERVE)
    if processes > 1:
        out["nccl_buffers"] = NCCL_RESERVE
    return out


def device_memory(choice: DeviceChoice) -> float:
    """Memory of one device: what torch reports, else DEVICE_MEMORY by name (a v5e chip: 16 GB), host RAM on a CPU."""
    if choice.backend == "xla" and any(k in choice.name.lower() for k in TPU_V5E_NAMES):
        return float(DEVICE_MEMORY["v5e"])
    if choice.memory_bytes:
        return float(choice.memory_bytes)
    return float(next((v for k, v in DEVICE_MEMORY.items() if k in choice.name), 0))


def usable_memory(choice: DeviceChoice, processes: int = 1) -> float:
    """Bytes one device can give to the planned tensors: its memory less `reserve()`."""
    return device_memory(choice) - sum(reserve(choice, processes).values())


