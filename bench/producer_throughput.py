"""The corpus producer's tokens/s per host core against each profile's device demand: is there headroom >= 3?

Measured here, on Debian's Japanese texts (debian-reference-ja, manpages-ja), with the full pipeline the producer
runs while 03 trains (read, clean, deduplicate, mix 0.9 / 0.1 with generated arithmetic, tokenize, pack, write
parts): the producer's own `produce` function, in this process, each variant `--repeats` times, alternating.
The tokenizer is a 32000-piece unigram (the report's size) trained on the even-numbered documents; the
producer reads the odd-numbered ones, so the tokenizer has not seen the text it encodes.

  one process   workers=1, what the producer runs with where the host has no spare core (Colab, Kaggle T4 x2):
                tokens per CPU-second of this process (reading, cleaning, tokenizing, mixing, packing) = per core
  hub path      the same, the text read as a streamed hub source: `datasets` streaming parquet rows (the hub's
                loading call pointed at local parquet files, so the network is not measured)
  pool          workers=2 (this machine's cores): tokens per CPU-second of the workers (per core of a pool)
                and per CPU-second of the main process (mixing, packing: the ceiling a pool of any size hits)

Device demand: the planner's tokens/s at MFU 0.5 for each profile's model and device (`planner.make_plan`).
Scaled, not measured: producer tokens/s on a platform = the one-process rate of hub text where the producer is one
process, else min(its worker processes x a pool worker's rate, the main process's ceiling when it also reads the
hub), with the host core counts in HOSTS. CPU-seconds make the per-core figure independent of other
jobs on this machine; wall-clock rates are printed too. The last line is `headroom_<profile>=...`.

Usage: python bench/producer_throughput.py [--tokens 3000000] [--repeats 3] [--vocab 32000]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pack_throughput import bench_tokenizer  # this folder's script: the same tokenizer recipe

from nbhelpers import config, planner, sources
from nbhelpers.corpus import build_corpus
from nbhelpers.corpus.producer import corpus_stream, make_parts, training_workers
from nbhelpers.device import DeviceChoice

# The platforms' host vCPUs (a vCPU is one hyperthread there; this machine's cores have one thread each), the
# training processes on them, and where the figure comes from.
HOSTS = {
    "colab_t4": (2, 1, "Colab free T4 runtime: 2 vCPUs (cpu_count_logical 2, 1 core) in wandb-metadata.json of "
                       "Colab runs, e.g. huggingface.co/Gyaneshere/my_awesome_mind_model"),
    "kaggle_t4x2": (4, 2, "Kaggle GPU T4 x2: 4 vCPUs (cpu_count_logical 4, 2 cores) in wandb-metadata.json of Kaggle "
                          "runs, e.g. huggingface.co/Femboyuwu2000/bloomz-1b1-vn-chat"),
    "kaggle_tpu_v5e8": (224, 1, "TPU v5e 8-chip VM (ct5lp-hightpu-8t): 224 vCPUs, 384 GB, "
                                "docs.cloud.google.com/tpu/docs/v5e (VM types)"),
}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cfg: config.CorpusConfig, tok: Path, out: Path) -> dict[str, float]:
    """One producer run in this process: the stream's first part (the validation shard is built before, untimed)."""
    build_corpus(cfg, tok, out / "c", progress=False, workers=1)
    stream, start, hashes = corpus_stream(cfg, tok, out / "c", out / "parts", workers=cfg.workers)
    wall, cpu, kids = time.perf_counter(), time.process_time(), _children_cpu()
    parts = make_parts(stream, start, hashes, 1)
    tokens = sum(p["tokens"] for p in parts)
    return {"tokens": tokens, "wall": time.perf_counter() - wall, "main_cpu": time.process_time() - cpu,
            "worker_cpu": _children_cpu() - kids, "chars": sum(s["stats"]["characters_out"]
                                                               for s in parts[0]["end"]["sources"].values())
            - sum(s["stats"]["characters_out"] for s in parts[0]["start"]["sources"].values())}


@contextlib.contextmanager
def hub_from_parquet(files: list[str]):
    """The registry's hub loading call pointed at local parquet files: `datasets` streams them as it streams the hub."""
    import datasets

    real = sources.open_hub
    sources.REGISTRY["bench_hub"] = sources.Source("bench_hub", "hub", "local/debian-ja-parquet")
    sources.open_hub = lambda src: datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
    try:
        yield "bench_hub"
    finally:
        sources.open_hub = real
        del sources.REGISTRY["bench_hub"]


