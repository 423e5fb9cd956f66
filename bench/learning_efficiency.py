"""Learning efficiency: training recipes compared at equal tokens on real Japanese text, scored on held-out documents.

    python bench/learning_efficiency.py                 # the default comparison (about an hour on a quiet 2-core CPU)
    python bench/learning_efficiency.py --quick         # a few minutes: baseline and Muon, one seed, few tokens
    python bench/learning_efficiency.py --arms adamw@1,muon@2 --seeds 0,1,2 --tokens 2000000

Data: Debian's Japanese documentation on this machine (debian-reference-ja's HTML chapters and manpages-ja's
pages; the book's .txt.gz is left out, it repeats the chapters). One file is one document; every tenth document
(by a hash of its path) is held out whole, so the held-out loss is on documents no run has seen a line of.
The tokenizer (SentencePiece unigram with the project's settings) is trained on the training documents only.
Training documents, each followed by EOS, are packed into blocks of `--block` tokens in a fixed shuffled order;
the held-out documents likewise.

Model and recipe: the `tiny` preset (hidden 256, 4 layers) initialised from the seed; the recipe of `--profile`'s
train section (its lr, warmup + cosine to lr * min_lr_ratio, weight decay, betas, clipping); every arm trains the
same number of tokens with the same batch, schedule length and warmup through `nbhelpers.loop.train` on the CPU.

`tuned_ratio` is the same against the best AdamW arm's final loss: a fair comparison tunes both sides (Wen et
al. 2025, arXiv 2509.02046).

Arms (`--arms`, comma-separated `optimizer@multiplier`): `adamw@m` is AdamW at m x the profile's lr (`adamw@1` is
the source report's recipe, the baseline); `muon@m` is `train.optimizer=muon` (nbhelpers/muon.py) with the AdamW-matched
update scale at m x the profile's lr on the hidden matrices, the fused QKV weight per q / k / v block, and AdamW at
the profile's lr on embeddings, head, norms, biases. `muonwhole@m` (not in the default set) is the same with the
fused QKV weight orthogonalised whole (`train.muon_qkv=whole`, which is what torch.optim.Muon does).
Each arm runs once per seed (`--seeds`; a seed sets the initial weights and the data order).

Printed per arm: held-out loss and bits per byte at the end (mean over seeds, and each seed's), and
`tokens_ratio` per seed = the tokens the arm needs to reach the baseline's final held-out loss (its mean over
seeds) / the baseline's tokens, read from the arm's eval curve by linear interpolation between evaluations
(None: not reached). Mid-run points of a cosine schedule are not annealed, so the ratio is conservative for
arms that reach the target early. Then Muon's step-time cost: full training steps (forward, backward, clipping,
optimizer) of the two optimizers on the same batch, interleaved in rounds in one process, medians. The load
average is printed at the start and the end: take figures under `flock /work/.bench.lock`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nbhelpers import config, loop, optim, sources
from nbhelpers.batches import ArrayBlocks, PackedBatches
from nbhelpers.device import DeviceChoice
from nbhelpers.model import build_model, count_parameters

MIN_CHARS = 200  # shorter files (stub man pages) are left out
HELDOUT_EVERY = 10


@dataclass(frozen=True)
class Data:
    """Tokenizer, packed training and held-out blocks, and what they hold."""

    tokenizer: Any
    train: np.ndarray  # (N, block) uint16
    heldout: np.ndarray  # (M, block) uint16
    stats: dict[str, Any]


@dataclass(frozen=True)
class Arm:
    """One recipe: the optimizer and its LR as a multiple of the profile's."""

    optimizer: str
    mult: float

    @property
    def name(self) -> str:
        return f"{self.optimizer}@{self.mult:g}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="baseline and muon@1, one seed, 150k tokens, short timing")
    p.add_argument("--profile", default="smoke", help="whose train recipe is the baseline (lr, warmup, decay, ...)")
    p.add_argument("--preset", default="tiny", help="model preset")
    p.add_argument("--arms", default="adamw@1,adamw@0.5,adamw@2,adamw@4,adamw@8,muon@1,muon@2,muon@4,muon@8")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--tokens", type=int, default=500_000, help="training tokens per run (every arm the same)")
    p.add_argument("--block", type=int, default=256, help="tokens per block (the training context)")
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--evals", type=int, default=16, help="held-out evaluations per run (for the curve)")
    p.add_argument("--heldout-blocks", type=int, default=64, help="held-out blocks scored at each evaluation")
    p.add_argument("--timing-rounds", type=int, default=7, help="rounds of the side-by-side step timing")
    p.add_argument("--timing-only", action="store_true", help="only the step timing (take it under the bench lock)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--work", default="", help="cache for the tokenizer, blocks and finished runs (default: temporary)")
    p.add_argument("--json", default="", help="write every figure and curve here")
    args = p.parse_args(argv)
    if args.quick:
        args.arms, args.seeds, args.tokens, args.evals, args.timing_rounds = "adamw@1,muon@1", "0", 150_000, 6, 3
    return args


