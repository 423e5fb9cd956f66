"""Memory and time planner: parameters, FLOPs per token, memory by part, fit verdict, sessions for the token budget.

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

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import ModelConfig, RunConfig
from .dist import world_size
from .model import parameter_breakdown, resolve
from .quota import weekly_quota

if TYPE_CHECKING:
    import pandas as pd

    from .device import DeviceChoice

GiB = 2**30
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}  # bytes of one activation element
# optimizer state per parameter: fp32 m and v, 8-bit m and v; Muon keeps one fp32 momentum per hidden-matrix
# entry (`hidden_matrix_parameters`) and AdamW's 8 bytes for the rest (`optimizer_state_bytes`)
OPTIMIZER_BYTES = {"adamw": 8.0, "adamw8bit": 2.0, "muon": 4.0}

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
_TPU_V5E_NAMES = ("v5e", "v5 lite", "v5lite", "v5litepod")

# FLOP/s a device holds under sustained matrix-multiply load, where that is well below the datasheet peak. A T4
# is capped at 70 W: a loop of 4096^2 fp16 cuBLAS GEMMs settles at about 24 TFLOP/s, "due to power capping"
# (NVIDIA's developer forum, "About GPU peak performance", forums.developer.nvidia.com/t/264462), and free Colab
# T4s are reported at about 20 TFLOP/s (clocks held low). Projections use these, never the 65 TFLOP/s peak.
SUSTAINED_FLOPS: dict[str, dict[str, float]] = {"T4": {"fp16": 20e12}}

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


# ---------------------------------------------------------------- FLOPs


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
    if choice.backend == "xla" and any(k in name.lower() for k in _TPU_V5E_NAMES):
        return PEAK_FLOPS["v5e"].get(choice.precision)
    if choice.backend == "xla" and "CPU" in name.upper():
        return cpu_peak if cpu_peak is not None else cpu_peak_flops("fp32")
    for key, table in PEAK_FLOPS.items():
        if key in name:
            return table.get(choice.precision)
    return None


# ---------------------------------------------------------------- memory


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
                shards: int = 1, accelerator: bool = True) -> MemoryPlan:
    """Memory of one device: fp32 master weights, fp32 gradients, optimizer state, autocast copies, activations.

    `shards` > 1 divides weights, gradients and optimizer state (FSDP); `accelerator` adds FRAGMENTATION (5%) for
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
        "weights": 4.0 * n / shards,  # fp32 master weights; autocast computes in 16 bits from them
        "gradients": 4.0 * n / shards,
        "optimizer_state": optimizer_state_bytes(cfg, vocab_size, optimizer) / shards,
        # autocast's 16-bit copies of the matmul weights live from forward until backward has used them
        "autocast_copies": 2.0 * (n - parts["embed_in"]) / shards if mixed else 0.0,
        "activations": act * tokens,
        # the returned logits plus their fp32 gradient during backward
        "logits_transient": tokens * vocab_size * (PRECISION_BYTES[precision] + 4),
    }
    if accelerator:
        out["fragmentation"] = FRAGMENTATION * sum(out.values())
    return MemoryPlan(precision, optimizer, gradient_checkpointing, out)


def memory_grid(cfg: ModelConfig, vocab_size: int, batch_per_device: int, seq_len: int, attention: str = "sdpa",
                shards: int = 1, accelerator: bool = True, usable_bytes: float | None = None) -> pd.DataFrame:
    """GiB by part for fp32 / fp16 / bf16 x AdamW / 8-bit AdamW / Muon x with / without gradient checkpointing; `fits`
    when within PLAN_HEADROOM of `usable_bytes`."""
    import pandas as pd

    rows = []
    for precision in PRECISION_BYTES:
        for optimizer in OPTIMIZER_BYTES:
            for ckpt in (False, True):
                m = memory_plan(cfg, vocab_size, batch_per_device, seq_len, precision, optimizer, ckpt, attention,
                                shards, accelerator)
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
    if choice.backend == "xla" and any(k in choice.name.lower() for k in _TPU_V5E_NAMES):
        return float(DEVICE_MEMORY["v5e"])
    if choice.memory_bytes:
        return float(choice.memory_bytes)
    return float(next((v for k, v in DEVICE_MEMORY.items() if k in choice.name), 0))


