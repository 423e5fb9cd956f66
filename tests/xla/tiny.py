"""Tiny model, data and runs for the xla tests; as a script it trains once in a fresh process.

    python tests/xla/tiny.py OUT_DIR --backend xla|cpu [--fsdp] [--steps N] [--stop-after K] [--optimizer muon]

A fresh process matters on XLA: the number of PJRT devices (CPU_NUM_DEVICES) is fixed when the runtime
starts, so the 4-device SPMD runs and the kill tests run here, in a subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, when run as a script

from nbhelpers import loop  # noqa: E402
from nbhelpers.batches import ArrayBlocks, PackedBatches  # noqa: E402
from nbhelpers.config import TrainConfig  # noqa: E402
from nbhelpers.device import DeviceChoice  # noqa: E402

VOCAB = 53
BLOCK = 16
HERE = Path(__file__).resolve()


def choice(backend: str, precision: str = "fp32", devices: int = 1) -> DeviceChoice:
    """A DeviceChoice for the CPU or the XLA (CPU PJRT) device, without probing the machine."""
    return DeviceChoice(backend=backend, device="xla" if backend == "xla" else "cpu", name=f"{backend} (test)",
                        precision=precision, use_grad_scaler=False,
                        attn_implementation="eager" if backend == "xla" else "sdpa", num_devices=devices,
                        memory_bytes=0, capability=None, reason="test")


def tiny_model(attn: str = "eager", seed: int = 0):
    """A 2-layer GPT-NeoX without dropout, initialised from `seed` on the CPU."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(cfg)


def blocks(n: int, seed: int = 0) -> np.ndarray:
    """(n, BLOCK) uint16 arithmetic progressions mod VOCAB (ids >= 3): learnable, so the loss moves."""
    rng = np.random.default_rng(seed)
    start, stride = rng.integers(3, VOCAB, n), rng.integers(1, 5, n)
    return (3 + (start[:, None] + stride[:, None] * np.arange(BLOCK)[None] - 3) % (VOCAB - 3)).astype(np.uint16)


