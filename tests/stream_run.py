"""A run directory as 01 and 02 leave it (a SentencePiece tokenizer, a built corpus), for tests that train on the
corpus stream; run as a script it trains 03's stage in one process (the tests kill it).

    python tests/stream_run.py RUN_DIR [--step-sleep S]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when run as a script

from nbhelpers import config, tokenizer  # noqa: E402
from nbhelpers.corpus import build_corpus  # noqa: E402
from nbhelpers.rundir import RunDir  # noqa: E402

BLOCK = 16
# a tiny model on the smoke profile: fp32 on the CPU; the stream in parts of 24 blocks, 96 blocks in the budget
TINY = ["model.hidden_size=32", "model.num_hidden_layers=2", "model.num_attention_heads=4",
        "model.intermediate_size=64", "model.max_position_embeddings=64", f"corpus.block_len={BLOCK}",
        f"corpus.part_tokens={BLOCK * 24}", f"corpus.token_budget={BLOCK * 96}", "corpus.val_blocks=16",
        "train.backend=cpu", "train.precision=fp32", "train.grad_accum=2", "train.max_steps=8", "train.lr=3e-3",
        "train.warmup_steps=2", "train.eval_every=4", "train.eval_batches=2", "train.save_every=4",
        "train.log_every=1", "train.sample_prompts=[]", "train.max_minutes=0",
        "sft.max_length=64", "eval.ppl_stride=32"]  # what fits the 64-token context


def prepared_run(root: Path, overrides: list[str], tokenizer_dir: Path) -> RunDir:
    """A run directory with the tokenizer at `tokenizer_dir` (spm.model, exported for transformers) and 02's corpus."""
    run = RunDir.open(root, config.load("smoke", TINY + overrides))
    run.tokenizer.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(tokenizer_dir) / "spm.model", run.tokenizer / "spm.model")
    tokenizer.export_hf(run.tokenizer, run.config.tokenizer)
    run.record("tokenizer", {})
    manifest = build_corpus(run.config, run.tokenizer, run.corpus, progress=False)
    run.record("corpus", {"val_blocks": manifest["val"]["blocks"]})
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--step-sleep", type=float, default=0.0, help="seconds each micro-batch read waits (to kill mid-run)")
    args = ap.parse_args()
    from nbhelpers import config as config_mod
    from nbhelpers import launch
    from nbhelpers.files import read_json

    root = Path(args.run_dir)
    run = RunDir(root, config_mod.from_dict(read_json(root / "config.json")))
    job = launch.pretrain_job(run.config, run)
    if args.step_sleep:
        read = job.train_batches.batch

        def slow(i: int):
            time.sleep(args.step_sleep)
            return read(i)

        job.train_batches.batch = slow
    result = launch.run_job(job, progress=False)
    print(result.status, result.step)


if __name__ == "__main__":
    main()
