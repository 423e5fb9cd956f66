"""03 on the corpus stream end to end: SIGKILL anywhere (the producer mid-part), scratch lost between sessions,
the budget's end, a source that keeps failing: the loss curve and weights are an uninterrupted run's."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from nbhelpers import config, launch, loop
from nbhelpers.batches import DataSourceError
from nbhelpers.rundir import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_run import BLOCK, prepared_run  # noqa: E402

SCRIPT = Path(__file__).with_name("stream_run.py")
STEPS = 24  # 8 blocks a step, 24 blocks a part: a part every 3 steps, checkpoints every 4
LONG = [f"corpus.token_budget={BLOCK * 400}", "train.micro_batch=4", f"train.max_steps={STEPS}", "train.eval_every=12"]


def _launch(run: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(run.parent / f"{run.name}.log", "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, str(SCRIPT), str(run), *args], stdout=log, stderr=subprocess.STDOUT,
                            env=env)


def _finish(proc: subprocess.Popen, run: Path) -> None:
    assert proc.wait(600) == 0, (run.parent / f"{run.name}.log").read_text()[-3000:]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in loop.read_metrics(run / "pretrain" / loop.METRICS_FILE) if r["kind"] == "train"}


def _kill_at(proc: subprocess.Popen, run: Path, step: int) -> None:
    deadline = time.monotonic() + 300
    while max(_losses(run), default=0) < step:
        assert proc.poll() is None, (run.parent / f"{run.name}.log").read_text()[-2000:]
        assert time.monotonic() < deadline, f"step {step} not reached"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _weights(run: Path) -> dict:
    return load_file(run / "pretrain" / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tokenizer_dir):
    """An uninterrupted run: per-step losses and final weights."""
    root = tmp_path_factory.mktemp("stream") / "reference"
    prepared_run(root, LONG, tokenizer_dir)
    _finish(_launch(root), root)
    losses = _losses(root)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses, _weights(root)


@pytest.mark.slow
@pytest.mark.parametrize("scratch_lost", [False, True])
def test_sigkill_anywhere_then_resume_equals_an_uninterrupted_run(reference, tmp_path, tokenizer_dir, scratch_lost):
    """Killed twice at random steps (the producer is then mid-part or waiting); with `scratch_lost` the parts
    folder is deleted before each resume, as a new Kaggle version starts with an empty /kaggle/temp."""
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    run = tmp_path / "killed"
    prepared_run(run, LONG, tokenizer_dir)
    parts = next((run / "corpus").glob("train-*"), None)
    for low, high in ((5, 10), (13, 20)):
        _kill_at(_launch(run, "--step-sleep", "0.02"), run, rng.randint(low, high))
        parts = next((run / "corpus").glob("train-*"))
        assert list(parts.glob("part-*")), "the producer wrote no part"
        if scratch_lost:
            shutil.rmtree(parts)
    _finish(_launch(run), run)
    records = loop.read_metrics(run / "pretrain" / loop.METRICS_FILE)
    assert len([r for r in records if r.get("event") == "resume"]) == 2, seed
    losses, weights = _losses(run), _weights(run)
    want_losses, want_weights = reference
    assert sorted(losses) == list(range(1, STEPS + 1)), seed
    for step, loss in want_losses.items():
        assert losses[step] == pytest.approx(loss, abs=1e-6, rel=0), (seed, step)
    assert all((weights[k] == want_weights[k]).all() for k in want_weights), seed
    state = json.loads((run / "pretrain" / "checkpoints" / f"step_{STEPS:08d}" / "state.json").read_text())
    assert state["data"]["part"] == STEPS * 8 // 24 and state["data"]["fingerprint"]


@pytest.mark.slow
def test_the_budgets_end_is_done_with_a_final_model(tmp_path, tokenizer_dir):
    """A budget of 100 blocks, 8 a step: 12 steps (the last 4 blocks do not fill a step), final/ written."""
    run = prepared_run(tmp_path / "budget", [f"corpus.token_budget={BLOCK * 100}", "train.micro_batch=4",
                                             "train.max_steps=0", "train.eval_every=0", "train.save_every=0"],
                       tokenizer_dir)
    result = launch.train_stage(run, "pretrain", progress=False)
    assert (result.status, result.step, result.total_steps) == ("done", 12, 12)
    assert result.final_dir == run.pretrain / "final" and (result.final_dir / "model.safetensors").exists()
    plan = json.loads((run.pretrain / "checkpoints" / "step_00000012" / "state.json").read_text())["lr_plan"]
    assert plan["total"] == 12  # the schedule ends where the data does
    stats = json.loads((run.pretrain / launch.DATA_FILE).read_text())
    assert stats["parts_read"] == 4  # 96 blocks read, 24 a part


@pytest.mark.slow
def test_a_source_that_keeps_failing_checkpoints_and_stops_naming_it(tmp_path, tokenizer_dir):
    rows = [json.dumps({"text": f"{i}番目の文書です。" + "本文が続きます。" * (5 + i % 10)}, ensure_ascii=False)
            for i in range(3000)]
    data = gzip.compress(("\n".join(rows) + "\n").encode())
    path = tmp_path / "web.jsonl.gz"
    path.write_bytes(data[:len(data) // 20])  # the download was cut short: the stream fails early on
    mixture = json.dumps({f"files:{path}": 0.9, "arithmetic": 0.1})
    run = prepared_run(tmp_path / "failing", [f"corpus.mixture={mixture}", f"corpus.token_budget={BLOCK * 4000}",
                                              "train.micro_batch=4", "train.max_steps=200", "train.eval_every=0",
                                              "train.save_every=0"], tokenizer_dir)
    with pytest.raises(DataSourceError, match=r"(?s)web.jsonl.gz: cannot be read after document \d+ .*checkpoint saved "
                                              r"at step (\d+).*run again") as err:
        launch.train_stage(run, "pretrain", progress=False)
    saved = loop.read_metrics(run.pretrain / loop.METRICS_FILE)
    stopped = [r for r in saved if r.get("event") == "data_error"]
    assert len(stopped) == 1 and stopped[0]["step"] > 0
    step = stopped[0]["step"]
    assert (run.pretrain / "checkpoints" / f"step_{step:08d}").is_dir() and str(step) in str(err.value)
    # the whole file arrives: the next run resumes at that step and the stream goes on past the break
    path.write_bytes(data)
    again = launch.train_stage(RunDir(run.root, config.apply_overrides(run.config, ["train.max_steps=200"])),
                               "pretrain", progress=False)
    assert (again.status, again.resumed_from, again.step) == ("done", step, 200)
