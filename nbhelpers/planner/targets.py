"""The hardware each profile is made for (Target, TARGETS), so a laptop can plan a T4 or TPU run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import RunConfig
from .memory import DEVICE_MEMORY

if TYPE_CHECKING:
    from ..device import DeviceChoice


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
    from ..device import DeviceChoice

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
    from ..device import select

    target = TARGETS.get(cfg.profile) or Target("local", "cpu", None, 1, 0.35, None)
    if target.device is None:
        return target, select(cfg.train)
    choice = target.device
    if cfg.train.precision not in ("auto", choice.precision):  # a --set train.precision the device runs
        choice = dataclasses.replace(choice, precision=cfg.train.precision,
                                     use_grad_scaler=cfg.train.precision == "fp16")
    return target, choice
