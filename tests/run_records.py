"""A finished run directory made from real parts (a tiny GPT-NeoX saved by save_pretrained, its tokenizer, the
records 01-06 write), for the model card, report card and Hub tests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from loop_tiny import tiny_model, tiny_tokenizer

from nbhelpers import config
from nbhelpers.evaluation import PerplexityResult, save_results

MIXTURE = {"wikipedia_ja": 0.5, "c4_ja": 0.3, "wikibooks_ja": 0.1, "jamard": 0.1}
SFT_DATA = ("dolly_ja", "bundled_instructions")


def _jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _final(folder: Path, seed: int) -> None:
    model = tiny_model(seed=seed, dropout=0.0)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)


def make_run(root: Path, stages: tuple[str, ...] = ("pretrain", "sft"), evaluated: bool = True) -> Path:
    """A run directory at `root` with the records of the named stages (and 06's results when `evaluated`)."""
    cfg = config.smoke()
    cfg = dataclasses.replace(cfg, corpus=dataclasses.replace(cfg.corpus, mixture=MIXTURE),
                              sft=dataclasses.replace(cfg.sft, data=SFT_DATA))
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    metrics = {"tokenizer": {"vocab_size": 61}, "corpus": {"block_len": 16, "realised_shares": {
        "wikipedia_ja": 0.52, "c4_ja": 0.29, "wikibooks_ja": 0.09, "jamard": 0.1}}}
    if "pretrain" in stages:
        # two sessions: the second resumed at step 20; hours = 1800 s + 1200 s
        _jsonl(root / "pretrain" / "metrics.jsonl", [
            {"kind": "event", "step": 0, "event": "start", "message": "cpu"},
            {"kind": "train", "step": 10, "loss": 9.5, "tokens": 6400, "elapsed_s": 900.0},
            {"kind": "eval", "step": 10, "split": "val", "loss": 8.25, "ppl": 3827.6, "bpb": 3.1},
            {"kind": "train", "step": 20, "loss": 7.0, "tokens": 12800, "elapsed_s": 1800.0},
            {"kind": "event", "step": 20, "event": "resume", "message": "resumed"},
            {"kind": "train", "step": 30, "loss": 5.5, "tokens": 19200, "elapsed_s": 1200.0},
            {"kind": "eval", "step": 30, "split": "val", "loss": 4.75, "ppl": 115.6, "bpb": 1.875},
        ])
        _final(root / "pretrain" / "final", seed=1)
        metrics["pretrain"] = {"preset": "tiny", "parameters": 54321, "steps": 30, "tokens_seen": 19200,
                               "device": "CPU (test)", "precision": "fp32"}
    if "sft" in stages:
        _jsonl(root / "sft" / "metrics.jsonl", [
            {"kind": "event", "step": 0, "event": "start", "message": "cpu"},
            {"kind": "eval", "step": 0, "split": "instructions", "loss": 3.5},
            {"kind": "train", "step": 8, "loss": 2.5, "tokens": 2048, "elapsed_s": 360.0},
            {"kind": "eval", "step": 8, "split": "instructions", "loss": 1.25},
        ])
        _final(root / "sft" / "final", seed=2)
        metrics["sft"] = {"steps": 8, "instruction_loss_before": 3.5, "instruction_loss_after": 1.25,
                          "corpus_loss_before": 4.75, "corpus_loss_after": 4.9}
    (root / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if evaluated:
        def ppl(scale: float) -> PerplexityResult:
            return PerplexityResult(mean_ppl=100.0 * scale, token_ppl=96.5 * scale, per_text=(100.0 * scale,),
                                    tokens=(1234,), nll=(5000.0,), max_length=16, stride=8, bytes=(3000,),
                                    bpb=2.4046 * scale)

        lm = {"results": {"jcommonsenseqa": {"alias": "jcommonsenseqa", "acc,none": 0.2125, "acc_stderr,none": 0.03}},
              "versions": {"jcommonsenseqa": 1.1}, "n-shot": {"jcommonsenseqa": 3}}
        models = [s for s in ("pretrain", "sft") if s in stages]
        save_results(root / "eval" / "results.json", {m: {"corpus_val": ppl(1.0 + 0.5 * i)} for i, m in
                                                      enumerate(models)}, {m: lm for m in models},
                     local_tasks=True, samples=[{"prompt": "日本の首都は？", "pretrain": "東京東京東京", "sft": "東京です。"}])
    return root
