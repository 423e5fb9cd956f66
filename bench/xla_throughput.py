"""The loop on torch_xla's CPU PJRT device: tokens/s, compiles and host syncs, attention kernels, v5e-8 projection.

    PJRT_DEVICE=CPU python bench/xla_throughput.py                  # in the XLA environment
    PJRT_DEVICE=CPU python bench/train_throughput.py --backend xla  # the same, through the shared bench

Three parts, in one process:

1. Attention and host syncs: transformers' GPT-NeoX with SDPA or eager attention, with and without an
   explicit all-ones attention_mask, trained on the XLA device; per step after warm-up: device-to-host
   transfers, host scalar reads, graph executions and new compilations (torch_xla.debug.metrics).
2. Throughput: our loop (`loop.train`) on XLA against the same loop eagerly on the CPU, same model, data
   and batch, rounds alternating. Each run trains 2 x `--steps` steps logging every `--steps`: the first
   window holds the compilations, the second is the steady state (its tokens/s is the loop's own figure,
   which waits for the device at the logging read).
3. Projection for Kaggle's TPU v5e-8 (8 chips, 197 TFLOP/s bf16 each): seed_1b at 512 tokens, tokens/s and
   hours for the Chinchilla budget at stated MFU assumptions. A projection, not a measurement.

The last line: xla_tokens_per_s=... cpu_tokens_per_s=... ratio=... compiles_first_run=... compiles_steady=...
host_transfers_per_step=... (medians over rounds; compiles_steady is the largest of any round)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when run as a script

from nbhelpers import loop, xla  # noqa: E402
from nbhelpers.batches import ArrayBlocks, PackedBatches  # noqa: E402
from nbhelpers.config import ModelConfig, TrainConfig  # noqa: E402
from nbhelpers.device import DeviceChoice  # noqa: E402
from nbhelpers.model import build_model, count_parameters  # noqa: E402
from nbhelpers.planner import flops_per_token  # noqa: E402

V5E_PEAK_BF16 = 197e12  # FLOP/s per v5e chip (Google's published bf16 peak)
V5E_CHIPS = 8
MFU_ASSUMPTIONS = (0.30, 0.40, 0.50)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="steps per window (a warm-up window, then a timed one)")
    p.add_argument("--rounds", type=int, default=3, help="XLA / CPU pairs, alternating")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    return p.parse_args(argv)


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(preset="tiny", hidden_size=args.hidden, num_hidden_layers=args.layers,
                       num_attention_heads=args.heads, intermediate_size=args.intermediate,
                       max_position_embeddings=max(args.seq, 128))


def device_choice(backend: str) -> DeviceChoice:
    """fp32 on both sides: the CPU PJRT device is for checking graphs, and fp32 keeps the sides comparable."""
    return DeviceChoice(backend=backend, device="xla" if backend == "xla" else "cpu", name=f"{backend} bench",
                        precision="fp32", use_grad_scaler=False,
                        attn_implementation="eager" if backend == "xla" else "sdpa",
                        num_devices=xla.device_info()[1] if backend == "xla" else 1, memory_bytes=0,
                        capability=None, reason="bench")


def token_blocks(args: argparse.Namespace, n_blocks: int) -> np.ndarray:
    """Random token blocks (n_blocks, seq) uint16: throughput does not depend on what the tokens say."""
    return np.random.default_rng(0).integers(0, args.vocab, size=(n_blocks, args.seq), dtype=np.uint16)


# ---------------------------------------------------------------- 1. attention and host syncs


def attention_syncs(args: argparse.Namespace, attn: str, mask: bool, backend: xla.XlaBackend) -> dict[str, float]:
    """Per-step counters of a plain forward / backward / AdamW step on XLA after `--steps` warm-up steps."""
    model = build_model(model_config(args), args.vocab, seed=0)
    model.config._attn_implementation = attn
    model = backend.prepare_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    blocks = torch.from_numpy(token_blocks(args, args.micro_batch).astype(np.int64))  # (B, T)
    batch = {"input_ids": blocks, "labels": blocks.clone()}
    if mask:
        batch["attention_mask"] = torch.ones_like(blocks)
    batch = backend.to_device(batch)

    def step() -> None:
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        backend.step_end()

    for _ in range(args.steps):
        step()
    backend.wait()
    before, t0 = xla.counters(), time.perf_counter()
    for _ in range(args.steps):
        step()
    backend.wait()
    seconds, d = time.perf_counter() - t0, xla.counters() - before
    n = args.steps
    return {"transfers": d.transfers_from_device / n, "scalar_reads": d.scalar_reads / n,
            "executions": d.executions / n, "compiles": d.compiles,
            "tokens_per_s": n * blocks.numel() / seconds}


# ---------------------------------------------------------------- 2. throughput


def run_loop(args: argparse.Namespace, backend: str, blocks: np.ndarray) -> dict[str, Any]:
    """Our loop for two windows of `--steps` steps; the second window's tokens/s and counters."""
    cfg = TrainConfig(backend=backend, precision="fp32", micro_batch=args.micro_batch, grad_accum=args.grad_accum,
                      lr=3e-4, warmup_steps=2, max_steps=2 * args.steps, eval_every=0, save_every=0,
                      log_every=args.steps, keep_last=1, seed=1234, sample_prompts=())
    choice = device_choice(backend)
    model = build_model(model_config(args), args.vocab, device_choice=choice, seed=0)
    batches = PackedBatches(ArrayBlocks(blocks), args.micro_batch, seed=0, rank=0, world_size=1)
    hooks = xla.loop_hooks(choice) if backend == "xla" else None
    marks: dict[int, xla.Counters] = {}
    if hooks is not None:
        inner, seen = hooks.after_optimizer_step, [0]

        def after_optimizer_step() -> None:
            inner()
            seen[0] += 1
            if seen[0] in (args.steps + 1, 2 * args.steps):  # the timed window, minus the first window's log
                marks[seen[0]] = xla.counters()

        hooks.after_optimizer_step = after_optimizer_step
    with tempfile.TemporaryDirectory(prefix=f"bench-{backend}-") as out:
        start = xla.counters() if backend == "xla" else None
        loop.train(model, batches, cfg, out, device_choice=choice, hooks=hooks, peak_flops=1.0, progress=False)
        end = xla.counters() if backend == "xla" else None
        records = [r for r in loop.read_metrics(Path(out) / loop.METRICS_FILE) if r.get("kind") == "train"]
    row: dict[str, Any] = {"tokens_per_s": records[-1]["tokens_per_s"], "last_loss": records[-1]["loss"]}
    if backend == "xla":
        steady = marks[2 * args.steps] - marks[args.steps + 1]
        row.update(compiles=(end - start).compiles, compiles_steady=steady.compiles,
                   transfers_per_step=steady.transfers_from_device / (args.steps - 1))
    return row


