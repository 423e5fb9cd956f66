"""FLOPs per trained token, MFU, and the peak FLOP/s of a device (datasheet, sustained, or measured on a CPU).

FLOPs per trained token (forward + backward) follow the PaLM paper's accounting:

    flops_per_token = 6 * N + 12 * L * H * T

where N is the number of parameters that take part in matrix multiplies (every parameter except the
input embedding table, which is a lookup), L the number of layers, H the hidden size and T the
sequence length. 6N counts the weight matmuls (2 FLOPs per multiply-add, forward 1x + backward 2x);
12*L*H*T counts the attention score and value products (2 * 2 * T * H per token and layer forward,
3x for forward + backward), computed in full although causal masking could skip half. MFU is
achieved FLOP/s (tokens/s times this figure) divided by the hardware's peak.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from ..config import ModelConfig
from ..model import parameter_breakdown, resolve

if TYPE_CHECKING:
    from ..device import DeviceChoice

# Dense peak FLOP/s of one device by (name fragment, precision); the datasheet figures without sparsity.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
    "P100": {"fp16": 18.7e12, "fp32": 9.3e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "L4": {"fp16": 121e12, "bf16": 121e12, "fp32": 30.3e12},
    "A100": {"fp16": 312e12, "bf16": 312e12, "fp32": 19.5e12},
    "H100": {"fp16": 989e12, "bf16": 989e12, "fp32": 67e12},
    "H200": {"fp16": 989e12, "bf16": 989e12, "fp32": 67e12},
    "v5e": {"bf16": 197e12},  # TPU v5e (v5 lite) per chip
}
TPU_V5E_NAMES = ("v5e", "v5 lite", "v5lite", "v5litepod")

# FLOP/s a device holds under sustained matrix-multiply load, where that is well below the datasheet peak. A T4
# is capped at 70 W: a loop of 4096^2 fp16 cuBLAS GEMMs settles at about 24 TFLOP/s, "due to power capping"
# (NVIDIA's developer forum, "About GPU peak performance", forums.developer.nvidia.com/t/264462), and free Colab
# T4s are reported at about 20 TFLOP/s (clocks held low). Projections use these, never the 65 TFLOP/s peak.
SUSTAINED_FLOPS: dict[str, dict[str, float]] = {"T4": {"fp16": 20e12}}



def flops_per_token(cfg: ModelConfig, vocab_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 * N (matmul parameters) + 12 * L * H * T (attention), see the module docstring."""
    c = resolve(cfg)
    parts = parameter_breakdown(c, vocab_size)
    n_matmul = parts["total"] - parts["embed_in"]
    return 6.0 * n_matmul + 12.0 * c.num_hidden_layers * c.hidden_size * seq_len


def mfu(tokens_per_s: float, flops_token: float, peak_flops_total: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak of all devices used, or None without a peak."""
    if not peak_flops_total:
        return None
    return tokens_per_s * flops_token / peak_flops_total


def measure_cpu_peak_flops(precision: str = "fp32", sizes: tuple[int, ...] = (1024, 2048), repeats: int = 5) -> float:
    """The CPU's matmul FLOP/s measured now with torch's threads: the best of square matmuls of the given sizes."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    gen = torch.Generator().manual_seed(0)  # its own generator: the global one (a run's seed) is left alone
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(dtype)
        b = torch.randn(n, n, generator=gen).to(dtype)
        out = torch.empty(n, n, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up: thread pool and caches
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = max(best, 2.0 * n**3 / (time.perf_counter() - start))
    return best


@functools.cache
def cpu_peak_flops(precision: str = "fp32") -> float:
    """`measure_cpu_peak_flops` once per process: the plan and the training job share the figure."""
    return measure_cpu_peak_flops(precision)


def sustained_flops(choice: DeviceChoice) -> float | None:
    """FLOP/s ONE device of `choice` holds under sustained load (SUSTAINED_FLOPS), or None where not known."""
    if choice.backend != "cuda":
        return None
    for key, table in SUSTAINED_FLOPS.items():
        if key in choice.name:
            return table.get(choice.precision)
    return None


def peak_flops(choice: DeviceChoice, cpu_peak: float | None = None) -> float | None:
    """Peak FLOP/s of ONE device of `choice` in its precision; a CPU uses `cpu_peak`, else measures it once."""
    if choice.backend == "cpu":
        return cpu_peak if cpu_peak is not None else cpu_peak_flops(choice.precision)
    name = choice.name
    if choice.backend == "xla" and any(k in name.lower() for k in TPU_V5E_NAMES):
        return PEAK_FLOPS["v5e"].get(choice.precision)
    if choice.backend == "xla" and "CPU" in name.upper():
        return cpu_peak if cpu_peak is not None else cpu_peak_flops("fp32")
    for key, table in PEAK_FLOPS.items():
        if key in name:
            return table.get(choice.precision)
    return None