def demand(profile: str) -> float:
    """The planner's tokens/s for the profile's model on its device at MFU 0.5."""
    cfg = config.load(profile)
    t4 = DeviceChoice("cuda", "cuda:0", "Tesla T4", "fp16", True, "sdpa", 1, 15 * 2**30, (7, 5), "bench")
    choices = {
        "colab_t4": (t4, 1),
        "kaggle_t4x2": (dataclasses.replace(t4, num_devices=2), 2),
        "kaggle_tpu_v5e8": (DeviceChoice("xla", "xla", "TPU v5 lite", "bf16", False, "eager", 8, 16 * 10**9, None,
                                         "bench"), 1),
    }
    choice, procs = choices[profile]
    return planner.make_plan(cfg, 32000, choice, assumed_mfu=0.5, processes=procs).tokens_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=3_000_000, help="tokens each run produces (one part)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each variant (medians are reported)")
    ap.add_argument("--vocab", type=int, default=32000, help="vocabulary of the bench tokenizer")
    args = ap.parse_args()
    if not sources.debian_files():
        sys.exit("Debian's Japanese texts are absent: apt-get install debian-reference-ja manpages-ja")
    docs = list(sources.iter_texts("debian_ja"))
    tok = bench_tokenizer(docs[0::2], args.vocab, tag="producer-", every=1, sentences=200_000, hard_limit=False)
    text = docs[1::2]
    work = Path(tempfile.mkdtemp(prefix="producer_bench_"))
    txt = work / "debian-odd.txt"
    txt.write_text("\n\n".join(t.replace("\n\n", "\n") for t in text) + "\n", encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = []
    for k in range(4):  # a hub dataset is a few parquet shards
        path = work / f"train-{k:05d}-of-00004.parquet"
        pq.write_table(pa.table({"text": text[k::4]}), path, row_group_size=1000)
        shards.append(str(path))
    load0 = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores (1 thread each); load average before "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print(f"text: Debian ja, odd documents {len(text):,} / {sum(map(len, text)):,} chars (tokenizer: {args.vocab} "
          f"pieces on the even ones); {args.tokens:,} tokens a run, {args.repeats} runs each, medians")
    base = dict(block_len=512, token_budget=args.tokens, part_tokens=args.tokens, val_blocks=4)
    variants = {
        "one process": config.CorpusConfig(mixture={f"files:{txt}": 0.9, "arithmetic": 0.1}, workers=1, **base),
        "hub path": None,
        "pool (2 workers)": config.CorpusConfig(mixture={f"files:{txt}": 0.9, "arithmetic": 0.1}, workers=2, **base),
    }
    results: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    with hub_from_parquet(shards) as hub:
        variants["hub path"] = config.CorpusConfig(mixture={hub: 0.9, "arithmetic": 0.1}, workers=1, **base)
        for r in range(args.repeats):
            for name, cfg in variants.items():
                results[name].append(run(cfg, tok, work / f"{name.split()[0]}{r}"))
    load1 = os.getloadavg()

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    def rate(name: str, cpu: str) -> float:
        return statistics.median(x["tokens"] / x[cpu] for x in results[name])

    per_core = rate("one process", "main_cpu")
    hub_core = rate("hub path", "main_cpu")
    worker_core = rate("pool (2 workers)", "worker_cpu")  # each worker cleans and tokenizes its share
    ceiling = rate("pool (2 workers)", "main_cpu")
    chars_per_token = statistics.median(x["chars"] / x["tokens"] for x in results["one process"])
    print(f"\n{'variant':18} {'tokens/s (wall)':>16} {'tokens per CPU-s':>17} {'':>30}")
    for name in variants:
        wall = statistics.median(x["tokens"] / x["wall"] for x in results[name])
        note = ""
        if name.startswith("pool"):
            note = f"per worker core {worker_core:,.0f}; main ceiling {ceiling:,.0f}"
        print(f"{name:18} {wall:>16,.0f} {rate(name, 'main_cpu') if name != 'pool (2 workers)' else worker_core:>17,.0f}"
              f" {note:>30}")
    print(f"characters per token: {chars_per_token:.2f}")
    print(f"\n{'profile':16} {'vCPUs':>5} {'trainers':>8} {'producer':>8} {'producer tok/s':>15} {'demand tok/s':>13} "
          f"{'headroom':>8}")
    line = []
    # the hub's rows are decoded by the main process's reader thread: with a pool, that cost joins the main's
    hub_cost = max(0.0, 1 / hub_core - 1 / per_core)  # CPU-seconds per token of reading the hub stream
    hub_ceiling = 1 / (1 / ceiling + hub_cost)
    print(f"reading hub rows: {hub_cost * 1e6:.3f} us a token; the main process's ceiling with a pool reading the hub: "
          f"{hub_ceiling:,.0f} tokens/s")
    for profile, (vcpus, trainers, _) in HOSTS.items():
        procs = training_workers(0, trainers, cores=vcpus)  # what the producer runs there
        if procs == 1:
            supply = min(per_core, hub_core)  # one process does everything; hub text is the slower case
        else:
            supply = min(procs * worker_core, hub_ceiling)
        need = demand(profile)
        print(f"{profile:16} {vcpus:>5} {trainers:>8} {procs:>8} {supply:>15,.0f} {need:>13,.0f} {supply / need:>8.1f}")
        line.append(f"headroom_{profile}={supply / need:.1f}")
    for profile, (_, _, where) in HOSTS.items():
        print(f"  {profile}: {where}")
    print(f"load average after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(f"per_core_tokens_per_s={per_core:.0f} hub_path_per_core={hub_core:.0f} pool_worker_per_core={worker_core:.0f} "
          f"main_ceiling={ceiling:.0f} " + " ".join(line))


if __name__ == "__main__":
    main()
