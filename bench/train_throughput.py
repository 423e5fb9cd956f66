"""Training throughput: our loop against transformers' Trainer on the same model, data, batch and threads.

    python bench/train_throughput.py                 # CPU, the defaults below
    python bench/train_throughput.py --pairs 12 --threads 2 --compile

Both sides train the same freshly initialised GPT-NeoX (same seed) on the same token blocks in the
same order with the same AdamW, schedule, clipping, batch and torch threads, in ONE process. They
take turns step by step: our loop runs in this thread and the Trainer in a second one, and each
hands over to the other after every optimizer step, so only one computes at a time and load on a
shared machine hits both alike. After each pair of steps the CPU's fp32 matmul peak is measured too,
and the step's dense GEMMs are timed alone (`GemmReplay`: what no loop can skip in fp32). Each
side's step time runs from getting its turn to the end of its next optimizer step (data, forward,
backward, clipping, optimizer, logging: everything its loop does). The first `--warmup` pairs are
not counted (compilation, allocator warm-up). Both log every train.log_every steps, and the mean
losses they log for the same steps must agree (else the script stops: the sides did not train
alike).
The last line is

    ours_tokens_per_s=... hf_tokens_per_s=... ratio=... cpu_mfu=...

(medians over the counted pairs: ratio is the median of per-pair ratios; cpu_mfu is our achieved
FLOP/s, 6N + 12*L*H*T per token, over the matmul peak measured next to that pair). The line before it,
gemm_bound=..., is the median of the Trainer's step time over its GEMMs' time: the most any loop could beat
the Trainer by in fp32 without doing fewer FLOPs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import transformers

from nbhelpers import loop
from nbhelpers.batches import ArrayBlocks, PackedBatches
from nbhelpers.config import ModelConfig, TrainConfig
from nbhelpers.device import select
from nbhelpers.model import build_model
from nbhelpers.planner import flops_per_token, measure_cpu_peak_flops


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="cpu", choices=sorted(BACKENDS), help="where to train")
    p.add_argument("--preset", default="tiny", help="model preset the shape overrides start from")
    # a model whose matmuls dominate the step: wide layers, few of them, a small vocabulary
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--pairs", type=int, default=12, help="counted ours/Trainer step pairs")
    p.add_argument("--warmup", type=int, default=3, help="uncounted pairs at the start")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both; 0 = torch's default")
    p.add_argument("--hf-optim", default="", help="the Trainer's `optim` (default: its own default, adamw_torch_fused "
                   "in transformers 5; adamw_torch was the default before)")
    # off by default, as in TrainConfig: on this CPU it did not beat eager for a matmul-bound model (BENCHMARKS.md)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile in our loop (train.compile)")
    return p.parse_args(argv)


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(preset=args.preset, hidden_size=args.hidden, num_hidden_layers=args.layers,
                       num_attention_heads=args.heads, intermediate_size=args.intermediate,
                       max_position_embeddings=max(args.seq, 128))


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The same optimisation settings for both sides; logging every 10 steps, no eval, no intermediate saves."""
    return TrainConfig(backend=args.backend, precision="fp32" if args.backend == "cpu" else "auto",
                       micro_batch=args.micro_batch, grad_accum=args.grad_accum, lr=3e-4, warmup_steps=2,
                       max_steps=args.warmup + args.pairs, eval_every=0, save_every=0, log_every=10,
                       keep_last=1, compile=args.compile, seed=1234)


class GemmReplay:
    """The step's dense-layer GEMMs alone (forward, input grad, weight grad), on random tensors of the same shapes.

    Its time bounds what any change outside the GEMMs (fusion, fewer syncs, a leaner loop) can gain in fp32:
    a step cannot take less than its GEMMs. Attention's own matmuls (inside SDPA) are left out.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        h, i, n = args.hidden, args.intermediate, args.micro_batch * args.seq  # n = tokens per micro-batch
        self.accum = args.grad_accum
        self.shapes = [(h, 3 * h), (h, h), (h, i), (i, h)] * args.layers + [(h, args.vocab)]  # (in, out) features
        gen = torch.Generator().manual_seed(0)
        self.x = {k: torch.randn(n, k, generator=gen) for k in {h, i}}  # layer inputs (n, in)
        self.g = {k: torch.randn(n, k, generator=gen) for k in {o for _, o in self.shapes}}  # output grads (n, out)
        self.w = [torch.randn(o, k, generator=gen) for k, o in self.shapes]  # weights (out, in)

    def __call__(self) -> float:
        """Seconds for one optimizer step's GEMMs."""
        start = time.perf_counter()
        for _ in range(self.accum):
            for (k, o), w in zip(self.shapes, self.w):
                torch.mm(self.x[k], w.t())  # forward (n, out)
                torch.mm(self.g[o], w)  # input grad (n, in)
                torch.mm(self.g[o].t(), self.x[k])  # weight grad (out, in)
        return time.perf_counter() - start


