"""What the live loss curve (plots.LiveCurve, 03/04's `train_stage(live=True)`) costs a training step.

    nice python bench/live_curve.py [--steps 60] [--eval-every 10] [--rounds 3]

The `smoke` model trains on random blocks through `nbhelpers.loop.train` on the CPU, with and without the curve
(drawn and saved as a PNG at each evaluation, as in a notebook, whose display handle update is only a message
to the front end), the two taking turns in rounds. Printed: the median seconds of a training step with and
without (steps that ran an evaluation left out: the curve is drawn only there), and the seconds each redraw took
beside each evaluation's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nbhelpers import config, loop
from nbhelpers.batches import ArrayBlocks, PackedBatches
from nbhelpers.device import DeviceChoice
from nbhelpers.model import build_model
from nbhelpers.plots import LiveCurve


class _Clock(loop.Hooks):
    """Plain hooks that note when each optimizer step ended."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def after_optimizer_step(self) -> None:
        self.ends.append(time.perf_counter())


def one_run(out: Path, args: argparse.Namespace, live: bool) -> tuple[list[float], list[float], int]:
    """(step seconds without an evaluation in them, redraw seconds, evaluations) of one training run."""
    vocab, block = 3000, 128
    rng = np.random.default_rng(0)
    blocks = rng.integers(5, vocab, (args.steps * 8 + 64, block)).astype(np.uint16)
    cfg = config.TrainConfig(backend="cpu", precision="fp32", micro_batch=8, grad_accum=1, lr=2e-3, warmup_steps=5,
                             max_steps=args.steps, eval_every=args.eval_every, eval_batches=4, save_every=0,
                             log_every=args.eval_every, sample_prompts=(), seed=0)
    model = build_model(config.ModelConfig(preset="smoke"), vocab, seed=0)
    curve = LiveCurve(out / loop.METRICS_FILE, png=out / "live.png") if live else None
    clock = _Clock()
    choice = DeviceChoice(backend="cpu", device="cpu", name="CPU", precision="fp32", use_grad_scaler=False,
                          attn_implementation="sdpa", num_devices=1, memory_bytes=0, capability=None, reason="bench")
    evals = {"val": PackedBatches(ArrayBlocks(blocks[-64:]), 8, shuffle=False)}
    loop.train(model, PackedBatches(ArrayBlocks(blocks[:-64]), 8, seed=0), cfg, out, eval_batches=evals,
               device_choice=choice, hooks=clock, progress=False, on_eval=curve)
    steps = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    # step i+1's interval holds the logging and evaluation of step i+1 when (i + 1) % eval_every == 0: left out
    plain = [s for i, s in enumerate(steps, start=2) if (i - 1) % args.eval_every]
    evals_done = [r for r in loop.read_metrics(out / loop.METRICS_FILE) if r.get("kind") == "eval"]
    return plain, (curve.draw_s if curve else []), len(evals_done)


def after_a_draw(rounds: int, metrics: Path) -> None:
    """Whether a redraw leaves the process slower: median step of the smoke model before a draw, right after, later."""
    import torch

    model = build_model(config.ModelConfig(preset="smoke"), 3000, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(5, 3000, (8, 128))

    def median_step(n: int) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    median_step(3)
    for r in range(rounds):
        before = median_step(10)
        LiveCurve(metrics, png=metrics.with_name("probe.png")).update()
        right_after, later = median_step(10), median_step(10)
        print(f"round {r}: median step {before * 1e3:.0f} ms before a redraw, {right_after * 1e3:.0f} ms right "
              f"after, {later * 1e3:.0f} ms later", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--after-draw", action="store_true", help="only: is a step slower after a redraw (one process)")
    args = p.parse_args(argv)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"# live curve: load average at start {' '.join(load)}", flush=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    draws: list[float] = []
    with tempfile.TemporaryDirectory(prefix="live_curve_") as tmp:
        if args.after_draw:
            args.steps, args.eval_every = 10, 5
            one_run(Path(tmp) / "metrics", args, False)  # a metrics.jsonl with evaluations to draw
            after_a_draw(args.rounds, Path(tmp) / "metrics" / loop.METRICS_FILE)
            return 0
        for r in range(args.rounds):
            for live in ((False, True) if r % 2 == 0 else (True, False)):
                plain, drawn, _ = one_run(Path(tmp) / f"{r}-{live}", args, live)
                times[live] += plain
                draws += drawn
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"median step: {off * 1e3:.1f} ms without the curve, {on * 1e3:.1f} ms with it ({on / off - 1:+.1%}; "
          f"{len(times[False])} / {len(times[True])} steps without an evaluation in them)")
    print(f"each redraw (read metrics.jsonl, draw, save the PNG): median {statistics.median(draws) * 1e3:.0f} ms "
          f"over {len(draws)} evaluations, once per {args.eval_every} steps")
    load = Path("/proc/loadavg").read_text().split()[:3] if load else []
    print(f"# load average at end {' '.join(load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