def usable_memory(choice: DeviceChoice, processes: int = 1) -> float:
    """Bytes one device can give to the planned tensors: its memory less `reserve()`."""
    return device_memory(choice) - sum(reserve(choice, processes).values())


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """Everything the 03 notebook shows before (and after) training."""

    preset: str
    parameters: int
    vocab_size: int
    seq_len: int
    flops_per_token: float
    device: str
    devices: int
    precision: str
    optimizer: str
    gradient_checkpointing: bool
    batch_per_device: int
    memory: MemoryPlan
    usable_bytes: float  # the device's memory less `reserve`
    fits: bool  # within PLAN_HEADROOM of the usable memory
    verdict: str
    budget_tokens: int
    tokens_per_s: float | None
    throughput_source: str  # measured | projected at X% MFU | unknown
    session_minutes: float
    tokens_per_session: float | None
    sessions: int | None
    hours: float | None
    peak_flops_total: float | None
    model_config: ModelConfig  # resolved: every field filled from the preset
    attention: str  # sdpa | eager
    shards: int  # devices the weights and optimizer state are split over (FSDP), else 1
    accelerator: bool  # False on a CPU
    notes: tuple[str, ...] = field(default=())
    reserve: dict[str, float] = field(default_factory=dict)  # bytes held outside the planned tensors
    profile: str = ""
    assumed_mfu: float | None = None  # the stated share of `rate_flops` a projection assumes
    rate_flops: float | None = None  # FLOP/s of all devices a projection starts from: sustained where known, else peak
    weekly_hours: float | None = None  # the platform's accelerator hours a week (quota.weekly_quota)
    quota_text: str = ""  # that quota in words
    weeks: float | None = None  # training hours over the weekly quota
    quota_advice: str = ""  # in words, when the run needs more than a week of the quota: what to do instead

    def summary(self) -> dict[str, Any]:
        """The plan's headline figures as one JSON-able object (what `python -m nbhelpers plan --json` prints)."""
        mc = self.model_config
        return {
            "profile": self.profile, "preset": self.preset,
            "shape": {"hidden_size": mc.hidden_size, "num_hidden_layers": mc.num_hidden_layers,
                      "num_attention_heads": mc.num_attention_heads, "intermediate_size": mc.intermediate_size},
            "parameters": self.parameters, "vocab_size": self.vocab_size, "seq_len": self.seq_len,
            "tokens": self.budget_tokens, "flops_per_token": self.flops_per_token,
            "device": self.device, "devices": self.devices, "precision": self.precision,
            "optimizer": self.optimizer, "gradient_checkpointing": self.gradient_checkpointing,
            "batch_per_device": self.batch_per_device,
            "memory_GiB": round(self.memory.total / GiB, 2), "usable_GiB": round(self.usable_bytes / GiB, 2),
            "fits": self.fits, "verdict": self.verdict,
            "tokens_per_s": self.tokens_per_s, "throughput_source": self.throughput_source,
            "sustained_flops": self.rate_flops, "peak_flops": self.peak_flops_total, "assumed_mfu": self.assumed_mfu,
            "mfu_of_peak": (self.tokens_per_s * self.flops_per_token / self.peak_flops_total
                            if self.tokens_per_s and self.peak_flops_total else None),
            "training_hours": self.hours, "session_hours": self.session_minutes / 60, "sessions": self.sessions,
            "weekly_quota_hours": self.weekly_hours, "quota": self.quota_text, "weeks": self.weeks,
            "quota_advice": self.quota_advice,
            "notes": list(self.notes),
        }

    def grid(self) -> pd.DataFrame:
        """This plan's model and batch under every precision, optimizer and checkpointing choice (GiB)."""
        return memory_grid(self.model_config, self.vocab_size, self.batch_per_device, self.seq_len, self.attention,
                           self.shards, self.accelerator, self.usable_bytes)

    def rows(self) -> list[tuple[str, str]]:
        """(item, value) pairs in reading order."""
        gib = lambda b: f"{b / GiB:.2f} GiB"  # noqa: E731
        rows = [
            ("model", f"{self.preset}: {self.parameters:,} parameters (vocab {self.vocab_size:,})"),
            ("FLOPs per token", f"{self.flops_per_token:.3e}  (6N + 12*L*H*T at T={self.seq_len})"),
            ("device", f"{self.device} x{self.devices}, {self.precision}"),
            ("batch", f"{self.batch_per_device} x {self.seq_len} tokens per device per micro-step"),
        ]
        rows += [(f"memory: {k}", gib(v)) for k, v in self.memory.parts.items()]
        rows += [
            ("memory: total per device", gib(self.memory.total)),
            *((f"reserved: {k}", gib(v)) for k, v in self.reserve.items()),
            ("memory: usable per device", gib(self.usable_bytes)),
            ("verdict", self.verdict),
            ("token budget", f"{self.budget_tokens:,} tokens"),
        ]
        if self.tokens_per_s:
            rows += [
                ("throughput", f"{self.tokens_per_s:,.0f} tokens/s ({self.throughput_source})"),
                ("per session", f"{self.tokens_per_session:,.0f} tokens in {self.session_minutes:.0f} min"),
                ("sessions for the budget", f"{self.sessions} ({self.hours:,.1f} hours of training)"),
            ]
            if self.weeks is not None:
                rows.append(("calendar", f"{self.weeks:.1f} weeks of {self.quota_text}"))
            if self.quota_advice:
                rows.append(("more than a week", self.quota_advice))
        else:
            rows.append(("throughput", "unknown: measure it by training (the plan is redrawn after training)"))
        rows += [("note", n) for n in self.notes]
        return rows

    def to_frame(self) -> pd.DataFrame:
        """The plan as a two-column pandas table for the notebook."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=["item", "value"]).set_index("item")

    def to_markdown(self) -> str:
        """The plan as a markdown table."""
        lines = ["| item | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.rows()]
        return "\n".join(lines)


def batch_per_device(cfg: RunConfig, choice: DeviceChoice) -> int:
    """Sequences one device holds per micro-step: XLA SPMD splits the micro-batch over chips, DDP does not."""
    if choice.backend == "xla" and choice.num_devices > 1:
        return max(1, math.ceil(cfg.train.micro_batch / choice.num_devices))
    return cfg.train.micro_batch


def make_plan(cfg: RunConfig, vocab_size: int, choice: DeviceChoice, *, tokens_per_s: float | None = None,
              assumed_mfu: float | None = None, session_minutes: float | None = None,
              cpu_peak: float | None = None, processes: int | None = None) -> Plan:
    """Plan a run: memory verdict for `choice` and the sessions the token budget needs.

    Throughput is `tokens_per_s` when measured; otherwise, with `assumed_mfu`, it is projected from the
    devices' peak FLOP/s (and labelled as a projection). `session_minutes` defaults to train.max_minutes, or
    12 hours when that is 0. `processes` is the number of CUDA training processes (launch.resolve_nproc);
    by default the torchrun world size.
    """
    mc = resolve(cfg.model)
    seq_len = cfg.corpus.block_len
    n = parameter_breakdown(mc, vocab_size)["total"]
    fpt = flops_per_token(mc, vocab_size, seq_len)
    # devices that train: every chip under XLA SPMD (one process); on CUDA the torchrun ranks (WORLD_SIZE), since a
    # notebook kernel alone drives one GPU however many are visible
    ranks = processes or world_size()
    devices = {"xla": choice.num_devices, "cuda": ranks}.get(choice.backend, 1)
    shards = devices if (choice.backend == "xla" and cfg.train.fsdp) else 1
    bpd = batch_per_device(cfg, choice)
    attention = mc.attn_implementation if mc.attn_implementation != "auto" else choice.attn_implementation
    mem = memory_plan(mc, vocab_size, bpd, seq_len, choice.precision, cfg.train.optimizer,
                      cfg.train.gradient_checkpointing, attention, shards, accelerator=choice.backend != "cpu")
    held = reserve(choice, devices if choice.backend == "cuda" else 1)
    usable = device_memory(choice) - sum(held.values())
    ratio = mem.total / usable if usable > 0 else math.inf
    fits = ratio <= PLAN_HEADROOM
    share = f"{mem.total / GiB:.1f} of {usable / GiB:.1f} GiB usable ({ratio:.0%})"
    if fits:
        verdict = f"fits: {share}"
    elif ratio <= 1:
        verdict = (f"tight: {share}, above the {PLAN_HEADROOM:.0%} this planner allows for its own error; "
                   + _advice(cfg, choice))
    else:
        verdict = (f"does NOT fit: {mem.total / GiB:.1f} GiB needed, {usable / GiB:.1f} GiB usable; "
                   + _advice(cfg, choice))
    budget = cfg.corpus.token_budget or int(cfg.corpus.tokens_per_param * n)
    peak_one = peak_flops(choice, cpu_peak) if (tokens_per_s or assumed_mfu) else None
    peak_total = peak_one * devices if peak_one else None
    source = "unknown"
    rate_total = None
    if tokens_per_s:
        source = "measured in this run"
    elif assumed_mfu and peak_total:
        # the rate the device holds under load where known (a T4's power cap), else its datasheet peak
        held_rate = sustained_flops(choice)
        rate_total = held_rate * devices if held_rate else peak_total
        tokens_per_s = assumed_mfu * rate_total / fpt
        if held_rate:
            source = (f"projected at {assumed_mfu:.0%} of {_flops_text(rate_total)} sustained "
                      f"({_flops_text(peak_total)} datasheet peak: {assumed_mfu * rate_total / peak_total:.0%} MFU)")
        else:
            source = f"projected at {assumed_mfu:.0%} MFU of {_flops_text(peak_total)} peak"
    minutes = session_minutes or cfg.train.max_minutes or 12 * 60.0
    per_session = sessions = hours = weeks = None
    target = TARGETS.get(cfg.profile)
    weekly, quota_text = weekly_quota(target.platform, target.accelerator) if target else (None, "")
    if tokens_per_s:
        per_session = tokens_per_s * minutes * 60
        sessions = math.ceil(budget / per_session)
        hours = budget / tokens_per_s / 3600
        weeks = hours / weekly if weekly else None
    notes = []
    if choice.backend == "xla" and cfg.train.fsdp:
        notes.append(f"FSDP: weights, gradients and optimizer state sharded over {shards} devices")
    advice = ""
    if weeks is not None and weeks > 1:
        advice = (f"This run needs {hours:,.0f} training hours, {weeks:.1f} weeks of {quota_text}: more than a "
                  f"week. `python -m nbhelpers plan --profile {cfg.profile} --hours {weekly:g}` picks the model and "
                  f"token budget ({cfg.corpus.tokens_per_param:g} tokens per parameter) that finish within a week's "
                  "hours; put the model.preset it names in OVERRIDES (or --set).")
    return Plan(
        preset=mc.preset, parameters=n, vocab_size=vocab_size, seq_len=seq_len, flops_per_token=fpt,
        device=choice.name, devices=devices, precision=choice.precision, optimizer=cfg.train.optimizer,
        gradient_checkpointing=cfg.train.gradient_checkpointing, batch_per_device=bpd, memory=mem,
        usable_bytes=usable, fits=fits, verdict=verdict, budget_tokens=budget, tokens_per_s=tokens_per_s,
        throughput_source=source, session_minutes=minutes, tokens_per_session=per_session, sessions=sessions,
        hours=hours, peak_flops_total=peak_total, model_config=mc, attention=attention, shards=shards,
        accelerator=choice.backend != "cpu", notes=tuple(notes), reserve=held, profile=cfg.profile,
        assumed_mfu=None if source.startswith("measured") else assumed_mfu, rate_flops=rate_total,
        weekly_hours=weekly, quota_text=quota_text, weeks=weeks, quota_advice=advice,
    )


def _flops_text(flops: float) -> str:
    return f"{flops / 1e12:,.0f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:,.0f} GFLOP/s"


def _advice(cfg: RunConfig, choice: DeviceChoice) -> str:
    """What to change when the plan does not fit."""
    tips = []
    if not cfg.train.gradient_checkpointing:
        tips.append("train.gradient_checkpointing=true")
    if cfg.train.optimizer == "adamw" and choice.backend == "cuda":
        tips.append("train.optimizer=adamw8bit")
    if choice.backend == "xla" and not cfg.train.fsdp:
        tips.append("train.fsdp=true")
    if cfg.train.micro_batch > 1:
        tips.append(f"a smaller train.micro_batch (with a larger train.grad_accum) than {cfg.train.micro_batch}")
    tips.append("a smaller model.preset (the size dial dN: `python -m nbhelpers plan --hours H` picks one)")
    return "try " + ", ".join(tips)


# ---------------------------------------------------------------- planning for a profile's own hardware


@dataclass(frozen=True)
class Target:
    """The hardware a profile is made for, so a laptop can plan a T4 or TPU run."""

    platform: str  # kaggle | colab | local
    accelerator: str  # tpu | gpu | cpu
    device: DeviceChoice | None  # None: this machine (the smoke profile trains where it runs)
    processes: int  # CUDA training processes (DDP ranks)
    mfu: float  # the stated share of what the device sustains (a T4: 20 TFLOP/s; a TPU: its peak)
    goal_hours: float | None  # training hours the profile's default run must finish within


def _target_device(backend: str, name: str, precision: str, count: int, memory: int, attention: str,
                   capability: tuple[int, int] | None) -> DeviceChoice:
    from .device import DeviceChoice

    return DeviceChoice(backend=backend, device="xla" if backend == "xla" else "cuda:0", name=name,
                        precision=precision, use_grad_scaler=precision == "fp16", attn_implementation=attention,
                        num_devices=count, memory_bytes=memory, capability=capability,
                        reason="the profile's target hardware, planned without it")


_T4 = dict(backend="cuda", name="Tesla T4", precision="fp16", memory=DEVICE_MEMORY["T4"], attention="sdpa",
           capability=(7, 5))
# The goals: Colab's three 12-hour sessions; a week of Kaggle's 30 GPU hours; the TPU keeps the seed's model
# (about 42 hours, five 9-hour sessions). The MFUs are the stated assumptions, not measurements.
TARGETS: dict[str, Target] = {
    "colab_t4": Target("colab", "gpu", _target_device(count=1, **_T4), 1, 0.35, 36.0),
    "kaggle_t4x2": Target("kaggle", "gpu", _target_device(count=2, **_T4), 2, 0.35, 30.0),
    "kaggle_tpu_v5e8": Target("kaggle", "tpu", _target_device("xla", "XLA TPU v5 lite x8", "bf16", 8,
                                                               int(DEVICE_MEMORY["v5e"]), "eager", None), 1, 0.30, 45.0),
    "smoke": Target("local", "cpu", None, 1, 0.35, None),
}


def target_of(cfg: RunConfig) -> tuple[Target, DeviceChoice]:
    """The profile's Target and the device choice to plan on (this machine's for smoke or an unknown profile)."""
    from .device import select

    target = TARGETS.get(cfg.profile) or Target("local", "cpu", None, 1, 0.35, None)
    if target.device is None:
        return target, select(cfg.train)
    choice = target.device
    if cfg.train.precision not in ("auto", choice.precision):  # a --set train.precision the device runs
        choice = dataclasses.replace(choice, precision=cfg.train.precision,
                                     use_grad_scaler=cfg.train.precision == "fp16")
    return target, choice


def plan_profile(cfg: RunConfig, vocab_size: int | None = None, mfu_share: float | None = None,
                 choice: DeviceChoice | None = None, processes: int | None = None,
                 session_minutes: float | None = None, tokens_per_s: float | None = None) -> Plan:
    """The plan of `cfg` at the profile's stated MFU: what `python -m nbhelpers plan` prints and 03 shows.

    Without `choice` it plans on the profile's own hardware (TARGETS) with the platform's session length, so it
    runs on any machine; 03 passes the device it trains on, its processes and what is left of the session.
    The vocabulary is the tokenizer's: `tokenizer.vocab_size` unless given.
    """
    from .platform import SESSION_LIMIT_MINUTES

    target, target_choice = target_of(cfg) if choice is None else (TARGETS.get(cfg.profile), choice)
    if choice is None:
        choice, processes = target_choice, target.processes
        session_minutes = session_minutes or SESSION_LIMIT_MINUTES.get((target.platform, target.accelerator))
    mfu_share = mfu_share or (target.mfu if target else 0.35)
    return make_plan(cfg, vocab_size or cfg.tokenizer.vocab_size, choice, tokens_per_s=tokens_per_s,
                     assumed_mfu=mfu_share, session_minutes=session_minutes or None, processes=processes)


def with_depth(cfg: RunConfig, depth: int) -> RunConfig:
    """`cfg` with the size dial's shape dN (the preset's numbers, no per-field override) and a budget of
    corpus.tokens_per_param tokens per parameter."""
    from .config import validate

    model = ModelConfig(preset=f"d{depth}", attn_implementation=cfg.model.attn_implementation)
    return validate(dataclasses.replace(cfg, model=model, corpus=dataclasses.replace(cfg.corpus, token_budget=0)))


@dataclass(frozen=True)
class ShapeChoice:
    """What `--hours H` picked: the plan of the chosen shape and of its nearest neighbours on the dial."""

    hours: float
    chosen: Plan | None  # None when even the smallest shape takes longer than `hours`
    nearest: tuple[Plan, ...]

    @property
    def overrides(self) -> list[str]:
        """The --set / OVERRIDES entries that select the chosen shape and budget."""
        return [f"model.preset={self.chosen.preset}", "corpus.token_budget=0"] if self.chosen else []

    def rows(self) -> list[dict[str, Any]]:
        """One row per shape: preset, parameters, tokens, hours, sessions, fits, chosen."""
        return [{"preset": p.preset, "parameters": p.parameters, "tokens": p.budget_tokens,
                 "training_hours": round(p.hours, 1) if p.hours is not None else None, "sessions": p.sessions,
                 "fits": p.fits, "chosen": self.chosen is not None and p.preset == self.chosen.preset}
                for p in self.nearest]


def choose_shape(cfg: RunConfig, hours: float, vocab_size: int | None = None,
                 mfu_share: float | None = None) -> ShapeChoice:
    """The largest dN whose Chinchilla budget trains within `hours` on the profile's hardware and fits its memory
    with the profile's batch, and the four shapes nearest it."""
    from .config import DEPTHS

    if hours <= 0:
        raise ValueError(f"--hours: expected a positive number of training hours, got {hours}")
    plans = [plan_profile(with_depth(cfg, d), vocab_size, mfu_share) for d in DEPTHS]
    if any(p.hours is None for p in plans):
        raise ValueError(f"profile {cfg.profile}: no throughput to project from, so no shape can be chosen by hours")
    within = [i for i, p in enumerate(plans) if p.fits and p.hours <= hours]
    best = within[-1] if within else None
    centre = best if best is not None else 0
    lo = max(0, min(centre - 2, len(plans) - 4))
    return ShapeChoice(hours, plans[best] if best is not None else None, tuple(plans[lo:lo + 4]))


