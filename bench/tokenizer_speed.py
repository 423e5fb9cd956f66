"""Tokenizer speed: SentencePiece against the exported Hugging Face tokenizer on Debian's Japanese text.

Trains one tokenizer on a slice of the text, then encodes and decodes the same lines with both libraries,
side by side in one run, and prints medians of several repeats.
Usage: python bench/tokenizer_speed.py [--vocab 8000] [--lines 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from nbhelpers import sources
from nbhelpers import tokenizer as T


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--lines", type=int, default=50_000, help="lines encoded per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = sources.debian_files()
    if not files:
        raise SystemExit("needs Debian's Japanese texts: apt-get install debian-reference-ja manpages-ja")
    lines = [ln for path in files for ln in sources.read_debian_file(path).split("\n") if ln.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        hf = T.train_tokenizer(lines[::10], tmp, vocab_size=args.vocab, progress=False)
        train_s = time.perf_counter() - start
        sp = T.load_sentencepiece(tmp)
    text = lines[1::2][: args.lines]
    chars = sum(map(len, text))
    ids = sp.encode(text)
    tokens = sum(map(len, ids))
    rows = [
        ("spm encode (batch, all cores)", median_seconds(lambda: sp.encode(text, num_threads=0), args.repeats)),
        ("HF encode (batch)", median_seconds(lambda: hf(text)["input_ids"], args.repeats)),
        ("spm encode (one line per call)", median_seconds(lambda: [sp.encode(t) for t in text], args.repeats)),
        ("HF encode (one line per call)", median_seconds(lambda: [hf.encode(t) for t in text], args.repeats)),
        ("spm decode (batch)", median_seconds(lambda: sp.decode(ids), args.repeats)),
        ("HF decode (batch)", median_seconds(lambda: hf.batch_decode(ids), args.repeats)),
    ]
    base = rows[0][1]
    print(f"trained vocab {args.vocab} on {sum(map(len, lines[::10])):,} characters in {train_s:.1f}s")
    print(f"{len(text):,} lines, {chars:,} characters, {tokens:,} tokens; median of {args.repeats}")
    print(f"{'operation':34s} {'seconds':>8s} {'M chars/s':>10s} {'vs spm batch':>13s}")
    for name, sec in rows:
        print(f"{name:34s} {sec:8.3f} {chars / sec / 1e6:10.2f} {sec / base:12.1f}x")


if __name__ == "__main__":
    main()
