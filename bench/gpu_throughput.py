"""The GPU checks of 03_pretrain in one script, for a session that is lent a CUDA GPU.

    python bench/gpu_throughput.py              # on a CUDA GPU: the throughput rows, then the T4 fit
    python bench/gpu_throughput.py --dry-run    # the same code on the CPU with the smoke model (checks the script)

1. Throughput: `seed_1b` and `neox_1b` at 512 and 1024 tokens in the loop's own precision (bf16 on compute
   capability 8.0+). Our loop's tokens/s and MFU (6N + 12*L*H*T FLOPs per token over the GPU's datasheet
   peak, planner.PEAK_FLOPS), against transformers' Trainer with `bf16=True` and its default fused AdamW on
   the same model, batch and data. The two run one after the other, ours first, fresh models. Each side
   warms up for `--steps` optimizer steps and is then timed for `--steps` more. Ours is stopped after its
   timed window, so that no checkpoint of a 776M model is written.
2. The T4 fit: `torch.cuda.set_per_process_memory_fraction` caps the process at 15 GiB and precision is fp16
   with a GradScaler (a T4 has no bf16). The colab_t4 profile's model, micro-batch, accumulation, gradient
   checkpointing and optimizer run for `--fit-steps` optimizer steps. Peak memory allocated is reported
   against the planner's total (target: within 15%).

The last line is `gpu=... <preset>_<seq>_ours_tps=... <preset>_<seq>_mfu=... <preset>_<seq>_ratio=...
t4_fit_peak_gib=... t4_fit_planned_gib=... t4_fit_error=...`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from nbhelpers import config, loop, planner
from nbhelpers.batches import ArrayBlocks, PackedBatches
from nbhelpers.config import ModelConfig, TrainConfig
from nbhelpers.device import select
from nbhelpers.model import build_model

VOCAB = 32000  # the report's tokenizer
GiB = 2**30


class _Stop(Exception):
    """Raised from the loop's hook after the timed window: the run ends before its final checkpoint."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="seed_1b,neox_1b")
    p.add_argument("--seqs", default="512,1024")
    p.add_argument("--tokens", type=int, default=8192, help="tokens per micro-batch (16 x 512, 8 x 1024)")
    p.add_argument("--steps", type=int, default=10, help="warm-up steps, then as many timed steps, per side")
    p.add_argument("--fit-steps", type=int, default=2, help="optimizer steps of the T4 fit run")
    p.add_argument("--fit-cap-gib", type=float, default=15.0, help="memory cap of the T4 fit")
    p.add_argument("--no-fit", action="store_true", help="skip the T4 fit")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, smoke model, fp32: checks the script only")
    return p.parse_args(argv)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def blocks_for(n_blocks: int, seq: int, vocab: int) -> np.ndarray:
    """Random token blocks (n_blocks, seq) uint16: throughput does not depend on what the tokens say."""
    return np.random.default_rng(0).integers(0, vocab, size=(n_blocks, seq), dtype=np.uint16)


def train_cfg(args: argparse.Namespace, micro_batch: int, **kw: Any) -> TrainConfig:
    """The settings both sides share: logging at the end of the warm-up and of the timed window, no eval."""
    base = dict(backend="cpu" if args.dry_run else "cuda", precision="fp32" if args.dry_run else "auto",
                micro_batch=micro_batch, grad_accum=1, lr=3e-4, warmup_steps=2, max_steps=2 * args.steps + 1,
                eval_every=0, save_every=0, log_every=args.steps, keep_last=1, seed=1234, sample_prompts=())
    base.update(kw)
    return TrainConfig(**base)


def run_ours(model_cfg: ModelConfig, cfg: TrainConfig, blocks: np.ndarray, vocab: int, stop_after: int) -> dict:
    """Our loop until `stop_after` optimizer steps; the logged records and the peak memory."""
    choice = select(cfg)
    model = build_model(model_cfg, vocab, device_choice=choice, seed=0)
    batches = PackedBatches(ArrayBlocks(blocks), cfg.micro_batch, seed=0)
    done = [0]

    class StopHooks(loop.Hooks):
        def after_optimizer_step(self) -> None:
            done[0] += 1
            if done[0] > stop_after:  # the step after the last logged one: nothing is saved
                raise _Stop

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    peak = planner.peak_flops(choice)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as out:
        with contextlib.suppress(_Stop):
            loop.train(model, batches, cfg, out, device_choice=choice, hooks=StopHooks(), peak_flops=peak,
                       progress=False)
        records = [r for r in loop.read_metrics(Path(out) / loop.METRICS_FILE) if r.get("kind") == "train"]
    peak_mem = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    del model, batches
    _free()
    return {"records": records, "precision": choice.precision, "device": choice.name, "peak_flops": peak,
            "peak_mem": peak_mem}