class Turns:
    """Strict alternation between two threads: each side runs one step, then hands over and waits."""

    def __init__(self, gemms: GemmReplay | None = None) -> None:
        self.gemms = gemms
        self.gemm_times: list[float] = []
        self.cond = threading.Condition()
        self.turn = "ours"
        self.finished: set[str] = set()
        self.started: dict[str, float] = {}
        self.times: dict[str, list[float]] = {"ours": [], "hf": []}
        self.peaks: list[float] = []

    def step_done(self, side: str) -> None:
        """Record the step that just ended, measure the peak after a pair, hand over, wait for the turn back."""
        now = time.perf_counter()
        self.times[side].append(now - self.started[side])
        if side == "hf":  # a pair is complete: measure the matmul peak in the same conditions
            self.peaks.append(measure_cpu_peak_flops("fp32", sizes=(1024, 2048), repeats=2))
            if self.gemms is not None:
                self.gemm_times.append(self.gemms())
        self._hand_over(side)

    def begin(self, side: str) -> None:
        """Wait for this side's first turn."""
        with self.cond:
            self.cond.wait_for(lambda: self.turn == side or self._other(side) in self.finished)
        self.started[side] = time.perf_counter()

    def finish(self, side: str) -> None:
        with self.cond:
            self.finished.add(side)
            self.turn = self._other(side)
            self.cond.notify_all()

    def _hand_over(self, side: str) -> None:
        other = self._other(side)
        with self.cond:
            self.turn = other
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.turn == side or other in self.finished)
        self.started[side] = time.perf_counter()

    @staticmethod
    def _other(side: str) -> str:
        return "hf" if side == "ours" else "ours"


class TurnHooks(loop.Hooks):
    """Our loop's CPU hooks, handing over to the Trainer after every optimizer step."""

    def __init__(self, turns: Turns) -> None:
        self.turns = turns

    def after_optimizer_step(self) -> None:
        self.turns.step_done("ours")


def run_ours(args: argparse.Namespace, blocks: np.ndarray, turns: Turns, out: str) -> float:
    """Our loop over the blocks; returns the first step's loss from its metrics."""
    cfg = train_config(args)
    model = build_model(model_config(args), args.vocab, seed=0)
    batches = PackedBatches(ArrayBlocks(blocks), args.micro_batch, seed=0)
    turns.begin("ours")
    try:
        loop.train(model, batches, cfg, out, device_choice=select(cfg), hooks=TurnHooks(turns), progress=False,
                   peak_flops=1.0)  # the bench measures the peak itself
    finally:
        turns.finish("ours")
    return loop.read_metrics(os.path.join(out, loop.METRICS_FILE))


