"""Learning-rate schedules at equal tokens on real Japanese text: WSD against cosine, and a stopped run finished.

    nice python bench/schedules.py                       # two seeds, 500k tokens a full run (about 15 min, 2 cores)
    python bench/schedules.py --seeds 0 --tokens 150000  # a quick look

The data, tokenizer, model (`tiny`), held-out scoring and the profile's recipe are bench/learning_efficiency.py's
(one file of Debian's Japanese documentation is one document; every tenth held out whole). Each arm runs through
`nbhelpers.loop.train` on the CPU, once per seed (a seed sets the initial weights and the data order):

- `cosine`: warmup, then cosine to lr * min_lr_ratio over T steps (T from `--tokens`).
- `wsd`: `train.schedule=wsd`, warmup, constant, then the 1-sqrt decay over the last 20% of the same T steps.
  (a) compares these two at equal tokens: the target is a held-out loss within 1% of cosine's.
- `wsd_stop_finish`: wsd planned for T steps, stopped at `--stop` x T (still constant at the peak; a checkpoint
  there), then run again with `train.finish=true`: the decay over the next 20% x the steps so far (0.72 T in all
  with the default 0.6).
- `cosine_short`: cosine planned for exactly the finished run's steps, the best a user knowing the stop in
  advance could do. (b) compares these two over the same total tokens.

Printed: each arm's final held-out loss and bits per byte per seed and their mean, the ratios of (a) and (b), and
the stopped run's held-out loss just before its finish (what a user holding the un-annealed model has).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # learning_efficiency.py, beside this file

from learning_efficiency import Data, cpu_choice, prepare  # noqa: E402

from nbhelpers import config, loop  # noqa: E402
from nbhelpers.batches import ArrayBlocks, PackedBatches  # noqa: E402
from nbhelpers.model import build_model, count_parameters  # noqa: E402

ARMS = ("cosine", "wsd", "wsd_stop_finish", "cosine_short")


class _Stop(Exception):
    """The session ends (a disconnect, the user)."""


class _StopAfter(loop.Hooks):
    """Plain hooks that end the session after `steps` optimizer steps."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    def after_optimizer_step(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _Stop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="smoke", help="whose train recipe (lr, warmup, optimizer, ...)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--tokens", type=int, default=500_000, help="training tokens of a full (T-step) run")
    p.add_argument("--stop", type=float, default=0.6, help="where the stopped run stops, as a share of T")
    p.add_argument("--decay-fraction", type=float, default=0.2)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--evals", type=int, default=8, help="held-out evaluations per full run")
    p.add_argument("--heldout-blocks", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--work", default="", help="cache for the tokenizer and blocks (default: temporary)")
    p.add_argument("--arms", default=",".join(ARMS), help="which arms to train (others are read from --work's cache)")
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def train_config(args: argparse.Namespace, seed: int, steps: int, schedule: str, every: int) -> config.TrainConfig:
    """The profile's recipe on the CPU with this schedule, `steps` steps, an evaluation every `every`."""
    base = config.load(args.profile).train
    return dataclasses.replace(
        base, backend="cpu", precision="fp32", micro_batch=args.micro_batch, grad_accum=1, schedule=schedule,
        decay_fraction=args.decay_fraction, max_steps=steps, eval_every=every, eval_batches=0, save_every=0,
        keep_last=1, log_every=every, max_minutes=0.0, save_minutes=0.0, eval_minutes=0.0,
        gradient_checkpointing=False, compile=False, seed=seed, sample_prompts=())


def run(args: argparse.Namespace, data: Data, name: str, seed: int, steps: int, stop: int | None,
        every: int, work: Path) -> dict[str, Any]:
    """One arm, one seed: trains (stopping at `stop` and finishing, for the stopped arm); the held-out figures."""
    out = work / f"{name}-{seed}"
    shutil.rmtree(out, ignore_errors=True)
    schedule = "cosine" if name.startswith("cosine") else "wsd"

    def session(cfg: config.TrainConfig, hooks: loop.Hooks | None = None) -> loop.TrainResult:
        model = build_model(config.ModelConfig(preset=args.preset), len(data.tokenizer), tokenizer=data.tokenizer,
                            seed=seed)
        train = PackedBatches(ArrayBlocks(data.train), cfg.micro_batch, seed=seed)
        held = PackedBatches(ArrayBlocks(data.heldout[: args.heldout_blocks]), cfg.micro_batch, shuffle=False)
        return loop.train(model, train, cfg, out, eval_batches={"heldout": held}, tokenizer=data.tokenizer,
                          device_choice=cpu_choice(), progress=False, hooks=hooks)

    started = time.perf_counter()
    cfg = train_config(args, seed, steps, schedule, every)
    before = None
    if stop is None:
        result = session(cfg)
    else:
        with contextlib.suppress(_Stop):  # a checkpoint at the stop, then the session ends
            session(dataclasses.replace(cfg, save_every=stop), _StopAfter(stop))
        # what the user holds at the stop: the un-annealed model, scored the same way (an eval-only "run")
        before = _score(args, data, out / "checkpoints", seed)
        result = session(dataclasses.replace(cfg, finish=True))
    records = loop.read_metrics(result.metrics_path)
    evals = [r for r in records if r.get("kind") == "eval"]
    lrs = {r["step"]: r["lr"] for r in records if r.get("kind") == "train"}
    shutil.rmtree(out, ignore_errors=True)
    return {"arm": name, "seed": seed, "steps": result.step, "tokens": result.step * args.micro_batch * args.block,
            "loss": evals[-1]["loss"], "bpb": evals[-1]["bpb"], "loss_at_stop": before,
            "curve": [(r["step"], r["loss"]) for r in evals], "last_lr": lrs[max(lrs)],
            "seconds": time.perf_counter() - started}


def _score(args: argparse.Namespace, data: Data, root: Path, seed: int) -> float:
    """Held-out loss of the newest checkpoint under `root` (the loop's own evaluation, no training step)."""
    from nbhelpers import checkpoint

    model = build_model(config.ModelConfig(preset=args.preset), len(data.tokenizer), tokenizer=data.tokenizer, seed=seed)
    checkpoint.load_weights(checkpoint.latest(root), model)
    model.eval()
    held = PackedBatches(ArrayBlocks(data.heldout[: args.heldout_blocks]), args.micro_batch, shuffle=False)
    total = count = 0.0
    with torch.no_grad():
        for i in range(len(held)):
            mb = held.batch(i)
            total += float(model(**mb, num_items_in_batch=1).loss)
            count += int((mb["labels"][:, 1:] != -100).sum())
    return total / count


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    load_start = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"# schedules: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; load average at start {' '.join(load_start)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="schedules_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = prepare(argparse.Namespace(vocab=args.vocab, block=args.block), work)
        steps = max(1, args.tokens // (args.micro_batch * args.block))
        stop = max(1, round(args.stop * steps))
        short = stop + max(1, round(args.decay_fraction * stop))
        every = max(1, steps // args.evals)
        params = count_parameters(build_model(config.ModelConfig(preset=args.preset), len(data.tokenizer)))
        print(f"# model {args.preset} ({params:,} parameters), recipe of {args.profile} "
              f"({config.load(args.profile).train.optimizer}); T = {steps} steps of {args.micro_batch} x {args.block}; "
              f"stopped at {stop}, finished at {short}", flush=True)
        runs = []
        for seed in seeds:
            for name, n, at in (("cosine", steps, None), ("wsd", steps, None), ("wsd_stop_finish", steps, stop),
                                ("cosine_short", short, None)):
                key = hashlib.sha1(json.dumps([name, seed, n, at, every, args.profile, args.preset, args.block,
                                               args.micro_batch, args.decay_fraction, args.heldout_blocks,
                                               data.stats, torch.__version__]).encode()).hexdigest()[:12]
                cached = work / "runs" / f"{name}-{seed}-{key}.json"  # a finished arm is not trained again
                if name not in args.arms.split(",") and not cached.exists():
                    continue  # neither asked for nor in the cache
                if cached.exists():
                    r = json.loads(cached.read_text())
                else:
                    r = run(args, data, name, seed, n, at, every, work)
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    cached.write_text(json.dumps(r))
                runs.append(r)
                extra = f", {r['loss_at_stop']:.4f} at the stop before finishing" if r["loss_at_stop"] else ""
                print(f"  {name:<16} seed {seed}: {r['steps']} steps, held-out loss {r['loss']:.4f}, bpb "
                      f"{r['bpb']:.4f}, last lr {r['last_lr']:.2e}{extra} ({r['seconds']:.0f} s)", flush=True)
    load_end = Path("/proc/loadavg").read_text().split()[:3] if load_start else []

    def mean(arm: str, key: str = "loss") -> float:
        return statistics.mean(r[key] for r in runs if r["arm"] == arm)

    def per_seed(arm: str, key: str = "loss") -> str:
        return "/".join(f"{r[key]:.4f}" for r in runs if r["arm"] == arm)

    def ratio(arm: str, base: str) -> tuple[float | None, list[float]]:
        """Mean-loss ratio - 1 over the seeds both arms ran, and each seed's."""
        loss = {(r["arm"], r["seed"]): r["loss"] for r in runs}
        both = [sd for sd in seeds if (arm, sd) in loss and (base, sd) in loss]
        if not both:
            return None, []
        mean_ratio = statistics.mean(loss[arm, sd] for sd in both) / statistics.mean(loss[base, sd] for sd in both)
        return mean_ratio - 1.0, [loss[arm, sd] / loss[base, sd] - 1.0 for sd in both]

    print("\n| arm | steps | held-out loss (mean) | per seed | bpb (mean) | per seed |\n|---|---|---|---|---|---|")
    for arm in ARMS:
        if any(r["arm"] == arm for r in runs):
            n = next(r["steps"] for r in runs if r["arm"] == arm)
            print(f"| {arm} | {n} | {mean(arm):.4f} | {per_seed(arm)} | {mean(arm, 'bpb'):.4f} | "
                  f"{per_seed(arm, 'bpb')} |")
    a, a_seeds = ratio("wsd", "cosine")
    b, b_seeds = ratio("wsd_stop_finish", "cosine_short")
    if a is not None:
        print(f"(a) wsd vs cosine at equal tokens: {a:+.2%} held-out loss (per seed "
              f"{'/'.join(f'{x:+.2%}' for x in a_seeds)}; target, at most 1% above cosine: {'met' if a <= 0.01 else 'NOT met'})")
    if b is not None:
        print(f"(b) stopped at {args.stop:.0%} and finished vs cosine over the same {short} steps: {b:+.2%} (per seed "
              f"{'/'.join(f'{x:+.2%}' for x in b_seeds)}; un-annealed at the stop: "
              f"{mean('wsd_stop_finish', 'loss_at_stop'):.4f}, finished: {mean('wsd_stop_finish'):.4f})")
    print(f"# load average at end {' '.join(load_end)}")
    report = {"args": vars(args), "data": data.stats, "params": params, "steps": steps, "stop": stop, "short": short,
              "runs": runs, "a": a, "b": b, "load_start": load_start, "load_end": load_end}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
