"""A CPU unlike ours and a host that is shared: Muon's cost on this CPU, and training beside a busy process.

    python bench/shared_host.py                     # both parts, the smoke profile's model and batch
    python bench/shared_host.py --rounds 9 --trial-s 4

Part 1, in one process (OpenMP waiting passively, as nbhelpers sets it): one training step (forward, backward, optimizer) of the smoke profile's model on its
micro-batch, with AdamW and with Muon, the Newton-Schulz iteration in the type `device.cpu_matmul_probe` chose for
this CPU and in the other one. The steps take turns (AdamW, Muon chosen, Muon other, again), so load on a shared
host hits all alike; medians of `--rounds`.

Part 2, in child processes: AdamW training steps for `--trial-s` seconds, tokens/s, with the trainer's intra-op
threads at all cores and OpenMP's default (spinning) waits, at cores - 1 (what `stream.trainer_threads` leaves
when torch was loaded before nbhelpers), and at all cores with passive waits (what nbhelpers sets), each quiet and
beside one busy process (a Python loop at normal priority, as another notebook's work or a producer at full speed
would be). The six conditions take turns; medians of `--rounds`.

Part 3: the corpus workers' start, fork against the fork server they now use (2 workers, first answers).

The last lines are

    muon_over_adamw=... (ns dtype) muon_other_over_adamw=... (other dtype)
    [SETTING] busy_over_quiet=... quiet_over_default=...   (per setting; default: all cores, spinning waits)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nbhelpers  # noqa: E402, I001, F401 - before torch, as a notebook's setup cell: OpenMP's passive waits take

import torch  # noqa: E402

from nbhelpers import config, device, optim  # noqa: E402
from nbhelpers.model import build_model  # noqa: E402

BUSY = "while True: pass"  # one core taken, at normal priority


def _setup(optimizer: str, seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    """The smoke profile's model, `optimizer` as 03 builds it, and a fixed micro-batch."""
    cfg = config.load("smoke", [f"train.optimizer={optimizer}"])
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.tokenizer.vocab_size)
    opt = optim.build_optimizer(model, cfg.train, "cpu")
    ids = torch.randint(3, cfg.tokenizer.vocab_size, (cfg.train.micro_batch, cfg.corpus.block_len))
    return model, opt, ids


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor) -> float:
    """Seconds of one training step."""
    start = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def optimizer_ratio(rounds: int) -> dict[str, float]:
    """Median step seconds: AdamW, Muon in the probe's type, Muon in the other type (interleaved)."""
    probe = device.cpu_matmul_probe()
    print(f"probe: {probe.reason}")
    chosen = optim.newton_schulz_dtype("fp32", "cpu")
    other = torch.float32 if chosen == torch.bfloat16 else torch.bfloat16
    runs = {"adamw": _setup("adamw"), "muon": _setup("muon"), "muon_other": _setup("muon")}
    runs["muon_other"][1]._muon.ns_dtype = other
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds + 2):
        for name, (model, opt, ids) in runs.items():
            t = _step(model, opt, ids)
            if r >= 2:  # the first two: allocator and kernel warm-up
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"step seconds (median of {rounds}, {torch.get_num_threads()} threads): "
          + ", ".join(f"{k} {v:.4f}" for k, v in med.items()))
    print(f"muon_over_adamw={med['muon'] / med['adamw']:.2f} ({str(chosen).replace('torch.', '')}) "
          f"muon_other_over_adamw={med['muon_other'] / med['adamw']:.2f} ({str(other).replace('torch.', '')})")
    return med


def trial(threads: int, seconds: float) -> float:
    """In a child: AdamW steps for `seconds` on `threads` intra-op threads; tokens per second."""
    torch.set_num_threads(threads)
    model, opt, ids = _setup("adamw")
    for _ in range(2):
        _step(model, opt, ids)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _step(model, opt, ids)
        steps += 1
    return steps * ids.numel() / (time.perf_counter() - start)


def _run_trial(threads: int, seconds: float, busy: bool, passive: bool) -> float:
    """One trial in a fresh process (its thread pool sized from the start), beside a busy process or not."""
    spinner = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # unset: OpenMP's spinning default
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        out = subprocess.run([sys.executable, __file__, "--trial", str(threads), "--trial-s", str(seconds)],
                             capture_output=True, text=True, check=True, env=env)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return float(out.stdout.strip().splitlines()[-1])


def busy_ratio(rounds: int, seconds: float) -> dict[tuple[str, bool], float]:
    """Median tokens/s of AdamW training per thread setting, quiet vs beside a busy process."""
    cores = os.cpu_count() or 1
    leave = max(1, cores - 1)
    settings = {f"{cores} threads": (cores, False), f"{leave} threads": (leave, False),
                f"{cores} threads, OMP_WAIT_POLICY=PASSIVE": (cores, True)}
    got: dict[tuple[str, bool], list[float]] = {(k, b): [] for k in settings for b in (False, True)}
    for _ in range(rounds):
        for name, busy in got:
            got[(name, busy)].append(_run_trial(settings[name][0], seconds, busy, settings[name][1]))
    med = {c: statistics.median(v) for c, v in got.items()}
    for (name, busy), v in med.items():
        print(f"{name}, {'beside a busy process' if busy else 'quiet'}: {v:,.0f} tokens/s "
              f"(runs: {', '.join(f'{x:,.0f}' for x in got[(name, busy)])})")
    base = med[(f"{cores} threads", False)]
    print(" ".join(f"[{name}] busy_over_quiet={med[(name, True)] / med[(name, False)]:.3f} "
                   f"quiet_over_default={med[(name, False)] / base:.3f}" for name in settings))
    return med


WORKERS_START = """
import multiprocessing, sys, time
from nbhelpers.corpus.mixing import _init_pool_worker  # the parent has the package imported, as a build does
from nbhelpers.corpus.workers import WorkerPool, worker_context
ctx = multiprocessing.get_context("fork") if sys.argv[1] == "fork" else worker_context()
start = time.perf_counter()
with WorkerPool(ctx, 2, initializer=_init_pool_worker, initargs=(None, None)) as pool:
    [pool.apply_async(abs, (-i,)).get() for i in range(2)]
    print(time.perf_counter() - start)
"""


def workers_start(rounds: int) -> dict[str, float]:
    """Median seconds from starting 2 corpus workers to their first answers: fork against the fork server."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")) if p))
    got: dict[str, list[float]] = {"fork": [], "forkserver": []}
    for _ in range(rounds):
        for method in got:
            out = subprocess.run([sys.executable, "-c", WORKERS_START, method], capture_output=True, text=True,
                                 check=True, env=env)
            got[method].append(float(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(v) for k, v in got.items()}
    print("workers' start (2 workers, first answers): " + ", ".join(f"{k} {v:.3f} s" for k, v in med.items()))
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trial-s", type=float, default=3.0)
    ap.add_argument("--part", choices=("all", "optimizer", "busy", "workers"), default="all")
    ap.add_argument("--trial", type=int, default=0, help=argparse.SUPPRESS)  # a child's thread count
    args = ap.parse_args()
    if args.trial:
        print(trial(args.trial, args.trial_s))
        return
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}, {os.cpu_count()} cores; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; load average {os.getloadavg()[0]:.1f}")
    if args.part in ("all", "optimizer"):
        optimizer_ratio(args.rounds * 4)
    if args.part in ("all", "busy"):
        busy_ratio(args.rounds, args.trial_s)
    if args.part in ("all", "workers"):
        workers_start(args.rounds)


if __name__ == "__main__":
    main()
