"""Corpus throughput on Debian's Japanese texts: raw SentencePiece encoding (the limit) against our pipeline.

Measured in one run, on the same text and the same cores:
  raw    SentencePiece batch encoding of the cleaned text, `num_threads` = all cores (the limit)
  pack   our tokenize + pack + write of the already-cleaned text (build_corpus(..., cleaning=False))
  clean  our cleaning alone on all cores (characters per second, compared with raw encoding's)
  build  the whole build from the same text before cleaning (a plain-text file): read, clean, dedup, mix
         0.9 / 0.1 with generated arithmetic, tokenize, pack, write; also shown from the registry's debian_ja
         source, whose reader parses Debian's HTML and troff (a cost of that source, not of the build)
  rss    peak RSS of a pack of N and of 10 N tokens, each in a fresh subprocess (streaming must keep it flat)
  mix    debian share of characters when mixing 0.8 / 0.2 with arithmetic: interleave_datasets vs our quotas

The last line is `raw_tokens_per_s=... pack_tokens_per_s=... ratio=... clean_chars_ratio=... build_ratio=...`:
rates are medians over rounds, ratios the medians of each round's own ratio (the measurements of one round run
back to back, on the same load).
Usage: python bench/pack_throughput.py [--tokenizer DIR] [--workers N] [--repeats 5] [--epochs 3] [--rss-tokens 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece

from nbhelpers import sources
from nbhelpers.config import CorpusConfig
from nbhelpers.corpus import build_corpus, mixed_documents
from nbhelpers.corpus.clean import clean_many, warm
from nbhelpers.corpus.mixing import resolve_workers
from nbhelpers.corpus.producer import corpus_stream, make_parts
from nbhelpers.tokenizer import VOCAB_TOO_HIGH

BATCH_CHARS = 64_000  # raw characters per task of the `clean` measurement (about one slice of a file)

CACHE = Path(tempfile.gettempdir()) / "nbhelpers-bench"


def bench_tokenizer(texts: list[str], vocab: int, tag: str = "", every: int = 3, sentences: int = 100_000,
                    hard_limit: bool = True) -> Path:
    """A unigram SentencePiece model with the project's settings on every `every`-th text, trained once and cached.

    `sentences` caps SentencePiece's input sample; without `hard_limit` a vocabulary the text cannot fill is
    trained as far as it goes. With only part of Debian's Japanese texts installed (a few man pages), the sample
    may not support `vocab` pieces: the tokenizer then gets as many as it supports, and says so and what to install.
    """
    out = CACHE / f"{tag}tok{vocab}"
    if (out / "spm.model").exists():
        return out
    sample = list(itertools.islice((t for t in texts if len(t) > 20), 0, None, every))
    chars = sum(map(len, sample))
    print(f"training a {vocab}-piece tokenizer on {chars:,} characters (cached in {out})", flush=True)
    try:
        model = _train_bench_tokenizer(sample, vocab, sentences, hard_limit)
    except RuntimeError as err:
        found = VOCAB_TOO_HIGH.search(str(err))
        if not found:
            raise
        vocab = int(found.group(2))
        out = CACHE / f"{tag}tok{vocab}"
        print(f"the Debian texts installed here ({chars:,} characters in the sample) support only {vocab} pieces: "
              f"using a {vocab}-piece tokenizer, so the figures are not comparable with docs/BENCHMARKS.md; "
              "`apt-get install debian-reference-ja manpages-ja` (all of them) for the documented setting", flush=True)
        if (out / "spm.model").exists():
            return out
        model = _train_bench_tokenizer(sample, vocab, sentences, hard_limit)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spm.model").write_bytes(model)
    return out


def _train_bench_tokenizer(sample: list[str], vocab: int, sentences: int, hard_limit: bool) -> bytes:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sample), model_writer=model, vocab_size=vocab, model_type="unigram",
        character_coverage=0.9995, byte_fallback=True, unk_id=0, pad_id=1, bos_id=2, eos_id=3,
        split_by_whitespace=False, max_sentence_length=16384, input_sentence_size=sentences,
        shuffle_input_sentence=True, num_threads=os.cpu_count() or 1, minloglevel=2, hard_vocab_limit=hard_limit)
    return model.getvalue()


def _warm(level: float) -> None:
    warm(level)


def _clean_task(batch: list[str]) -> int:
    return sum(len(t) for t in clean_many(batch, 0.5)[0])


def _hwm_mb(pid: int | str = "self") -> float:
    """Peak resident set of a process (VmHWM: per address space, so not inherited from the parent at fork)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(cfg: CorpusConfig, tokenizer: str | Path, out: Path, cleaning: bool = True) -> int:
    """The corpus build as 02 and 03 run it: the validation shard, then the stream as one part; tokens written."""
    m = build_corpus(cfg, tokenizer, out / "c", progress=False, cleaning=cleaning)
    stream, start, hashes = corpus_stream(cfg, tokenizer, out / "c", out / "parts", workers=resolve_workers(cfg.workers))
    parts = make_parts(stream, start, hashes, 1)
    return m["val"]["tokens"] + sum(p["tokens"] for p in parts)