def run_trainer(model_cfg: ModelConfig, cfg: TrainConfig, blocks: np.ndarray, vocab: int, precision: str,
                dry_run: bool) -> float:
    """transformers' Trainer, same model and batch: tokens/s over the optimizer steps after the warm-up."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    rows = blocks

    class Blocks(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = torch.from_numpy(rows[i].astype(np.int64))  # (T,)
            return {"input_ids": ids, "labels": ids.clone()}

    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kw):
            if state.global_step in (cfg.log_every, 2 * cfg.log_every):
                _sync()  # the window ends when the GPU has finished its steps
                marks[state.global_step] = time.perf_counter()

    model = build_model(model_cfg, vocab, device_choice=select(cfg), seed=0)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-hf-") as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.micro_batch, gradient_accumulation_steps=cfg.grad_accum,
            max_steps=2 * cfg.log_every, learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps,
            weight_decay=cfg.weight_decay, adam_beta1=cfg.betas[0], adam_beta2=cfg.betas[1],
            max_grad_norm=cfg.grad_clip, logging_steps=cfg.log_every, save_strategy="no", report_to=[],
            use_cpu=dry_run, bf16=precision == "bf16", fp16=precision == "fp16", dataloader_num_workers=0,
            seed=cfg.seed, disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=Blocks(), callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    del trainer, model
    _free()
    tokens = cfg.log_every * cfg.micro_batch * cfg.grad_accum * blocks.shape[1]
    return tokens / (marks[2 * cfg.log_every] - marks[cfg.log_every])


def throughput_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Ours against the Trainer for every preset and sequence length."""
    presets = ["smoke"] if args.dry_run else args.presets.split(",")
    seqs = [128] if args.dry_run else [int(s) for s in args.seqs.split(",")]
    vocab = 2000 if args.dry_run else VOCAB
    rows = []
    for preset in presets:
        for seq in seqs:
            model_cfg = ModelConfig(preset=preset, max_position_embeddings=max(seq, 1024))
            micro = max(1, (512 if args.dry_run else args.tokens) // seq)
            cfg = train_cfg(args, micro)
            blocks = blocks_for(micro * (2 * args.steps + 2), seq, vocab)
            started = time.perf_counter()
            ours = run_ours(model_cfg, cfg, blocks, vocab, stop_after=2 * args.steps)
            timed = ours["records"][-1]  # the window after the warm-up
            hf_tps = run_trainer(model_cfg, cfg, blocks, vocab, ours["precision"], args.dry_run)
            fpt = planner.flops_per_token(model_cfg, vocab, seq)
            hf_mfu = planner.mfu(hf_tps, fpt, ours["peak_flops"])
            row = {"preset": preset, "seq": seq, "micro_batch": micro, "precision": ours["precision"],
                   "device": ours["device"], "ours_tps": timed["tokens_per_s"], "ours_mfu": timed["mfu"],
                   "hf_tps": hf_tps, "hf_mfu": hf_mfu, "ratio": timed["tokens_per_s"] / hf_tps,
                   "peak_mem_gib": ours["peak_mem"] / GiB, "seconds": time.perf_counter() - started}
            rows.append(row)
            mfu, hf_mfu_s = (f"{m:.1%}" if m is not None else "n/a" for m in (row["ours_mfu"], hf_mfu))
            print(f"{preset} seq {seq} x{micro} {row['precision']} on {row['device']}: ours {row['ours_tps']:,.0f} "
                  f"tok/s (MFU {mfu}), Trainer {hf_tps:,.0f} tok/s (MFU {hf_mfu_s}), ratio {row['ratio']:.3f}, "
                  f"peak {row['peak_mem_gib']:.1f} GiB, {row['seconds']:.0f} s", flush=True)
    return rows


def t4_fit(args: argparse.Namespace) -> dict[str, float]:
    """The colab_t4 profile under a 15 GiB cap in fp16: peak memory against the planner's total."""
    dry = {"model.preset": "smoke", "corpus.block_len": 128, "sft.max_length": 128, "eval.ppl_stride": 64}
    run = config.load("colab_t4", dry if args.dry_run else {})  # dry: what fits the smoke model's 256 positions
    vocab = 2000 if args.dry_run else VOCAB
    seq = run.corpus.block_len
    cfg = dataclasses.replace(run.train, backend="cpu" if args.dry_run else "cuda",
                              precision="fp32" if args.dry_run else "fp16", max_steps=args.fit_steps + 1,
                              # 8-bit AdamW (the profile's) needs bitsandbytes on CUDA: the CPU dry run uses AdamW
                              optimizer="adamw" if args.dry_run else run.train.optimizer,
                              eval_every=0, save_every=0, log_every=1, sample_prompts=())
    cap = args.fit_cap_gib * GiB
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
    choice = select(cfg)
    plan = planner.make_plan(dataclasses.replace(run, train=cfg), vocab, choice)
    planned = plan.memory.total
    blocks = blocks_for(cfg.micro_batch * cfg.grad_accum * (args.fit_steps + 2), seq, vocab)
    ours = run_ours(run.model, cfg, blocks, vocab, stop_after=args.fit_steps)
    peak = ours["peak_mem"]
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(1.0)
    error = peak / planned - 1 if peak else float("nan")
    print(f"T4 fit ({run.model.preset}, {cfg.precision}, micro-batch {cfg.micro_batch} x {cfg.grad_accum}, checkpointing "
          f"{cfg.gradient_checkpointing}, {cfg.optimizer}, cap {args.fit_cap_gib} GiB): peak allocated "
          f"{peak / GiB:.2f} GiB, planner {planned / GiB:.2f} GiB ({plan.verdict}); error {error:+.1%}", flush=True)
    return {"peak_gib": peak / GiB, "planned_gib": planned / GiB, "error": error}


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run this on a lent GPU, or pass --dry-run to check the script on the CPU")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (dry run)"
    print(f"device: {name}; torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    fields = [f"gpu={name.replace(' ', '_')}"]
    for row in throughput_rows(args):
        key = f"{row['preset']}_{row['seq']}"
        mfu = f"{row['ours_mfu']:.3f}" if row["ours_mfu"] is not None else "nan"
        fields += [f"{key}_ours_tps={row['ours_tps']:.0f}", f"{key}_mfu={mfu}", f"{key}_ratio={row['ratio']:.3f}"]
    if not args.no_fit:
        fit = t4_fit(args)
        fields += [f"t4_fit_peak_gib={fit['peak_gib']:.2f}", f"t4_fit_planned_gib={fit['planned_gib']:.2f}",
                   f"t4_fit_error={fit['error']:.3f}"]
    line = " ".join(fields)
    print(line)
    return line


if __name__ == "__main__":
    main()
