"""Tiny model, data and tokenizer for the loop tests; run as a script it trains once (the tests kill it).

    python tests/loop_tiny.py OUT_DIR [--steps N] [--micro-batch B] [--step-sleep S] [--stall-save-at STEP] ...

Under torchrun each rank reads its share of the blocks and writes the block indices it read to
OUT_DIR/blocks_rank<r>.json. `--stall-save-at STEP` makes the save of STEP stop just before its
commit (after writing OUT_DIR/stalled) and sleep, so a test can kill the process mid-save.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when run as a script

from nbhelpers import checkpoint, loop  # noqa: E402
from nbhelpers.batches import ArrayBlocks, PackedBatches  # noqa: E402
from nbhelpers.config import TrainConfig  # noqa: E402
from nbhelpers.device import DeviceChoice  # noqa: E402

VOCAB = 61
BLOCK = 16


def cpu_choice(precision: str = "fp32") -> DeviceChoice:
    """A CPU DeviceChoice in any precision (fp16 with a GradScaler, which select() refuses on a CPU)."""
    return DeviceChoice(backend="cpu", device="cpu", name="CPU (test)", precision=precision,
                        use_grad_scaler=precision == "fp16", attn_implementation="sdpa", num_devices=1,
                        memory_bytes=0, capability=None, reason="test")


def tiny_model(seed: int = 0, hidden: int = 32, model_cls=None, dropout: float = 0.1):
    """A 2-layer GPT-NeoX with SDPA attention, initialised from `seed`."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=2 * hidden, max_position_embeddings=64, hidden_dropout=dropout,
                        attention_dropout=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return (model_cls or GPTNeoXForCausalLM)(cfg)


def blocks(n: int = 96, seed: int = 0) -> np.ndarray:
    """(n, BLOCK) uint16 blocks of arithmetic sequences mod VOCAB: easy to learn, so losses move."""
    rng = np.random.default_rng(seed)
    start = rng.integers(3, VOCAB, n)
    stride = rng.integers(1, 4, n)
    return ((start[:, None] + stride[:, None] * np.arange(BLOCK)[None]) % VOCAB).astype(np.uint16)


def train_cfg(**kw) -> TrainConfig:
    """A small TrainConfig: fp32 on the CPU, log every step."""
    base = dict(backend="cpu", precision="fp32", micro_batch=4, grad_accum=2, lr=3e-3, warmup_steps=4,
                max_steps=24, eval_every=0, eval_batches=2, save_every=4, keep_last=2, log_every=1,
                max_bad_steps=3, seed=7, sample_prompts=(), sample_tokens=4)
    base.update(kw)
    return TrainConfig(**base)


def tiny_tokenizer():
    """A character-level fast tokenizer with exactly VOCAB entries (transformers, built locally)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = list(dict.fromkeys("太陽は何色ですか？日本の首都たす赤い東京 0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"))
    vocab = {t: i for i, t in enumerate(specials + chars[: VOCAB - len(specials)])}  # exactly VOCAB entries
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    from tokenizers import decoders

    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


class RecordingBatches:
    """Wraps a PackedBatches and remembers [micro-batch index, block indices] of every read."""

    def __init__(self, inner: PackedBatches) -> None:
        self.inner, self.read = inner, []

    def __len__(self) -> int:
        return len(self.inner)

    def batch(self, index: int):
        self.read.append([index, [int(k) for k in self.inner.block_indices(index)]])
        return self.inner.batch(index)


class StopAfter(loop.Hooks):
    """Default hooks that end the session (KeyboardInterrupt) after `steps` optimizer steps."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    def after_optimizer_step(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt  # the session ends


class SleepHooks(loop.Hooks):
    """Default hooks plus a sleep after each step (so a test can kill mid-run)."""

    def __init__(self, sleep: float) -> None:
        self.sleep = sleep

    def after_optimizer_step(self) -> None:
        time.sleep(self.sleep)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--save-every", type=int, default=4)
    ap.add_argument("--step-sleep", type=float, default=0.0)
    ap.add_argument("--stall-save-at", type=int, default=-1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--lr-horizon", type=int, default=0)
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--schedule", default="cosine")
    ap.add_argument("--decay-fraction", type=float, default=0.2)
    ap.add_argument("--finish", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the same kernels in every process: losses compare bitwise
    out = Path(args.out)
    if args.stall_save_at >= 0:
        def stall(tmp: Path, step: int) -> None:
            if step == args.stall_save_at:
                (out / "stalled").write_text(str(step))
                time.sleep(600)
        checkpoint.saving.before_commit = stall
    source = RecordingBatches(PackedBatches(ArrayBlocks(blocks()), args.micro_batch, seed=3))
    cfg = train_cfg(micro_batch=args.micro_batch, grad_accum=args.grad_accum, max_steps=args.steps,
                    save_every=args.save_every, eval_every=args.eval_every, optimizer=args.optimizer,
                    schedule=args.schedule, decay_fraction=args.decay_fraction, finish=args.finish)
    evals = {"val": PackedBatches(ArrayBlocks(blocks(16, seed=5)), args.micro_batch, shuffle=False)} if args.eval_every else {}
    tokenizer = tiny_tokenizer() if evals else None  # evaluations report bits per byte too
    result = loop.train(tiny_model(dropout=args.dropout), source, cfg, out, eval_batches=evals, tokenizer=tokenizer,
                        device_choice=cpu_choice(),
                        hooks=SleepHooks(args.step_sleep), peak_flops=1e10, progress=False,
                        lr_horizon=args.lr_horizon or None)
    rank = int(os.environ.get("RANK", 0))
    (out / f"blocks_rank{rank}.json").write_text(json.dumps(source.read))
    if rank == 0:
        print(json.dumps({"status": result.status, "step": result.step, "resumed_from": result.resumed_from}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
