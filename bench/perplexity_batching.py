"""Perplexity throughput: the per-window loop of the usual strided recipe against evaluation.perplexity's batches.

Measured in one run, on the same model, texts and cores (scored tokens per second, median of --repeats):
  loop   one window per forward, labels masked to the window's new tokens, loss read back with .item() each time
  b1     nbhelpers.evaluation.perplexity, batch_size=1 (windows of all texts, one host transfer at the end)
  b8     the same with batch_size=8 (windows right-padded and masked)
Both compute the same numbers; the script checks they agree before timing.
The model is the `smoke` preset (or --preset) with a unigram tokenizer trained here on the bundled prose; the
texts are Debian's Japanese documentation when installed, else the bundled prose repeated.

The last line is `loop_tok_s=... b1_tok_s=... b8_tok_s=... b8_vs_loop=...`.
Usage: python bench/perplexity_batching.py [--preset smoke] [--texts 16] [--chars 3000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from nbhelpers import evaluation, sources
from nbhelpers.config import ModelConfig
from nbhelpers.model import build_model


def make_tokenizer(texts: list[str], vocab: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=vocab, unk_token="<unk>",
                                                           special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def load_texts(n: int, chars: int) -> tuple[list[str], str]:
    files = sources.debian_files()
    if files:
        text = "".join(sources.read_debian_file(f) for f in files[:4])
        where = "Debian debian-reference-ja / manpages-ja"
    else:
        text = "".join(evaluation.heldout_prose()) * 50
        where = "bundled prose, repeated"
    return [text[i * chars:(i + 1) * chars] for i in range(n)], where


def loop_recipe(model, tokenizer, texts: list[str], max_length: int, stride: int) -> tuple[float, int]:
    """The familiar per-window loop: one forward per window, a host read per window."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = [tokenizer.eos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
            for begin, end, new in evaluation.windows(len(ids), max_length, stride):
                window = torch.tensor([ids[begin:end]])
                labels = window.clone()
                labels[:, : end - begin - new] = -100
                labels[:, 0] = -100
                scored = int((labels[:, 1:] != -100).sum())
                nll += model(input_ids=window, labels=labels).loss.item() * scored
                count += scored
    return nll, count


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--chars", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    texts, where = load_texts(args.texts, args.chars)
    tokenizer = make_tokenizer(texts + evaluation.heldout_prose(), 2000)
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset=args.preset), len(tokenizer), tokenizer=tokenizer).eval()
    max_length = model.config.max_position_embeddings
    stride = max_length // 2

    ref_nll, ref_count = loop_recipe(model, tokenizer, texts, max_length, stride)
    ours = evaluation.perplexity(model, tokenizer, texts, stride=stride, batch_size=8, progress=False)
    assert sum(ours.tokens) == ref_count, (sum(ours.tokens), ref_count)
    assert math.isclose(sum(ours.nll), ref_nll, rel_tol=1e-4), (sum(ours.nll), ref_nll)

    t_loop, _ = timed(lambda: loop_recipe(model, tokenizer, texts, max_length, stride), args.repeats)
    t_b1, _ = timed(lambda: evaluation.perplexity(model, tokenizer, texts, stride=stride, batch_size=1,
                                                  progress=False), args.repeats)
    t_b8, _ = timed(lambda: evaluation.perplexity(model, tokenizer, texts, stride=stride, batch_size=8,
                                                  progress=False), args.repeats)
    rates = {name: ref_count / t for name, t in (("loop", t_loop), ("b1", t_b1), ("b8", t_b8))}
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"model: {args.preset} ({sum(p.numel() for p in model.parameters()):,} parameters), context {max_length}, "
          f"stride {stride}; texts: {len(texts)} x {args.chars} chars of {where}, {ref_count:,} scored tokens")
    print("| method | seconds (median) | scored tokens/s |")
    print("|---|---|---|")
    for name, t in (("loop", t_loop), ("b1", t_b1), ("b8", t_b8)):
        print(f"| {name} | {t:.3f} | {rates[name]:,.0f} |")
    print(f"loop_tok_s={rates['loop']:.0f} b1_tok_s={rates['b1']:.0f} b8_tok_s={rates['b8']:.0f} "
          f"b8_vs_loop={rates['b8'] / rates['loop']:.2f}")


if __name__ == "__main__":
    main()