def finish_table(vocab_size: int | None = None) -> str:
    """The README's "which model can I finish" table: each real profile's default and the seed's model."""
    lines = ["| profile | model | parameters | tokens | training hours | sessions | weeks of the free quota | fits |",
             "|---|---|---|---|---|---|---|---|"]
    for name, target in TARGETS.items():
        if target.goal_hours is None:
            continue
        cfg = load_profile(name)
        rows = [("default", cfg)]
        if cfg.model.preset != "seed_1b":
            rows.append(("seed", load_profile(name, SEED_OVERRIDES)))
        for label, c in rows:
            p = plan_profile(c, vocab_size)
            lines.append(f"| `{name}` ({label}) | {p.preset} | {p.parameters / 1e6:,.0f}M | "
                         f"{p.budget_tokens / 1e9:,.2f}B | {p.hours:,.1f} | {p.sessions} of "
                         f"{p.session_minutes / 60:g} h | {p.weeks:.1f} | {'yes' if p.fits else 'no'} |")
    return "\n".join(lines)


# The seed's 776M model on a T4 profile: the preset plus the recomputation that makes its activations fit.
SEED_OVERRIDES = ("model.preset=seed_1b", "train.gradient_checkpointing=true")


def load_profile(name: str, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """config.load, kept here so the table reads in one place."""
    from .config import load

    return load(name, list(overrides))
