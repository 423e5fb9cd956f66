"""The plan of one run on one device: memory by part, throughput, steps, hours and sessions for the token budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import ModelConfig, RunConfig
from ..dist import world_size
from ..model import parameter_breakdown, resolve
from ..quota import weekly_quota
from .flops import flops_per_token, peak_flops, sustained_flops
from .memory import PLAN_HEADROOM, GiB, MemoryPlan, device_memory, memory_grid, memory_plan, reserve
from .targets import TARGETS

if TYPE_CHECKING:
    import pandas as pd

    from ..device import DeviceChoice

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
    fsdp_devices: int  # devices the weights and optimizer state are split over (FSDP), else 1
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
                           self.fsdp_devices, self.accelerator, self.usable_bytes)

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
    fsdp_devices = devices if (choice.backend == "xla" and cfg.train.fsdp) else 1
    bpd = batch_per_device(cfg, choice)
    attention = mc.attn_implementation if mc.attn_implementation != "auto" else choice.attn_implementation
    mem = memory_plan(mc, vocab_size, bpd, seq_len, choice.precision, cfg.train.optimizer,
                      cfg.train.gradient_checkpointing, attention, fsdp_devices, accelerator=choice.backend != "cpu")
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
        notes.append(f"FSDP: weights, gradients and optimizer state sharded over {fsdp_devices} devices")
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
        hours=hours, peak_flops_total=peak_total, model_config=mc, attention=attention, fsdp_devices=fsdp_devices,
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