def parse_arms(text: str) -> list[Arm]:
    arms = []
    for item in text.split(","):
        name, _, mult = item.strip().partition("@")
        if name not in ("adamw", "muon", "muonwhole") or not mult:
            raise SystemExit(f"--arms: expected adamw|muon|muonwhole@multiplier (adamw@1, muon@2), got {item!r}")
        arms.append(Arm(name, float(mult)))
    if Arm("adamw", 1.0) not in arms:
        arms.insert(0, Arm("adamw", 1.0))  # the baseline every ratio is read against
    return arms


# ---------------------------------------------------------------- data


def documents() -> list[tuple[str, str]]:
    """(path, text) of every Debian Japanese document here, the book's plain-text copy left out."""
    docs = []
    for path in sources.debian_files():
        if path.name.endswith(".txt.gz"):
            continue  # the whole book again: its HTML chapters are already here
        text = sources.read_debian_file(path).strip()
        if len(text) >= MIN_CHARS:
            docs.append((str(path), text))
    if not docs:
        raise SystemExit("no Debian Japanese documents: apt-get install debian-reference-ja manpages-ja")
    return docs


def is_heldout(path: str) -> bool:
    return int(hashlib.sha1(path.encode()).hexdigest(), 16) % HELDOUT_EVERY == 0


