"""Plans for a profile's own hardware (its target device), the size dial's `--hours` choice and the finish table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import ModelConfig, RunConfig
from .plan import Plan, make_plan
from .targets import TARGETS, target_of

if TYPE_CHECKING:

    from ..device import DeviceChoice

def plan_profile(cfg: RunConfig, vocab_size: int | None = None, mfu_share: float | None = None,
                 choice: DeviceChoice | None = None, processes: int | None = None,
                 session_minutes: float | None = None, tokens_per_s: float | None = None) -> Plan:
    """The plan of `cfg` at the profile's stated MFU: what `python -m nbhelpers plan` prints and 03 shows.

    Without `choice` it plans on the profile's own hardware (TARGETS) with the platform's session length, so it
    runs on any machine; 03 passes the device it trains on, its processes and what is left of the session.
    The vocabulary is the tokenizer's: `tokenizer.vocab_size` unless given.
    """
    from ..platform import SESSION_LIMIT_MINUTES

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
    from ..config import validate

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
    from ..config import DEPTHS

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
    """docs/TRAINING.md's "which model can I finish" table: each real profile's default and the seed's model."""
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
    from ..config import load

    return load(name, list(overrides))