def run_hf(args: argparse.Namespace, blocks: np.ndarray, turns: Turns, out: str, result: dict[str, Any]) -> None:
    """transformers' Trainer with the same settings, reading the blocks in our loop's order."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    order = PackedBatches(ArrayBlocks(blocks), args.micro_batch, seed=0)
    rows = [int(k) for i in range(len(order)) for k in order.block_indices(i)]

    class Blocks(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = torch.from_numpy(blocks[rows[i]].astype(np.int64))  # (T,)
            return {"input_ids": ids, "labels": ids.clone()}

    class InOrder(Trainer):
        def _get_train_sampler(self, *a, **k):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    class Handover(TrainerCallback):
        def on_step_end(self, targs, state, control, **kw):
            turns.step_done("hf")

        def on_log(self, targs, state, control, logs=None, **kw):
            if logs and "loss" in logs:  # mean training loss of each logging window, as our loop logs it
                result.setdefault("losses", []).append((state.global_step, float(logs["loss"])))

    try:
        cfg = train_config(args)
        model = build_model(model_config(args), args.vocab, seed=0)
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=args.grad_accum, max_steps=cfg.max_steps, learning_rate=cfg.lr,
            lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr_ratio},
            warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, adam_beta1=cfg.betas[0],
            adam_beta2=cfg.betas[1], max_grad_norm=cfg.grad_clip, logging_steps=cfg.log_every, save_strategy="no",
            report_to=[], use_cpu=args.backend == "cpu", dataloader_num_workers=0, seed=cfg.seed,
            disable_tqdm=True, **({"optim": args.hf_optim} if args.hf_optim else {}),
        )
        trainer = InOrder(model=model, args=targs, train_dataset=Blocks(), callbacks=[Handover()])
        trainer.remove_callback(PrinterCallback)  # its per-step print is not part of training
        trainer.create_optimizer()
        result["optimizer"] = f"{targs.optim.value} (fused={trainer.optimizer.defaults.get('fused')})"
        turns.begin("hf")
        trainer.train()
    except BaseException as err:  # noqa: BLE001 - reported by the main thread
        result["error"] = err
    finally:
        turns.finish("hf")


def token_blocks(args: argparse.Namespace, n_blocks: int) -> np.ndarray:
    """Random token blocks (n_blocks, seq) uint16: throughput does not depend on what the tokens say."""
    return np.random.default_rng(0).integers(0, args.vocab, size=(n_blocks, args.seq), dtype=np.uint16)


# ---------------------------------------------------------------- backends


def bench_cpu(args: argparse.Namespace) -> str:
    """Step-by-step alternation on the CPU; returns the summary line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    fpt = flops_per_token(model_config(args), args.vocab, args.seq)
    tokens_per_step = args.micro_batch * args.grad_accum * args.seq
    blocks = token_blocks(args, tokens_per_step // args.seq * (args.warmup + args.pairs + 1))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}")
    print(f"model: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, intermediate {args.intermediate}, "
          f"vocab {args.vocab}; batch {args.micro_batch}x{args.grad_accum}x{args.seq}; {fpt / 1e6:.1f} MFLOP/token; "
          f"ours compile={args.compile}", flush=True)
    turns, hf_result = Turns(GemmReplay(args)), {}
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as ours_out, \
            tempfile.TemporaryDirectory(prefix="bench-hf-") as hf_out:
        worker = threading.Thread(target=run_hf, args=(args, blocks, turns, hf_out, hf_result), daemon=True)
        worker.start()
        records = run_ours(args, blocks, turns, ours_out)
        worker.join()
    if "error" in hf_result:
        raise hf_result["error"]
    ours_t, hf_t = turns.times["ours"], turns.times["hf"]
    n = min(len(ours_t), len(hf_t), len(turns.peaks), len(turns.gemm_times))
    print(f"{'pair':>4} {'ours s':>7} {'hf s':>7} {'ratio':>6} {'peak GFLOP/s':>12} {'mfu':>6} {'gemm s':>7} "
          f"{'hf/gemm':>7}")
    rows = []
    for i in range(n):
        ours_tps, hf_tps = tokens_per_step / ours_t[i], tokens_per_step / hf_t[i]
        row = {"ours": ours_tps, "hf": hf_tps, "ratio": ours_tps / hf_tps, "peak": turns.peaks[i],
               "mfu": ours_tps * fpt / turns.peaks[i], "gemm": turns.gemm_times[i],
               "bound": hf_t[i] / turns.gemm_times[i]}
        counted = i >= args.warmup
        if counted:
            rows.append(row)
        print(f"{i + 1:>4} {ours_t[i]:>7.3f} {hf_t[i]:>7.3f} {row['ratio']:>6.3f} {row['peak'] / 1e9:>12.1f} "
              f"{row['mfu']:>6.3f} {row['gemm']:>7.3f} {row['bound']:>7.2f}{'' if counted else '  (warm-up)'}")
    ours_losses = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    hf_losses = hf_result.get("losses", [])
    print("logged losses (mean over each window of train.log_every steps): "
          + "; ".join(f"step {s}: ours {a:.4f} Trainer {b:.4f}" for (s, a), (_, b) in zip(ours_losses, hf_losses)))
    if not (ours_losses and hf_losses):
        print(f"no loss to compare: both sides log every {train_config(args).log_every} steps; run more pairs")
    for (s, a), (s2, b) in zip(ours_losses, hf_losses):
        if s != s2 or abs(a - b) > 2e-3 * max(1.0, abs(b)):
            raise SystemExit(f"losses differ at step {s}/{s2}: ours {a} Trainer {b}: the sides do not train alike")
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    print(f"Trainer optimizer: {hf_result.get('optimizer')}")
    print(f"medians over {len(rows)} pairs: peak {med['peak'] / 1e9:.1f} GFLOP/s; load average now "
          f"{os.getloadavg()[0]:.1f}")
    print(f"gemm_bound={med['bound']:.3f}: the Trainer's step over its dense GEMMs alone, the most a loop could gain "
          "over it in fp32 without doing fewer FLOPs")
    return (f"ours_tokens_per_s={med['ours']:.1f} hf_tokens_per_s={med['hf']:.1f} ratio={med['ratio']:.3f} "
            f"cpu_mfu={med['mfu']:.3f}")


def bench_xla(args: argparse.Namespace) -> str:
    """--backend xla (the XLA environment, PJRT_DEVICE=CPU): bench/xla_throughput.py's three parts, same args."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from xla_throughput import bench_xla_from

    return bench_xla_from(args)


BACKENDS: dict[str, Callable[[argparse.Namespace], str]] = {"cpu": bench_cpu, "xla": bench_xla}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    line = BACKENDS[args.backend](args)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