def tokenizer():
    """A character-level fast tokenizer with VOCAB entries, built locally."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = "太陽は何色ですか？日本の首都東京赤い1234567890abcdefghijklmnopqrstuvwxyz"
    tokens = ["<pad>", "<s>", "</s>", "<unk>"] + list(dict.fromkeys(chars))
    vocab = {t: i for i, t in enumerate(tokens[:VOCAB])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def train_cfg(backend: str, **kw: Any) -> TrainConfig:
    """fp32, global micro-batch 8 (2 per device on 4 devices), 2 micro-batches per step, log every step."""
    base = dict(backend=backend, precision="fp32", micro_batch=8, grad_accum=2, lr=3e-3, warmup_steps=3,
                max_steps=10, eval_every=0, eval_batches=2, save_every=0, keep_last=2, log_every=1,
                max_bad_steps=3, seed=5, sample_prompts=(), sample_tokens=4)
    base.update(kw)
    return TrainConfig(**base)


def sources(micro_batch: int = 8) -> tuple[PackedBatches, dict[str, PackedBatches]]:
    """Training and validation batch sources (fixed shapes)."""
    train = PackedBatches(ArrayBlocks(blocks(400)), micro_batch, seed=3, rank=0, world_size=1)
    val = PackedBatches(ArrayBlocks(blocks(32, seed=9)), micro_batch, shuffle=False, rank=0, world_size=1)
    return train, {"val": val}


def stopping(hooks: Any, at: int, kill: bool) -> Any:
    """`hooks` whose after_optimizer_step SIGKILLs the process (or raises) after step `at` of this process."""
    inner, seen = hooks.after_optimizer_step, [0]

    def after_optimizer_step() -> None:
        inner()
        seen[0] += 1
        if seen[0] == at:
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise KeyboardInterrupt(f"stopped after step {at}")

    hooks.after_optimizer_step = after_optimizer_step
    return hooks


def run(out: str | os.PathLike, backend: str, *, fsdp: bool = False, hooks: Any = None, devices: int = 1,
        **cfg_kw: Any) -> loop.TrainResult:
    """Train the tiny model with the loop on `backend` (the same seed and data on every backend)."""
    torch.set_num_threads(1)
    train, evals = sources(cfg_kw.get("micro_batch", 8))
    cfg = train_cfg(backend, fsdp=fsdp, **cfg_kw)
    dc = choice(backend, cfg.precision, devices)
    if hooks is None and backend == "xla":
        from nbhelpers import xla

        hooks = xla.loop_hooks(dc)
    return loop.train(tiny_model("eager" if backend == "xla" else "sdpa"), train, cfg, out,
                      eval_batches=evals if cfg.eval_every else None,
                      tokenizer=tokenizer() if cfg.sample_prompts else None, device_choice=dc, hooks=hooks,
                      peak_flops=1e12, progress=False)


def train_losses(out: str | os.PathLike) -> dict[int, float]:
    """step -> logged training loss from metrics.jsonl."""
    return {r["step"]: r["loss"] for r in loop.read_metrics(Path(out) / loop.METRICS_FILE) if r["kind"] == "train"}


def subprocess_run(out: Path, *args: str, devices: int = 1, timeout: float = 400) -> Any:
    """Run this file as a script in a fresh process with `devices` CPU PJRT devices."""
    import subprocess

    env = dict(os.environ, PJRT_DEVICE="CPU", CPU_NUM_DEVICES=str(devices), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(HERE), str(out), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def spmd_suite(out: Path, optimizer: str = "adamw") -> dict[str, Any]:
    """In one 4-device process: data-parallel 10 steps; FSDP stopped after 6 (checkpoint at 5) and resumed to 10."""
    import torch_xla

    from nbhelpers import xla

    run(out / "dp", "xla", devices=4, optimizer=optimizer)
    with_stop = stopping(xla.loop_hooks(choice("xla")), 6, kill=False)
    with contextlib.suppress(KeyboardInterrupt):  # stopped after step 6: the checkpoint of step 5 stays
        run(out / "fsdp", "xla", fsdp=True, hooks=with_stop, devices=4, save_every=5, optimizer=optimizer)
    hooks = xla.loop_hooks(choice("xla"))
    seen: list[torch.optim.Optimizer] = []
    prepare = hooks.prepare_optimizer
    hooks.prepare_optimizer = lambda opt: (seen.append(opt), prepare(opt))[-1]
    result = run(out / "fsdp", "xla", fsdp=True, hooks=hooks, devices=4, save_every=5, optimizer=optimizer)
    weight = max((p for g in seen[0].param_groups for p in g["params"] if p.dim() == 2 and p.shape[0] != VOCAB),
                 key=lambda p: p.numel())  # the largest hidden matrix: AdamW's or Muon's
    moment = seen[0].state[weight].get("exp_avg", seen[0].state[weight].get("momentum_buffer"))
    report = {"devices": xla.device_info()[1], "resumed_from": result.resumed_from,
              "fsdp_weight_sharding": torch_xla._XLAC._get_xla_sharding_spec(weight),
              "fsdp_moment_sharding": torch_xla._XLAC._get_xla_sharding_spec(moment)}
    if optimizer == "muon":
        report.update(sharded_newton_schulz())
    return report


def sharded_newton_schulz() -> dict[str, float]:
    """Relative errors against the CPU's fp32 iteration on a (64, 32) matrix: XLA's on its rows sharded over the 4
    devices in fp32 and in bf16, and orthogonalising each device's rows alone (what a sharding mistake gives)."""
    import numpy as np
    import torch_xla
    import torch_xla.distributed.spmd as xs

    from nbhelpers.muon import orthogonalize

    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    exact = orthogonalize(g, torch.float32)
    mesh = xs.Mesh(np.arange(4), (4,), ("fsdp",))

    def sharded(dtype: torch.dtype) -> torch.Tensor:
        x = g.to(torch_xla.device())
        xs.mark_sharding(x, mesh, ("fsdp", None))
        return orthogonalize(x, dtype).float().cpu()

    per_shard = torch.cat([orthogonalize(part.to(torch_xla.device()), torch.float32).cpu() for part in g.chunk(4)])
    return {name: float((o - exact).norm() / exact.norm()) for name, o in (
        ("ns_sharded_error", sharded(torch.float32)), ("ns_per_shard_error", per_shard),
        ("ns_sharded_bf16_error", sharded(torch.bfloat16)))}


# The kaggle_tpu_v5e8 profile (bf16, SPMD, FSDP, eager attention chosen by device.select) shrunk to the smoke
# model and these tiny blocks: logging every 4, evals with greedy samples every 8, checkpoints every 12.
PROFILE_OVERRIDES = {
    "model.preset": "smoke", "corpus.block_len": BLOCK, "train.micro_batch": 8, "train.grad_accum": 2,
    "train.max_steps": 44, "train.log_every": 4, "train.eval_every": 8, "train.save_every": 12,
    "train.eval_batches": 2, "train.warmup_steps": 3, "train.lr": 3e-3, "train.seed": 5,
    "train.sample_prompts": ["太陽は", "日本の首都は"], "train.sample_tokens": 4,
    "sft.max_length": 128, "eval.ppl_stride": 64,  # what fits the smoke model's 256 positions
}