def rss_child(text_file: str, tokenizer: str, tokens: int, workers: int, out: str) -> None:
    """Subprocess body: pack `tokens` tokens of the cleaned text (repeating it) and report peak RSS.

    getrusage's ru_maxrss would report the parent's size at fork when that is larger, so the main process's
    peak comes from VmHWM and the children's from sampling them every 20 ms (psutil).
    """
    import threading

    import psutil

    peak_child = [0.0]
    done = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not done.is_set():
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a child may end between listing and reading
                    peak_child[0] = max(peak_child[0], child.memory_info().rss / 2**20)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cfg = CorpusConfig(mixture={f"files:{text_file}": 1.0}, block_len=512, token_budget=tokens, part_tokens=tokens,
                       val_blocks=1, dedup=False, min_chars=0, shuffle_buffer=0, workers=workers)
    build(cfg, tokenizer, Path(out), cleaning=False)
    done.set()
    sampler.join()
    print(json.dumps({"main_mb": _hwm_mb(), "worker_mb": peak_child[0]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="", help="tokenizer folder with spm.model (default: train one, cached)")
    ap.add_argument("--vocab", type=int, default=8000, help="vocabulary of the trained bench tokenizer")
    ap.add_argument("--workers", type=int, default=0, help="cores to use; 0 = all")
    ap.add_argument("--repeats", type=int, default=5, help="rounds of the four measurements (medians are reported)")
    ap.add_argument("--epochs", type=int, default=3,
                    help="passes over the text per measurement (raw encodes it this many times; pack and build read "
                         "it as epochs), so that a build's fixed cost (~0.07 s: processes, fsync) weighs as little as "
                         "in a real build of minutes")
    ap.add_argument("--rss-tokens", type=int, default=1_000_000, help="tokens of the small RSS run (the big one is 10x)")
    ap.add_argument("--rss-child", nargs=5, metavar=("TEXT", "TOKENIZER", "TOKENS", "WORKERS", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        text_file, tok, tokens, workers, out = args.rss_child
        rss_child(text_file, tok, int(tokens), int(workers), out)
        return

    if not sources.debian_files():
        sys.exit("Debian's Japanese texts are absent: apt-get install debian-reference-ja manpages-ja")
    workers = resolve_workers(args.workers)
    raw_docs = list(sources.iter_texts("debian_ja"))
    tok_dir = Path(args.tokenizer) if args.tokenizer else bench_tokenizer(raw_docs, args.vocab)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tok_dir / "spm.model"))
    # the cleaned text as a plain-text source: one document per blank-line-separated block (so a document's
    # own blank lines become single newlines), the cheapest format for the reader to split
    cleaned = [t.replace("\n\n", "\n") for t in clean_many(raw_docs, 0.5)[0] if len(t) >= 50]
    work = Path(tempfile.mkdtemp(prefix="pack_bench_"))
    text_file = work / "clean" / "debian.txt"
    text_file.parent.mkdir()
    text_file.write_text("\n\n".join(cleaned) + "\n", encoding="utf-8")
    # the same text before cleaning, for the whole build: the build's input is raw text, not Debian's HTML and troff
    # (parsing those is the source reader's cost, measured separately on the last line of the table)
    raw_file = work / "raw" / "debian.txt"
    raw_file.parent.mkdir()
    raw_file.write_text("\n\n".join(t.replace("\n\n", "\n") for t in raw_docs) + "\n", encoding="utf-8")
    raw_chars = sum(map(len, raw_docs))
    clean_chars = sum(map(len, cleaned))
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, using {workers}; load average before: "
          f"{load[0]:.1f} (other processes share the CPU when it exceeds the core count)")
    print(f"text: Debian ja, {len(raw_docs):,} raw documents / {raw_chars:,} chars; cleaned {len(cleaned):,} "
          f"documents / {clean_chars:,} chars; tokenizer {sp.get_piece_size()} pieces; {args.repeats} repeats, medians; "
          f"{args.epochs} epochs of the text per measurement")

    # One round = raw, pack, clean, build back to back; medians over rounds, so that a change in the load of
    # this shared machine hits every measurement alike.
    block = 512
    epochs = args.epochs
    n_tokens = sum(len(x) for x in sp.encode(cleaned)) + len(cleaned)  # + one EOS per document, as packed
    raw_input = cleaned * epochs  # the same documents again: raw encodes what pack reads in `epochs` epochs
    budget = int(n_tokens * epochs * 0.97) // block * block - 4 * block
    pack_cfg = CorpusConfig(mixture={f"files:{text_file}": 1.0}, block_len=block, token_budget=budget,
                            part_tokens=budget, val_blocks=4, dedup=False, min_chars=0, shuffle_buffer=0,
                            on_exhausted="repeat" if epochs > 1 else "stop", workers=workers)
    build_budget = int(n_tokens * epochs * 0.75) // block * block  # repeats are new epochs, not duplicates
    build_cfg = CorpusConfig(mixture={f"files:{raw_file}": 0.9, "arithmetic": 0.1}, block_len=block,
                             token_budget=build_budget, part_tokens=build_budget, val_blocks=4, workers=workers)
    source_cfg = dataclasses.replace(build_cfg, mixture={"debian_ja": 0.9, "arithmetic": 0.1})
    batches, cur, size = [], [], 0
    for t in raw_docs:
        cur.append(t)
        size += len(t)
        if size >= BATCH_CHARS:  # the batch size the build gives its workers
            batches.append(cur)
            cur, size = [], 0
    batches.append(cur)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    times: dict[str, list[float]] = {"raw": [], "pack": [], "clean": [], "build": [], "source": []}
    with ctx.Pool(workers, initializer=_warm, initargs=(0.5,)) as pool:
        pool.map(_clean_task, batches[:workers])  # the pool is warm: its regexes are built once per process
        for r in range(args.repeats):
            # raw: SentencePiece's own threaded batch encoding of the cleaned text (the limit)
            t = time.perf_counter()
            sp.encode(raw_input, num_threads=workers)
            times["raw"].append(time.perf_counter() - t)
            # pack: our pipeline on the same cleaned text, cleaning off
            t = time.perf_counter()
            packed = build(pack_cfg, tok_dir, work / f"pack{r}", cleaning=False)
            times["pack"].append(time.perf_counter() - t)
            # clean: our cleaning alone on all cores, on the raw text
            t = time.perf_counter()
            pool.map(_clean_task, batches)
            times["clean"].append(time.perf_counter() - t)
            # build: the whole pipeline from the raw source (read, clean, dedup, mix, tokenize, pack, write)
            t = time.perf_counter()
            built = build(build_cfg, tok_dir, work / f"build{r}")
            times["build"].append(time.perf_counter() - t)
            # the same build reading the registry's debian_ja source (HTML and troff parsed by the source reader)
            t = time.perf_counter()
            sourced = build(source_cfg, tok_dir, work / f"source{r}")
            times["source"].append(time.perf_counter() - t)
    t_raw, t_pack, t_clean, t_build, t_source = (statistics.median(times[k])
                                                 for k in ("raw", "pack", "clean", "build", "source"))
    raw_tps = n_tokens * epochs / t_raw
    raw_cps = clean_chars * epochs / t_raw
    pack_tps = packed / t_pack
    clean_cps = raw_chars / t_clean
    build_tps = built / t_build
    source_tps = sourced / t_source

    # rss: N and 10 N tokens packed, each in a fresh process
    rss = {}
    for mult in (1, 10):
        n = args.rss_tokens * mult
        res = subprocess.run([sys.executable, __file__, "--rss-child", str(text_file), str(tok_dir), str(n), str(workers),
                              str(work / f"rss{mult}")], capture_output=True, text=True, check=True)
        rss[mult] = json.loads(res.stdout.strip().splitlines()[-1])

    # mix: realised character share of a 0.8 / 0.2 mixture, interleave_datasets (document draws) vs quotas
    import datasets

    arith = [str(t) for t in itertools.islice(mixed_documents(CorpusConfig(mixture={"arithmetic": 1.0}, workers=1)), 20000)]
    ds = datasets.interleave_datasets(
        [datasets.Dataset.from_dict({"text": cleaned}).to_iterable_dataset(),
         datasets.Dataset.from_dict({"text": arith}).to_iterable_dataset()],
        probabilities=[0.8, 0.2], seed=0, stopping_strategy="first_exhausted")
    inter_deb = inter_all = 0
    arith_set = set(arith)
    for r in itertools.islice(ds, 20000):
        inter_all += len(r["text"])
        inter_deb += 0 if r["text"] in arith_set else len(r["text"])
    quota = list(itertools.islice(mixed_documents(CorpusConfig(mixture={"debian_ja": 0.8, "arithmetic": 0.2},
                                                               workers=workers)), 20000))
    q_deb = sum(len(d) for d in quota if d.source == "debian_ja") / sum(map(len, quota))

    rows = [
        ("raw spm encode (limit)", f"{raw_tps:,.0f} tok/s", f"{raw_cps:,.0f} chars/s", f"{t_raw:.2f} s"),
        ("pack (tokenize+pack+write)", f"{pack_tps:,.0f} tok/s", f"{packed:,} tokens", f"{t_pack:.2f} s"),
        ("clean alone", "", f"{clean_cps:,.0f} chars/s", f"{t_clean:.2f} s"),
        ("whole build", f"{build_tps:,.0f} tok/s", f"{built:,} tokens", f"{t_build:.2f} s"),
        ("build from debian_ja source", f"{source_tps:,.0f} tok/s", f"ratio {source_tps / raw_tps:.3f}",
         f"{t_source:.2f} s"),
    ]
    print(f"\n{'stage':30} {'tokens/s':>16} {'':>20} {'median':>9}")
    for r in rows:
        print(f"{r[0]:30} {r[1]:>16} {r[2]:>20} {r[3]:>9}")
    for mult in (1, 10):
        print(f"peak RSS packing {args.rss_tokens * mult:>11,} tokens: main {rss[mult]['main_mb']:7.1f} MB, "
              f"largest worker {rss[mult]['worker_mb']:7.1f} MB")
    growth_main = rss[10]["main_mb"] / rss[1]["main_mb"] - 1
    growth_worker = rss[10]["worker_mb"] / rss[1]["worker_mb"] - 1
    print(f"RSS growth for 10x the text: main {growth_main:+.1%}, worker {growth_worker:+.1%} (target < +20%)")
    print(f"debian_ja share of characters, requested 0.800: interleave_datasets {inter_deb / inter_all:.3f}, "
          f"our quota mixing {q_deb:.3f}")
    print("seconds per round: " + "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v) for k, v in times.items()))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    # the ratios are paired within each round (raw, then pack, clean and build on the same load) and their
    # median is reported; the ratio of the medians above is printed too
    rounds = list(zip(times["raw"], times["pack"], times["clean"], times["build"]))
    ratio = statistics.median(packed / p / (n_tokens * epochs / r) for r, p, _, _ in rounds)
    clean_ratio = statistics.median(raw_chars / c / (clean_chars * epochs / r) for r, _, c, _ in rounds)
    build_ratio = statistics.median(built / b / (n_tokens * epochs / r) for r, _, _, b in rounds)
    print(f"ratios of the medians: pack {pack_tps / raw_tps:.3f}, clean {clean_cps / raw_cps:.3f}, "
          f"build {build_tps / raw_tps:.3f}")
    print(f"raw_tokens_per_s={raw_tps:.0f} pack_tokens_per_s={pack_tps:.0f} ratio={ratio:.3f} "
          f"clean_chars_ratio={clean_ratio:.3f} build_ratio={build_ratio:.3f}")


if __name__ == "__main__":
    main()