# ---------------------------------------------------------------- 3. projection


def projection(seq: int = 512, vocab: int = 32000) -> list[dict[str, float]]:
    """seed_1b on a v5e-8 at the MFU assumptions: tokens/s and hours for 20 tokens per parameter."""
    mc = ModelConfig(preset="seed_1b")
    params = count_parameters(mc, vocab)
    fpt = flops_per_token(mc, vocab, seq)
    budget = 20 * params
    rows = []
    for mfu in MFU_ASSUMPTIONS:
        tps = mfu * V5E_CHIPS * V5E_PEAK_BF16 / fpt
        rows.append({"mfu": mfu, "params": params, "flops_per_token": fpt, "tokens_per_s": tps,
                     "budget_tokens": budget, "hours": budget / tps / 3600})
    return rows


# ---------------------------------------------------------------- main


def bench_xla(args: argparse.Namespace) -> str:
    """All three parts; returns the summary line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # save_pretrained's shard bar at the end of each run
    # the PJRT runtime first: autograd sizes its device queues at the first backward of the process
    backend = xla.XlaBackend(precision="fp32")
    info = xla.versions()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores; torch {info['torch']}, torch_xla {info['torch_xla']}, "
          f"PJRT {info['device_type']} x{info['device_count']}; load average {os.getloadavg()[0]:.1f}")
    fpt = flops_per_token(model_config(args), args.vocab, args.seq)
    print(f"model: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, intermediate {args.intermediate}, "
          f"vocab {args.vocab}; batch {args.micro_batch}x{args.grad_accum}x{args.seq}; {fpt / 1e6:.1f} MFLOP/token")

    print("\n1. attention kernel and host syncs, per training step after warm-up (transformers "
          f"{transformers.__version__})")
    print(f"{'attention':>9} {'mask':>5} {'D2H transfers':>14} {'scalar reads':>13} {'executions':>11} "
          f"{'new compiles':>13} {'tok/s':>8}")
    for attn in ("sdpa", "eager"):
        for mask in (True, False):
            r = attention_syncs(args, attn, mask, backend)
            print(f"{attn:>9} {('ones' if mask else 'none'):>5} {r['transfers']:>14.2f} {r['scalar_reads']:>13.2f} "
                  f"{r['executions']:>11.2f} {r['compiles']:>13} {r['tokens_per_s']:>8.0f}", flush=True)

    print(f"\n2. our loop: XLA (CPU PJRT, eager attention) against the eager CPU loop (SDPA), {args.rounds} rounds")
    n_blocks = args.micro_batch * args.grad_accum * 2 * args.steps + args.micro_batch
    blocks = token_blocks(args, n_blocks)
    print(f"{'round':>5} {'xla tok/s':>10} {'cpu tok/s':>10} {'xla/cpu':>8} {'compiles':>9} {'steady':>7} "
          f"{'D2H/step':>9} {'xla loss':>9} {'cpu loss':>9}")
    rows = []
    for r in range(args.rounds):
        x = run_loop(args, "xla", blocks)
        c = run_loop(args, "cpu", blocks)
        rows.append({"xla": x["tokens_per_s"], "cpu": c["tokens_per_s"], "ratio": x["tokens_per_s"] / c["tokens_per_s"],
                     "compiles": x["compiles"], "steady": x["compiles_steady"], "d2h": x["transfers_per_step"]})
        print(f"{r + 1:>5} {x['tokens_per_s']:>10.0f} {c['tokens_per_s']:>10.0f} {rows[-1]['ratio']:>8.3f} "
              f"{x['compiles']:>9} {x['compiles_steady']:>7} {x['transfers_per_step']:>9.2f} "
              f"{x['last_loss']:>9.4f} {c['last_loss']:>9.4f}", flush=True)
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}

    print("\n3. PROJECTION (not measured): seed_1b, context 512, Kaggle TPU v5e-8 = 8 chips x 197 TFLOP/s bf16")
    proj = projection()
    p0 = proj[0]
    print(f"   {p0['params'] / 1e6:.0f}M parameters, {p0['flops_per_token'] / 1e9:.2f} GFLOP per token "
          f"(6N + 12*L*H*T, N without the input embedding); Chinchilla budget {p0['budget_tokens'] / 1e9:.1f}B tokens")
    print(f"{'MFU':>5} {'tokens/s':>10} {'hours':>7}")
    for row in proj:
        print(f"{row['mfu']:>5.0%} {row['tokens_per_s']:>10,.0f} {row['hours']:>7.1f}")
    return (f"xla_tokens_per_s={med['xla']:.1f} cpu_tokens_per_s={med['cpu']:.1f} ratio={med['ratio']:.3f} "
            f"compiles_first_run={rows[0]['compiles']} compiles_steady={max(r['steady'] for r in rows)} "
            f"host_transfers_per_step={med['d2h']:.2f}")


def bench_xla_from(shared: argparse.Namespace) -> str:
    """`bench_xla` with bench/train_throughput.py's model and batch arguments (its `--pairs` as `--rounds`)."""
    args = parse_args([])
    for key, value in vars(shared).items():
        if hasattr(args, key):
            setattr(args, key, value)
    args.rounds = getattr(shared, "pairs", args.rounds)
    return bench_xla(args)


def main(argv: list[str] | None = None) -> int:
    print(bench_xla(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
