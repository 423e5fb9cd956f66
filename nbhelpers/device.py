"""Backend and precision chosen in one place (XLA, CUDA or CPU), with the reason stated.

torch_xla is never imported when this module loads: only `select()` looks for it, and only when
it is installed and a TPU / PJRT device is configured (or the XLA backend is asked for).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import BACKENDS as BACKENDS  # re-exported: the choices are declared with the field, in config/train.py
from .config import PRECISIONS as PRECISIONS
from .config import TrainConfig, check_section, precision_problem
from .dist import local_rank
from .platform import detect, host_memory_bytes
from .platform import xla_installed as xla_installed  # the one probe; select() looks it up here (tests patch it)


class DeviceError(RuntimeError):
    """The requested backend or precision is not available on this machine."""


@dataclass(frozen=True)
class DeviceChoice:
    """Where and in which precision to train, and why."""

    backend: str  # cpu | cuda | xla
    device: str  # a torch device string: "cpu", "cuda:0", "xla"
    name: str  # human-readable accelerator name, e.g. "Tesla T4", "TPU v5 lite", "CPU (2 threads)"
    precision: str  # fp32 | fp16 | bf16: the autocast compute dtype (weights stay fp32)
    use_grad_scaler: bool  # fp16 needs loss scaling so small gradients do not flush to zero
    attn_implementation: str  # sdpa | eager: what build_model uses when model.attn_implementation=auto
    num_devices: int  # accelerators visible to this process (chips on a TPU host, GPUs on a node)
    memory_bytes: int  # memory of one device (host RAM for the CPU)
    capability: tuple[int, int] | None  # CUDA compute capability, None elsewhere
    reason: str  # one or two sentences: why this backend and precision

    @property
    def autocast_dtype(self) -> Any:
        """The torch dtype for torch.autocast, or None for plain fp32."""
        import torch

        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    def summary(self) -> dict[str, Any]:
        """Plain dict for tables and metrics."""
        return {
            "backend": self.backend, "device": self.device, "name": self.name, "precision": self.precision,
            "grad_scaler": self.use_grad_scaler, "attention": self.attn_implementation,
            "devices": self.num_devices, "memory_GiB": round(self.memory_bytes / 2**30, 1), "reason": self.reason,
        }


# ---------------------------------------------------------------- probes (monkeypatched in tests)


@dataclass(frozen=True)
class CudaInfo:
    """What CUDA reports about the GPU this process would use."""

    name: str
    capability: tuple[int, int]
    memory_bytes: int
    count: int


def cuda_info(index: int = 0) -> CudaInfo | None:
    """The CUDA GPU at `index`, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(index)
    return CudaInfo(props.name, (props.major, props.minor), int(props.total_memory), torch.cuda.device_count())


def xla_configured() -> bool:
    """True when a PJRT device is named (PJRT_DEVICE=CPU runs XLA on the CPU) or the platform is a TPU host, as
    `platform.detect` finds it (its environment variables and device files: the one TPU probe)."""
    return bool(os.environ.get("PJRT_DEVICE")) or detect().accelerator == "tpu"


def xla_info() -> tuple[str, int, int]:
    """(device kind, number of devices, memory per device in bytes), from the XLA adapter."""
    from . import xla as xla_mod  # the adapter owns every torch_xla call

    kind, count, memory = xla_mod.device_info()
    return str(kind), int(count), int(memory)


def cpu_threads() -> int:
    """Threads torch uses for intra-op work."""
    import torch

    return torch.get_num_threads()


CPU_FLAGS_BF16 = ("avx512_bf16", "amx_bf16")  # x86 flags of bf16 dot products in hardware (/proc/cpuinfo)
PROBE_SHAPE = (384, 128)  # the probe's matmul: (384, 128) @ (128, 384), a smoke model's Newton-Schulz size


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux), empty where they cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):  # x86 | ARM
            return set(line.split(":", 1)[1].split())
    return set()