def counters_suite(out: Path, optimizer: str = "adamw") -> dict[str, Any]:
    """03_pretrain's calls on the kaggle_tpu_v5e8 profile, with torch_xla's counters after each step's cut."""
    import torch_xla
    import torch_xla.debug.metrics as met

    from nbhelpers import config, device, model, xla

    cfg = config.load("kaggle_tpu_v5e8", {**PROFILE_OVERRIDES, "train.optimizer": optimizer})
    chosen = device.select(cfg.train)
    net = model.build_model(cfg.model, VOCAB, tokenizer=tokenizer(), device_choice=chosen, seed=0)
    train, evals = sources(cfg.train.micro_batch)
    hooks = loop.default_hooks(chosen)
    after: list[list[int]] = []
    inner = hooks.after_optimizer_step
    result_optimizer: list[torch.optim.Optimizer] = []
    prepare = hooks.prepare_optimizer
    hooks.prepare_optimizer = lambda opt: (result_optimizer.append(opt), prepare(opt))[-1]

    def after_optimizer_step() -> None:
        inner()
        after.append(list(xla.counters().astuple()))

    hooks.after_optimizer_step = after_optimizer_step
    before = list(xla.counters().astuple())
    result = loop.train(net, train, cfg.train, out, eval_batches=evals, tokenizer=tokenizer(), device_choice=chosen,
                        hooks=hooks, peak_flops=1e12, progress=False)
    weight = net.get_input_embeddings().weight
    return {"devices": xla.device_info()[1], "status": result.status, "step": result.step, "before": before,
            "after": after, "end": list(xla.counters().astuple()), "backend": chosen.backend,
            "precision": chosen.precision, "attention": net.config._attn_implementation,
            "weight_sharding": torch_xla._XLAC._get_xla_sharding_spec(weight),
            "fallback_ops": sorted(met.executed_fallback_ops()), "optimizer": type(result_optimizer[0]).__name__}


def cache_suite(run_dir: Path, stage: str) -> dict[str, Any]:
    """4 steps with evaluation through the loop's own hooks: its persistent compilation cache is RUN_DIR/xla_cache."""
    import time

    from nbhelpers import xla

    start = time.perf_counter()
    train, evals = sources()
    cfg = train_cfg("xla", max_steps=4, eval_every=2)
    loop.train(tiny_model(), train, cfg, run_dir / stage, eval_batches=evals, device_choice=choice("xla"),
               peak_flops=1e12, progress=False)
    cache = xla.cache_dir(run_dir)
    return {"compiles": xla.compile_count(), **xla.persistent_cache_counts(), "seconds": time.perf_counter() - start,
            "entries": sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--backend", default="xla")
    ap.add_argument("--fsdp", action="store_true")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--save-every", type=int, default=0)
    ap.add_argument("--kill-after", type=int, default=0, help="SIGKILL after this many steps of this process")
    ap.add_argument("--stop-after", type=int, default=0, help="raise after this many steps of this process")
    ap.add_argument("--spmd-suite", action="store_true", help="the 4-device data-parallel and FSDP runs")
    ap.add_argument("--counters-suite", action="store_true", help="compile / transfer counters per step")
    ap.add_argument("--cache-suite", metavar="STAGE", help="train in OUT/STAGE; compile and persistent-cache counts")
    ap.add_argument("--optimizer", default="adamw", help="train.optimizer of the suites")
    args = ap.parse_args(argv)
    if args.cache_suite:
        print(json.dumps(cache_suite(Path(args.out), args.cache_suite)))
        return
    if args.counters_suite:
        print(json.dumps(counters_suite(Path(args.out), args.optimizer)))
        return
    if args.spmd_suite:
        print(json.dumps(spmd_suite(Path(args.out), args.optimizer)))
        return
    hooks = None
    devices = int(os.environ.get("CPU_NUM_DEVICES", "1")) if args.backend == "xla" else 1
    if args.kill_after or args.stop_after:
        if args.backend == "xla":
            from nbhelpers import xla

            hooks = xla.loop_hooks(choice("xla"))
        else:
            hooks = loop.Hooks()
        hooks = stopping(hooks, args.kill_after or args.stop_after, kill=bool(args.kill_after))
    try:
        result = run(args.out, args.backend, fsdp=args.fsdp, hooks=hooks, devices=devices, max_steps=args.steps,
                     save_every=args.save_every, optimizer=args.optimizer)
    except KeyboardInterrupt as stop:
        print(json.dumps({"stopped": str(stop)}))
        return
    print(json.dumps({"status": result.status, "step": result.step, "resumed_from": result.resumed_from,
                      "devices": devices}))


if __name__ == "__main__":
    main()
