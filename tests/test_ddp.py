"""DDP under torchrun on the CPU (gloo): two ranks read disjoint blocks and train like one process with twice the batch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from loop_tiny import BLOCK

from nbhelpers import loop

SCRIPT = Path(__file__).with_name("loop_tiny.py")
ARGS = ["--steps", "14", "--save-every", "4", "--dropout", "0", "--eval-every", "7"]  # no dropout: ranks draw other masks than one process
STEPS, MICRO_BATCH, GRAD_ACCUM = 14, 4, 2  # of the single process (loop_tiny's defaults and ARGS)
# Two ranks sum each step's gradient in another order than one process does (per rank, then the all-reduce).
# Rounding in a sum of n terms is a random walk: about sqrt(n) fp32 epsilons relative, per step; each step's
# difference carries into the next steps' weights, so after k steps up to k of them add up. The terms of a step are
# its per-token losses (MICRO_BATCH x GRAD_ACCUM blocks of BLOCK - 1 predicted tokens). 14 steps: 1.8e-5.
REL = STEPS * math.sqrt(MICRO_BATCH * GRAD_ACCUM * (BLOCK - 1)) * torch.finfo(torch.float32).eps


def _run(cmd: list[str], log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log, "wb") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=600).returncode
    assert code == 0, log.read_text()[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_two_gloo_ranks_equal_one_process_with_the_doubled_batch(tmp_path, optimizer):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    args = [*ARGS, "--optimizer", optimizer]
    _run([sys.executable, str(SCRIPT), str(single), "--micro-batch", "4", *args], tmp_path / "single.log")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(SCRIPT), str(ddp), "--micro-batch", "2", *args], tmp_path / "ddp.log")

    # the ranks' blocks: disjoint within each micro-batch and each pass, together those of the single process
    # (batch(0) is read twice: once to check shapes and vocabulary before training)
    reads = [dict(json.loads((ddp / f"blocks_rank{r}.json").read_text())) for r in range(2)]
    one = dict(json.loads((single / "blocks_rank0.json").read_text()))
    assert sorted(reads[0]) == sorted(reads[1]) == sorted(one) == list(range(28))  # 14 steps x grad_accum 2
    per_pass = defaultdict(list)
    for i in sorted(one):
        a, b = reads[0][i], reads[1][i]
        assert not set(a) & set(b)
        assert a + b == one[i]
        per_pass[i // 24].extend(a + b)  # 96 blocks / (2 ranks x 2) = 24 micro-batches per pass
    assert all(len(v) == len(set(v)) for v in per_pass.values())

    losses = {r["step"]: r["loss"] for r in loop.read_metrics(ddp / loop.METRICS_FILE) if r["kind"] == "train"}
    expected = {r["step"]: r["loss"] for r in loop.read_metrics(single / loop.METRICS_FILE) if r["kind"] == "train"}
    assert sorted(losses) == sorted(expected) == list(range(1, 15))
    assert losses == pytest.approx(expected, rel=REL)
    assert losses[14] < losses[1]
    # eval: each rank reads its share of the validation blocks; the loss is summed over ranks
    evals = [(r["step"], r["loss"], r["bpb"]) for r in loop.read_metrics(ddp / loop.METRICS_FILE) if r["kind"] == "eval"]
    want = [(r["step"], r["loss"], r["bpb"]) for r in loop.read_metrics(single / loop.METRICS_FILE)
            if r["kind"] == "eval"]
    assert [e[0] for e in evals] == [w[0] for w in want] == [0, 7, 14]
    assert [e[1] for e in evals] == pytest.approx([w[1] for w in want], rel=REL)
    assert [e[2] for e in evals] == pytest.approx([w[2] for w in want], rel=REL)  # bytes summed over ranks too
    # one set of checkpoints (rank 0 writes them) holding both ranks' RNG states, and the final model
    last = ddp / "checkpoints" / "step_00000014"
    assert (last / "rng_rank0.safetensors").exists() and (last / "rng_rank1.safetensors").exists()
    assert json.loads((last / "state.json").read_text())["world_size"] == 2
    assert (ddp / "final" / "model.safetensors").exists()


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process(tmp_path):
    """Kaggle's T4 x2 one session, one GPU the next: the data position is kept in samples, the schedule too."""
    single, moved = tmp_path / "single", tmp_path / "moved"
    common = ["--save-every", "4", "--dropout", "0", "--lr-horizon", "14"]
    _run([sys.executable, str(SCRIPT), str(single), "--micro-batch", "4", "--steps", "14", *common],
         tmp_path / "single.log")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(SCRIPT), str(moved), "--micro-batch", "2", "--steps", "8", *common], tmp_path / "ddp.log")
    assert json.loads((moved / "checkpoints" / "step_00000008" / "state.json").read_text())["world_size"] == 2
    # one process, micro-batch 2 and grad_accum 4: the same 8 blocks a step, the data position rescaled
    _run([sys.executable, str(SCRIPT), str(moved), "--micro-batch", "2", "--grad-accum", "4", "--steps", "14",
          *common], tmp_path / "moved.log")
    records = loop.read_metrics(moved / loop.METRICS_FILE)
    assert [r["step"] for r in records if r.get("event") == "resume"] == [8]
    assert not [r for r in records if r.get("event") == "lr_replan"]
    losses = {r["step"]: r["loss"] for r in records if r["kind"] == "train"}
    expected = {r["step"]: r["loss"] for r in loop.read_metrics(single / loop.METRICS_FILE) if r["kind"] == "train"}
    assert losses == pytest.approx(expected, rel=REL)