def matmul_seconds(dtype: Any, repeats: int = 7) -> float:
    """Median seconds of one PROBE_SHAPE matmul in `dtype` on this CPU, on one thread (what it runs natively)."""
    import time

    import torch

    rows, inner = PROBE_SHAPE
    a, b = torch.randn(rows, inner).to(dtype), torch.randn(inner, rows).to(dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared host's other threads would blur the comparison
    try:
        a @ b  # the first call picks and loads its kernel
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(3):
                a @ b
            times.append((time.perf_counter() - start) / 3)
    finally:
        torch.set_num_threads(threads)
    return sorted(times)[len(times) // 2]


@dataclass(frozen=True)
class MatmulProbe:
    """Which type the CPU multiplies matrices in fastest, bf16 or fp32, measured once, and why."""

    dtype: str  # bf16 | fp32
    bf16_s: float
    fp32_s: float
    flags: str  # the bf16 flags the CPU reports, or "" (what /proc/cpuinfo says, for the message)

    @property
    def reason(self) -> str:
        """One sentence for logs: the two timings and the choice."""
        rate = 2 * PROBE_SHAPE[0] ** 2 * PROBE_SHAPE[1] / 1e9
        return (f"a {PROBE_SHAPE[0]}x{PROBE_SHAPE[1]} matmul runs at {rate / self.bf16_s:.1f} GFLOP/s in bf16 and "
                f"{rate / self.fp32_s:.1f} in fp32 on this CPU (bf16 flags: {self.flags or 'none'}): {self.dtype}")


_PROBE: list[MatmulProbe] = []  # measured once per process


def cpu_matmul_probe() -> MatmulProbe:
    """bf16 where this CPU multiplies in it faster than in fp32 (bf16 hardware), else fp32; measured once.

    Without bf16 hardware a bf16 matmul is emulated, about 30x slower than fp32; with it (AVX512-BF16, AMX),
    several times faster. The timing decides, so a CPU whose flags and kernels disagree still gets the faster one;
    the gap either way is far wider than a shared host's noise, and where the two are close fp32 (exact) wins.
    """
    if not _PROBE:
        import torch

        fp32 = matmul_seconds(torch.float32)
        bf16 = matmul_seconds(torch.bfloat16)
        chosen = "bf16" if bf16 < fp32 else "fp32"
        _PROBE.append(MatmulProbe(chosen, bf16, fp32, " ".join(sorted(cpu_flags() & set(CPU_FLAGS_BF16)))))
    return _PROBE[0]


# ---------------------------------------------------------------- the choice


def select(train_cfg: TrainConfig) -> DeviceChoice:
    """Pick backend and precision from `train.backend` / `train.precision` (auto: the best this machine has)."""
    backend, precision = train_cfg.backend, train_cfg.precision
    check_section(train_cfg, DeviceError)  # config's rules: choices, and precisions a named backend cannot run

    if backend == "xla" or (backend == "auto" and xla_installed() and xla_configured()):
        return _select_xla(precision, asked=backend == "xla")
    if backend == "cuda" or backend == "auto":
        info = cuda_info(local_rank())
        if info is not None:
            return _select_cuda(info, precision)
        if backend == "cuda":
            raise DeviceError("train.backend=cuda but torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                              "use train.backend=auto or cpu, or enable a GPU in the notebook's settings")
    return _select_cpu(precision, backend)


def _select_xla(precision: str, asked: bool) -> DeviceChoice:
    if not xla_installed():
        raise DeviceError("train.backend=xla but torch_xla is not installed; on Kaggle choose the TPU v5e-8 "
                          "accelerator (its image ships torch_xla), or use train.backend=auto")
    if precision_problem("xla", precision):  # train.backend=auto found a TPU
        raise DeviceError(precision_problem("xla", precision))
    kind, count, memory = xla_info()
    chosen = "bf16" if precision == "auto" else precision
    why = "train.backend=xla" if asked else "torch_xla is installed and a PJRT / TPU device is configured"
    how = ("bf16 autocast: XLA's target, the TPU, multiplies in bf16 natively, and bf16 needs no loss scaling"
           if chosen == "bf16" else f"{chosen} as train.precision asks")
    return DeviceChoice(
        backend="xla", device="xla", name=f"XLA {kind} x{count}", precision=chosen, use_grad_scaler=False,
        # the seed found that SDPA forced a host sync every step under torch_xla; eager with an explicit mask did not
        attn_implementation="eager", num_devices=count, memory_bytes=memory, capability=None,
        reason=f"{why}; {how}; eager attention keeps each step one graph without host syncs.",
    )


def _select_cuda(info: CudaInfo, precision: str) -> DeviceChoice:
    native_bf16 = info.capability >= (8, 0)  # Ampere and later; a T4 (7.5) only emulates bf16
    cc = f"compute capability {info.capability[0]}.{info.capability[1]}"
    if precision == "auto":
        chosen = "bf16" if native_bf16 else "fp16"
        how = (f"bf16 autocast: the {info.name} ({cc}) runs bf16 natively, so no loss scaling is needed"
               if native_bf16 else
               f"fp16 autocast with a GradScaler: the {info.name} ({cc}) has fp16 tensor cores but no native bf16 "
               "(torch.cuda.is_bf16_supported() reports the emulated one, which is slow)")
    elif precision == "bf16" and not native_bf16:
        raise DeviceError(f"train.precision=bf16: the {info.name} ({cc}) has no native bf16 (it needs 8.0 or later); "
                          "use fp16 (with loss scaling) or auto")
    else:
        chosen = precision
        how = f"{chosen} as train.precision asks" + (" with a GradScaler" if chosen == "fp16" else "")
    rank = local_rank()
    return DeviceChoice(
        backend="cuda", device=f"cuda:{rank}", name=info.name, precision=chosen, use_grad_scaler=chosen == "fp16",
        attn_implementation="sdpa", num_devices=info.count, memory_bytes=info.memory_bytes,
        capability=info.capability, reason=f"CUDA GPU found; {how}.",
    )


def _select_cpu(precision: str, backend: str) -> DeviceChoice:
    if precision_problem("cpu", precision):  # train.backend=auto found no accelerator
        raise DeviceError(precision_problem("cpu", precision))
    chosen = "fp32" if precision == "auto" else precision
    threads = cpu_threads()
    why = "train.backend=cpu" if backend == "cpu" else "no TPU or CUDA GPU found"
    how = ("fp32: CPUs gain little from autocast and fp32 keeps the losses exactly reproducible"
           if chosen == "fp32" else f"{chosen} autocast as train.precision asks")
    return DeviceChoice(
        backend="cpu", device="cpu", name=f"CPU ({threads} threads)", precision=chosen, use_grad_scaler=False,
        attn_implementation="sdpa", num_devices=1, memory_bytes=host_memory_bytes(), capability=None,
        reason=f"{why}; {how}.",
    )


def local_default() -> str:
    """Where a model runs outside training when nothing is named (chat, scoring): CUDA when present, else the CPU.
    An XLA device is named explicitly (training's choice is `select`)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