def pack(tokenizer: Any, texts: list[str], block: int, order_seed: int) -> tuple[np.ndarray, int]:
    """Documents (each followed by EOS) in a seeded order, cut into (N, block) uint16 blocks; and the tokens."""
    order = np.random.default_rng(order_seed).permutation(len(texts))
    ids: list[int] = []
    for i in order:
        ids += tokenizer(texts[i], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(ids) // block
    return np.asarray(ids[: n * block], dtype=np.uint16).reshape(n, block), len(ids)


def prepare(args: argparse.Namespace, work: Path) -> Data:
    """Split the documents, train the tokenizer on the training ones, pack both sides (cached in `work`)."""
    from transformers import AutoTokenizer

    from nbhelpers.tokenizer import train_tokenizer

    docs = documents()
    train_docs = [t for p, t in docs if not is_heldout(p)]
    held_docs = [t for p, t in docs if is_heldout(p)]
    key = hashlib.sha1(json.dumps([args.vocab, args.block, len(docs), sum(map(len, train_docs))]).encode()).hexdigest()[:12]
    cache = work / f"data-{key}"
    if not (cache / "train.npy").exists():
        tmp = work / f".tmp-{key}"
        shutil.rmtree(tmp, ignore_errors=True)
        tok = train_tokenizer(train_docs, tmp / "tokenizer", vocab_size=args.vocab, sample_chars=50_000_000,
                              heldout_chars=0, progress=False)
        train, train_tokens = pack(tok, train_docs, args.block, 0)
        held, held_tokens = pack(tok, held_docs, args.block, 0)
        np.save(tmp / "train.npy", train)
        np.save(tmp / "heldout.npy", held)
        stats = {"documents": len(docs), "train_documents": len(train_docs), "heldout_documents": len(held_docs),
                 "train_chars": sum(map(len, train_docs)), "heldout_chars": sum(map(len, held_docs)),
                 "train_tokens": train_tokens, "heldout_tokens": held_tokens, "vocab": len(tok)}
        (tmp / "stats.json").write_text(json.dumps(stats))
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
    tok = AutoTokenizer.from_pretrained(cache / "tokenizer")
    return Data(tok, np.load(cache / "train.npy"), np.load(cache / "heldout.npy"),
                json.loads((cache / "stats.json").read_text()))


# ---------------------------------------------------------------- runs


def cpu_choice() -> DeviceChoice:
    return DeviceChoice(backend="cpu", device="cpu", name="CPU", precision="fp32", use_grad_scaler=False,
                        attn_implementation="sdpa", num_devices=1, memory_bytes=0, capability=None, reason="bench")


def train_config(args: argparse.Namespace, arm: Arm, seed: int, steps: int) -> config.TrainConfig:
    """The profile's recipe with this arm's optimizer and LR, `steps` steps, `args.evals` evaluations."""
    base = config.load(args.profile).train
    muon = arm.optimizer.startswith("muon")
    return dataclasses.replace(
        base, backend="cpu", precision="fp32", micro_batch=args.micro_batch, grad_accum=1,
        lr=base.lr if muon else base.lr * arm.mult, optimizer="muon" if muon else "adamw",
        muon_lr=base.lr * arm.mult if muon else 0.0, muon_qkv="whole" if arm.optimizer == "muonwhole" else "blocks",
        max_steps=steps, eval_every=max(1, steps // args.evals), eval_batches=0, save_every=0, keep_last=1,
        log_every=max(1, steps // args.evals), max_minutes=0.0, gradient_checkpointing=False, compile=False,
        seed=seed, sample_prompts=(),
    )


def run_key(args: argparse.Namespace, data: Data, arm: Arm, seed: int, steps: int) -> str:
    """What a run's figures depend on (not the machine's load): its cache name in `--work`."""
    what = [arm.name, seed, steps, args.profile, args.preset, args.block, args.micro_batch, args.evals,
            args.heldout_blocks, data.stats, torch.__version__]
    if arm.optimizer != "adamw":  # nbhelpers' Muon (QKV blocks by default), not the torch.optim.Muon of older runs
        what.append(["nbhelpers.muon", train_config(args, arm, seed, steps).muon_qkv])
    return f"{arm.name}-{seed}-" + hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def run_arm(args: argparse.Namespace, data: Data, arm: Arm, seed: int, steps: int, work: Path) -> dict[str, Any]:
    """One arm with one seed (from `work`'s cache when this exact run finished before): curve and final figures."""
    key = run_key(args, data, arm, seed, steps)
    cached = work / "runs" / f"{key}.json"
    if cached.exists():
        return dict(json.loads(cached.read_text()), cached=True)
    run = train_arm(args, data, arm, seed, steps, work / f"run-{key}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(run))
    return run


def train_arm(args: argparse.Namespace, data: Data, arm: Arm, seed: int, steps: int, out: Path) -> dict[str, Any]:
    """Train one arm with one seed; its held-out curve (tokens, loss, bpb) and final figures."""
    shutil.rmtree(out, ignore_errors=True)  # a run killed earlier: start it again
    cfg = train_config(args, arm, seed, steps)
    model = build_model(config.ModelConfig(preset=args.preset), len(data.tokenizer), tokenizer=data.tokenizer,
                        seed=seed)
    train = PackedBatches(ArrayBlocks(data.train), cfg.micro_batch, seed=seed)
    held = PackedBatches(ArrayBlocks(data.heldout[: args.heldout_blocks]), cfg.micro_batch, shuffle=False)
    started = time.perf_counter()
    result = loop.train(model, train, cfg, out, eval_batches={"heldout": held}, tokenizer=data.tokenizer,
                        device_choice=cpu_choice(), progress=False)
    seconds = time.perf_counter() - started
    per_step = cfg.micro_batch * args.block
    records = loop.read_metrics(result.metrics_path)
    curve = [(r["step"] * per_step, r["loss"], r.get("bpb")) for r in records if r.get("kind") == "eval"]
    shutil.rmtree(out, ignore_errors=True)
    return {"arm": arm.name, "seed": seed, "steps": steps, "tokens": steps * per_step, "seconds": seconds,
            "loss": curve[-1][1], "bpb": curve[-1][2], "curve": curve,
            "train_loss": result.train_loss, "lr": cfg.lr, "muon_lr": cfg.muon_lr}


def tokens_to_reach(curve: list[tuple[int, float, Any]], target: float) -> float | None:
    """Tokens at which the eval curve first reaches `target`, linear between evaluations; None if never."""
    for (t0, l0, _), (t1, l1, _) in zip(curve, curve[1:]):
        if l1 <= target:
            return t1 if l0 <= target or l0 == l1 else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


# ---------------------------------------------------------------- step time


def step_times(args: argparse.Namespace, data: Data, rounds: int, steps_per_turn: int = 4) -> dict[str, Any]:
    """Median full-step seconds of AdamW and Muon on the same batch, taking turns in rounds (one process)."""
    base = config.load(args.profile).train
    batch = PackedBatches(ArrayBlocks(data.train), args.micro_batch, seed=0).batch(0)
    sides = {}
    for name in ("adamw", "muon"):
        model = build_model(config.ModelConfig(preset=args.preset), len(data.tokenizer), tokenizer=data.tokenizer,
                            seed=0)
        model.train()
        cfg = dataclasses.replace(base, optimizer=name, lr=base.lr, muon_lr=base.lr)
        sides[name] = (model, optim.build_optimizer(model, cfg, "cpu"), [], [])
    targets = int((batch["labels"][:, 1:] != -100).sum())

    def one_step(model: Any, opt: Any, times: list[float], opt_times: list[float]) -> None:
        start = time.perf_counter()
        loss = model(**batch, num_items_in_batch=targets).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], base.grad_clip)
        mid = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        end = time.perf_counter()
        times.append(end - start)
        opt_times.append(end - mid)

    for side in sides.values():  # warm-up, not counted
        one_step(*side[:2], [], [])
    for r in range(rounds):
        for name in (("adamw", "muon") if r % 2 == 0 else ("muon", "adamw")):
            for _ in range(steps_per_turn):
                one_step(*sides[name])
    med = {name: statistics.median(side[2]) for name, side in sides.items()}
    opt_med = {name: statistics.median(side[3]) for name, side in sides.items()}
    # the optimizer runs once per step whatever the batch: with k micro-batches a step (or k x the tokens) the
    # forward + backward grows k-fold and Muon's extra cost shrinks by about as much
    fwd_bwd = statistics.median(t - o for t, o in zip(sides["adamw"][2], sides["adamw"][3]))
    scaled = {k: (opt_med["muon"] - opt_med["adamw"]) / (k * fwd_bwd + opt_med["adamw"]) for k in (1, 4, 8)}
    return {"step_s": med, "optimizer_s": opt_med, "cost": med["muon"] / med["adamw"] - 1.0,
            "steps_each": rounds * steps_per_turn, "cost_at_tokens_per_step": {
                k * args.micro_batch * args.block: v for k, v in scaled.items()}}


# ---------------------------------------------------------------- report


def report_timing(timing: dict[str, Any]) -> None:
    print(f"\nMuon step time: {timing['step_s']['muon'] * 1e3:.1f} ms vs AdamW {timing['step_s']['adamw'] * 1e3:.1f} "
          f"ms per step (medians of {timing['steps_each']} each, interleaved): cost {timing['cost']:+.1%} "
          f"(optimizer alone {timing['optimizer_s']['muon'] * 1e3:.1f} vs {timing['optimizer_s']['adamw'] * 1e3:.1f} ms)")
    print("  Muon's extra optimizer time over k x the forward + backward (k micro-batches a step): "
          + ", ".join(f"{t:,} tokens/step {c:+.1%}" for t, c in timing["cost_at_tokens_per_step"].items()))


def summarize(runs: list[dict[str, Any]], arms: list[Arm]) -> tuple[list[dict[str, Any]], float, int, str]:
    """Per arm: mean and per-seed final loss and bpb; tokens_ratio per seed against the baseline's mean final loss,
    and `tuned_ratio` against the best AdamW arm's (an untuned baseline flatters a new optimizer)."""
    base_runs = [r for r in runs if r["arm"] == "adamw@1"]
    target = statistics.mean(r["loss"] for r in base_runs)
    base_tokens = base_runs[0]["tokens"]
    mean_loss = {a.name: statistics.mean(r["loss"] for r in runs if r["arm"] == a.name) for a in arms}
    tuned = min((a.name for a in arms if a.optimizer == "adamw"), key=mean_loss.__getitem__)

    def ratios(mine: list[dict[str, Any]], loss: float) -> list[float | None]:
        return [(lambda t: None if t is None else t / base_tokens)(tokens_to_reach(r["curve"], loss)) for r in mine]

    rows = []
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm.name]
        rows.append({"arm": arm.name, "lr": mine[0]["lr"], "muon_lr": mine[0]["muon_lr"],
                     "loss": mean_loss[arm.name], "losses": [r["loss"] for r in mine],
                     "bpb": statistics.mean(r["bpb"] for r in mine), "bpbs": [r["bpb"] for r in mine],
                     "tokens_ratio": ratios(mine, target), "tuned_ratio": ratios(mine, mean_loss[tuned]),
                     "seconds": statistics.mean(r["seconds"] for r in mine)})
    return rows, target, base_tokens, tuned


def _fmt(values: list[Any], spec: str) -> str:
    return "/".join("-" if v is None else format(v, spec) for v in values)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    arms, seeds = parse_arms(args.arms), [int(s) for s in args.seeds.split(",")]
    load_start = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"# learning efficiency: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
          f"threads, torch {torch.__version__}; load average at start {' '.join(load_start)}")
    with tempfile.TemporaryDirectory(prefix="learning_eff_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = prepare(args, work)
        steps = max(1, args.tokens // (args.micro_batch * args.block))
        s = data.stats
        params = count_parameters(build_model(config.ModelConfig(preset=args.preset), len(data.tokenizer)))
        print(f"# data: {s['train_documents']} training / {s['heldout_documents']} held-out documents, "
              f"{s['train_tokens']:,} / {s['heldout_tokens']:,} tokens (vocab {s['vocab']}); scored on "
              f"{min(len(data.heldout), args.heldout_blocks)} held-out blocks of {args.block}")
        print(f"# model: {args.preset}, {params:,} parameters; {steps} steps of {args.micro_batch} x {args.block} "
              f"= {steps * args.micro_batch * args.block:,} tokens per run "
              f"({steps * args.micro_batch * args.block / len(data.train) / args.block:.2f} epochs)")
        runs = []
        for seed in seeds if not args.timing_only else ():
            for arm in arms:
                run = run_arm(args, data, arm, seed, steps, work)
                runs.append(run)
                print(f"  {arm.name:<10} seed {seed}: held-out loss {run['loss']:.4f}, bpb {run['bpb']:.4f} "
                      f"({run['seconds']:.0f} s{', from the --work cache' if run.get('cached') else ''})", flush=True)
        timing = step_times(args, data, args.timing_rounds) if any(a.optimizer == "muon" for a in arms) else None
    load_end = Path("/proc/loadavg").read_text().split()[:3] if load_start else []
    if args.timing_only:
        report_timing(timing)
        print(f"# load average at end {' '.join(load_end)}")
        return {"timing": timing, "load_start": load_start, "load_end": load_end}
    rows, target, base_tokens, tuned = summarize(runs, arms)

    print(f"\nbaseline adamw@1: final held-out loss {target:.4f} (mean of {len(seeds)} seeds) at {base_tokens:,} tokens")
    tuned_loss = next(r["loss"] for r in rows if r["arm"] == tuned)
    print(f"best AdamW arm (the tuned baseline): {tuned}, final held-out loss {tuned_loss:.4f}")
    print(f"| arm | lr | muon lr | held-out loss | per seed | bpb | per seed | tokens_ratio per seed | vs {tuned} per seed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['lr']:.2g} | {r['muon_lr'] or '-':{'.2g' if r['muon_lr'] else ''}} | "
              f"{r['loss']:.4f} | {_fmt(r['losses'], '.4f')} | {r['bpb']:.4f} | {_fmt(r['bpbs'], '.4f')} | "
              f"{_fmt(r['tokens_ratio'], '.3f')} | {_fmt(r['tuned_ratio'], '.3f')} |")
    muon_rows = [r for r in rows if r["arm"].startswith("muon")]
    verdict: dict[str, Any] = {}
    if muon_rows and timing:
        best = min(muon_rows, key=lambda r: r["loss"])
        ratios = best["tokens_ratio"]
        met = all(x is not None and x <= 0.77 for x in ratios)
        report_timing(timing)
        print(f"targets: best Muon arm {best['arm']}: tokens_ratio {_fmt(ratios, '.3f')}, against {tuned} "
              f"{_fmt(best['tuned_ratio'], '.3f')} (target <= 0.77 on every "
              f"seed: {'met' if met else 'NOT met'}); step-time cost {timing['cost']:+.1%} (target <= +10%: "
              f"{'met' if timing['cost'] <= 0.10 else 'NOT met'})")
        verdict = {"best_muon": best["arm"], "tokens_ratio_met": met, "cost_met": timing["cost"] <= 0.10,
                   "tuned_adamw": tuned, "tuned_ratio": best["tuned_ratio"]}
    print(f"# load average at end {' '.join(load_end)}")
    report = {"args": vars(args), "data": data.stats, "params": params, "steps": steps, "runs": runs, "rows": rows,
              "baseline_loss": target, "baseline_tokens": base_tokens, "timing": timing, "verdict": verdict,
              "load_start": load_start, "load_end": load_end, "torch": torch.__version__}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
