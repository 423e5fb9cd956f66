"""The corpus stream on torch_xla's CPU PJRT device: torch_xla's parallel loader reads the producer's parts in its
own thread, and a run stopped and resumed on XLA continues the curve exactly (03 on kaggle_tpu_v5e8 in small).

Run in the XLA environment: `PJRT_DEVICE=CPU python -m pytest -m xla tests/xla -q`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xla

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny  # noqa: E402
from stream_run import prepared_run  # noqa: E402

xla_mod = pytest.importorskip("nbhelpers.xla")
if not xla_mod.available():
    pytest.skip("torch_xla is not installed (run in the XLA environment)", allow_module_level=True)

from nbhelpers import launch, loop, xla  # noqa: E402

os.environ.setdefault("PJRT_DEVICE", "CPU")
os.environ["CPU_NUM_DEVICES"] = "1"
xla.XlaBackend(precision="fp32")

RUN = ["train.micro_batch=4", "train.max_steps=6", "train.save_every=3", "train.eval_every=0", "train.backend=xla",
       "model.attn_implementation=eager"]


def _train(run, steps: int, horizon: int | None = None) -> loop.TrainResult:
    job = launch.pretrain_job(run.config, run, choice=tiny.choice("xla"))
    job = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, max_steps=steps), lr_horizon=horizon)
    return launch.run_job(job, progress=False)


def _losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in loop.read_metrics(run.pretrain / loop.METRICS_FILE) if r["kind"] == "train"}


def test_the_stream_feeds_the_xla_loop_and_a_resumed_run_continues_exactly(tmp_path, tokenizer_dir):
    whole = prepared_run(tmp_path / "whole", RUN, tokenizer_dir)
    assert _train(whole, 6).status == "done"
    split = prepared_run(tmp_path / "split", RUN, tokenizer_dir)
    first = _train(split, 3, horizon=6)  # the first session ends at step 3 (on the schedule of 6)
    assert (first.status, first.step) == ("data_end", 3)
    for part in (split.root / "corpus").glob("train-*/part-*"):  # the next session's scratch is empty
        part.unlink()
    second = _train(split, 6)
    assert (second.status, second.resumed_from, second.step) == ("done", 3, 6)
    a, b = _losses(whole), _losses(split)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5 * abs(a[step]), (step, a[step], b[step])
    assert b[6] < b[1]
