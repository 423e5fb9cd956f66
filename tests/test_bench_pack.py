"""bench/pack_throughput.py on a machine with little Japanese text: it adapts the tokenizer and says so."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import sentencepiece

from nbhelpers import sources

BENCH = Path(__file__).resolve().parents[1] / "bench" / "pack_throughput.py"


def test_the_bench_tokenizer_adapts_to_a_few_man_pages(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("pack_throughput", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "CACHE", tmp_path)
    few = list(itertools.islice(sources.iter_texts("bundled_prose"), 60))  # about as much as a few man pages
    out = bench.bench_tokenizer(few, 8000)
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(out / "spm.model")).get_piece_size()
    said = capsys.readouterr().out
    assert pieces < 8000 and out == tmp_path / f"tok{pieces}"
    assert f"support only {pieces} pieces" in said and "apt-get install debian-reference-ja manpages-ja" in said
    assert bench.bench_tokenizer(few, pieces) == out  # cached under what it holds
