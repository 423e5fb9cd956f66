"""launch.train_stage: 03's training in the kernel or in torchrun workers (2 gloo ranks on this CPU)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nbhelpers import config, launch, loop
from nbhelpers.device import DeviceChoice
from nbhelpers.rundir import RunDir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_run import BLOCK  # noqa: E402
from stream_run import prepared_run as _prepared  # noqa: E402


def choice(backend: str = "cpu", devices: int = 1) -> DeviceChoice:
    return DeviceChoice(backend=backend, device=backend, name="test", precision="fp32", use_grad_scaler=False,
                        attn_implementation="sdpa", num_devices=devices, memory_bytes=0, capability=None,
                        reason="test")


@pytest.fixture()
def prepared_run(tokenizer_dir):
    """A run directory as 01 and 02 leave it: a tokenizer and a built corpus (its stream: 96 blocks in the budget)."""
    return lambda root, overrides: _prepared(root, overrides, tokenizer_dir)


def curves(result: loop.TrainResult) -> tuple[dict[int, float], list[tuple[int, float]]]:
    records = loop.read_metrics(result.metrics_path)
    train = {r["step"]: r["loss"] for r in records if r["kind"] == "train"}
    return train, [(r["step"], r["loss"]) for r in records if r["kind"] == "eval"]


# ---------------------------------------------------------------- fast


def test_nproc_auto_is_one_per_visible_gpu_and_one_elsewhere():
    auto = config.TrainConfig()
    assert launch.resolve_nproc(auto, choice("cuda", 2)) == 2
    assert launch.resolve_nproc(auto, choice("cuda", 1)) == 1
    assert launch.resolve_nproc(auto, choice("cpu")) == 1
    assert launch.resolve_nproc(auto, choice("xla", 8)) == 1  # SPMD: one process over every chip
    assert launch.resolve_nproc(config.TrainConfig(nproc=2), choice("cpu")) == 2  # gloo, as the tests use it
    assert launch.resolve_nproc(auto, choice("cuda", 2), nproc=1) == 1  # the argument wins
    with pytest.raises(ValueError, match="only 2 CUDA GPU"):
        launch.resolve_nproc(config.TrainConfig(nproc=4), choice("cuda", 2))
    with pytest.raises(ValueError, match="XLA trains in one process"):
        launch.resolve_nproc(config.TrainConfig(nproc=2), choice("xla", 8))


def test_worker_command_rebuilds_the_notebooks_config(tmp_path):
    cfg = config.load("kaggle_t4x2", ["train.lr=1e-4", "corpus.mixture={\"bundled_prose\": 1}",
                                      "train.sample_prompts=[\"太陽は\"]"])
    run = RunDir(tmp_path, cfg)
    cmd = launch.worker_command(run, "pretrain", 2, deadline=1234.5)
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert cmd[cmd.index("--profile") + 1] == "kaggle_t4x2" and cmd[cmd.index("--deadline") + 1] == "1234.500"
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert "train.lr=0.0001" in sets and len(sets) == 3
    assert config.load("kaggle_t4x2", sets) == cfg  # what the workers build is what the notebook holds


def test_result_round_trips_through_json(tmp_path):
    result = loop.TrainResult(status="time_budget", step=3, total_steps=8, out_dir=tmp_path,
                              metrics_path=tmp_path / "metrics.jsonl", checkpoint=tmp_path / "checkpoints" / "s",
                              resumed_from=None, train_loss=2.5, eval={"val": {"loss": 2.0, "ppl": 7.4}})
    text = json.dumps(launch.result_to_json(result))
    assert launch.result_from_json(json.loads(text)) == result


def test_stream_copies_output_and_keeps_the_last_lines(capsys):
    script = "import sys\nfor i in range(50): print('line', i)\nprint('bar 1\\rbar 2', end='')\nsys.exit(3)"
    code, tail = launch._stream([sys.executable, "-c", script], env=None)
    assert code == 3
    assert tail[-3:] == ["line 49", "bar 1", "bar 2"] and len(tail) == launch.TAIL_LINES
    assert "line 0\n" in capsys.readouterr().out


def test_the_workers_output_polls_the_live_curve_between_flushes(tmp_path):
    """With torchrun workers, the kernel's live curve is polled as their output comes, drawing at new evaluations."""
    from nbhelpers import plots

    metrics = tmp_path / "metrics.jsonl"
    script = (f"import json, time\nfor i in range(3):\n    open({str(metrics)!r}, 'a').write(json.dumps("
              "{'kind': 'eval', 'step': i, 'split': 'val', 'loss': 5.0 - i}) + '\\n')\n"
              "    print('eval', i, flush=True)\n    time.sleep(1.2)")
    curve = plots.LiveCurve(metrics, png=tmp_path / "live.png")
    code, _ = launch._stream([sys.executable, "-c", script], env=None, poll=curve.update)
    assert code == 0 and curve.evals_drawn == 3 and len(curve.draw_s) >= 2 and (tmp_path / "live.png").is_file()


def test_a_failure_without_a_worker_message_names_the_exit_code_and_the_tail(tmp_path):
    err = launch._failure(tmp_path, "pretrain", 2, 1, ["Traceback", "OSError: disk full"])
    assert isinstance(err, launch.LaunchError)
    assert "exit code 1" in str(err) and str(err).endswith("OSError: disk full")


def test_the_job_carries_the_planners_peak_into_the_loops_mfu(tmp_path, monkeypatch, prepared_run):
    """MFU's peak comes from the planner (measured there on a CPU, once per process), not from the loop."""
    from nbhelpers import planner

    monkeypatch.setattr(planner.flops, "cpu_peak_flops", lambda precision="fp32": 2.5e9)
    run = prepared_run(tmp_path / "peak", ["train.micro_batch=4", "train.max_steps=2", "train.eval_every=0"])
    job = launch.pretrain_job(run.config, run, choice=choice())
    assert job.peak_flops == 2.5e9
    result = launch.run_job(job, progress=False)
    assert result.mfu == pytest.approx(result.tokens_per_s * loop.flops_per_token(job.model, BLOCK) / 2.5e9)


def test_stage_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="stage: expected pretrain"):
        launch.stage_dir(RunDir(tmp_path, config.load("smoke")), "tokenizer")


# ---------------------------------------------------------------- end to end (2 gloo ranks)


@pytest.mark.slow
def test_two_launched_gloo_ranks_equal_the_kernel_run_with_the_doubled_batch(tmp_path, monkeypatch, capsys, prepared_run):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' thread count; the kernel run below uses one too
    single = prepared_run(tmp_path / "single", ["train.micro_batch=4"])
    ddp = prepared_run(tmp_path / "ddp", ["train.micro_batch=2", "train.nproc=2"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = launch.train_stage(single, "pretrain", progress=False)  # train.nproc=0 on a CPU: in this process
    finally:
        torch.set_num_threads(threads)
    got = launch.train_stage(ddp, "pretrain")
    out = capsys.readouterr().out
    assert "train:" in out  # rank 0's progress bar reached the notebook

    assert (got.status, got.step, got.total_steps) == (want.status, want.step, want.total_steps) == ("done", 8, 8)
    assert got.out_dir == ddp.pretrain and got.final_dir == ddp.pretrain / "final"
    assert got.checkpoint == ddp.pretrain / "checkpoints" / "step_00000008"
    assert json.loads((got.checkpoint / "state.json").read_text())["world_size"] == 2
    (loss, evals), (loss_1, evals_1) = curves(got), curves(want)
    assert sorted(loss) == sorted(loss_1) == list(range(1, 9))
    assert loss == pytest.approx(loss_1, rel=1e-5)  # test_ddp's tolerance
    assert [s for s, _ in evals] == [s for s, _ in evals_1] == [0, 4, 8]
    assert [v for _, v in evals] == pytest.approx([v for _, v in evals_1], rel=1e-5)
    assert got.train_loss == pytest.approx(want.train_loss, rel=1e-5) and loss[8] < loss[1]
    assert got.eval["val"]["loss"] == pytest.approx(want.eval["val"]["loss"], rel=1e-5)

    # a rerun with a longer run resumes the newest checkpoint in the workers, as the kernel path does
    longer = RunDir.open(ddp.root, config.apply_overrides(ddp.config, ["train.max_steps=10"]))
    again = launch.train_stage(longer, "pretrain", progress=False)
    assert (again.status, again.step, again.resumed_from) == ("done", 10, 8)


@pytest.mark.slow
def test_a_failing_worker_raises_its_error_with_the_last_lines(tmp_path, monkeypatch, prepared_run):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = prepared_run(tmp_path / "bad", ["train.micro_batch=2", "train.nproc=2"])
    shard = next(run.corpus.glob("val-*.bin"))
    shard.write_bytes(shard.read_bytes()[:-3])  # the validation shard cut short: the workers fail reading it
    with pytest.raises(launch.LaunchError) as info:
        launch.train_stage(run, "pretrain", progress=False)
    msg = str(info.value)
    assert "pretrain worker rank" in msg and "is not a whole number of" in msg
    assert "last lines of the workers' output" in msg and "Traceback" in msg
    assert not (run.pretrain / launch.RESULT_FILE).exists()


def test_the_tail_keeps_the_last_traceback_whole_when_two_ranks_fail_together():
    """Python 3.13 tracebacks (with caret lines) from two ranks, the two headers printed first: over TAIL_LINES."""
    frames = ["  File \"<frozen runpy>\", line 198, in _run_module_as_main", "    sys.exit(main())",
              "             ~~~~^^"] * 5
    out = "\n".join(["noise"] * 40 + ["Traceback (most recent call last):"] * 2 + frames + ["ValueError: bad shard"]
                    + frames + ["ValueError: bad shard",
                                "E1204 torch/distributed/elastic/multiprocessing/api.py] failed (exitcode: 1)",
                                "torchrun's own summary"])
    tail = launch.output_tail(out)
    assert tail[0] == "Traceback (most recent call last):" and tail[-1] == "ValueError: bad shard"
    assert len(tail) == 2 * len(frames) + 3 > launch.TAIL_LINES
    assert launch.output_tail("\n".join(f"line {i}" for i in range(100))) == [f"line {i}" for i in range(70, 100)]


@pytest.mark.slow
def test_worker_cli_trains_in_one_process_from_the_recorded_config(tmp_path, prepared_run):
    """`python -m nbhelpers train` without torchrun: the worker path, one rank, config from config.json."""
    run = prepared_run(tmp_path / "cli", ["train.micro_batch=4", "train.max_steps=2", "train.eval_every=0"])
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "train", "--stage", "pretrain", "--run-dir",
                           str(run.root), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = launch.result_from_json(json.loads((run.pretrain / launch.RESULT_FILE).read_text()))
    assert (result.status, result.step) == ("done", 2)
    assert np.isfinite(result.train_loss)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:instruction tuning gets only")  # a few steps is the point here
def test_instruction_tuning_runs_in_two_launched_ranks(tmp_path, monkeypatch, prepared_run):
    """04's stage: the pre-trained model tuned by 2 gloo ranks, each on half of an epoch's batches."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sft = ["sft.max_length=48", "sft.micro_batch=2", "sft.epochs=0.5", "sft.eval_batches=2", "sft.eval_every=4",
           "sft.max_examples=40", "sft.arithmetic_pairs=40", "sft.warmup_steps=2"]
    run = prepared_run(tmp_path / "sft", ["train.micro_batch=4", "train.max_steps=2", "train.eval_every=0", *sft])
    launch.train_stage(run, "pretrain", progress=False)
    run.record("pretrain", {"steps": 2})
    monkeypatch.setenv("RANK", "0")  # the job rank 0 builds: its share of the batches sets the steps
    monkeypatch.setenv("WORLD_SIZE", "2")
    job = launch.sft_job(run.config, run)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    result = launch.train_stage(RunDir(run.root, config.apply_overrides(run.config, ["train.nproc=2"])), "sft",
                                progress=False)
    assert (result.status, result.step, result.total_steps) == ("done", job.cfg.max_steps, job.cfg.max_steps)
    assert result.final_dir == run.sft / "final" and (run.sft / "final" / "model.safetensors").exists()
    assert set(result.eval) == {"instructions", "corpus"} and np.isfinite(result.eval["instructions"]["loss"])


@pytest.mark.slow
def test_sigkill_during_instruction_tuning_then_resume_matches_an_uninterrupted_run(tmp_path, prepared_run):
    """04 killed (kill -9) mid-training: the next run resumes its newest checkpoint and gives the same losses."""
    import shutil
    import signal
    import time

    sft = ["sft.max_length=48", "sft.micro_batch=2", "sft.epochs=2", "sft.eval_every=0", "sft.save_every=4",
           "sft.max_examples=40", "sft.arithmetic_pairs=40", "sft.warmup_steps=2", "sft.eval_batches=1"]
    run = prepared_run(tmp_path / "run", ["train.micro_batch=4", "train.max_steps=2", "train.eval_every=0", *sft])
    launch.train_stage(run, "pretrain", progress=False)
    run.record("pretrain", {"steps": 2})
    shutil.copytree(run.root, tmp_path / "ref")
    cmd = [sys.executable, "-m", "nbhelpers", "train", "--stage", "sft", "--no-progress", "--run-dir"]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def losses(root):
        return {r["step"]: r["loss"] for r in loop.read_metrics(root / "sft" / loop.METRICS_FILE) if r["kind"] == "train"}

    assert subprocess.run([*cmd, str(tmp_path / "ref")], env=env, capture_output=True, timeout=600).returncode == 0
    reference = losses(tmp_path / "ref")
    assert len(reference) > 12
    proc = subprocess.Popen([*cmd, str(run.root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run.sft / loop.METRICS_FILE).exists() or max(losses(run.root), default=0) < 6:
        assert proc.poll() is None and time.monotonic() < deadline, "finished or stuck before step 6"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run.sft / "checkpoints" / "step_00000004").is_dir() and not (run.sft / "final").exists()
    again = subprocess.run([*cmd, str(run.root)], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = [r["step"] for r in loop.read_metrics(run.sft / loop.METRICS_FILE) if r.get("event") == "resume"]
    assert resumed and resumed[0] >= 4
    got = losses(run.root)
    assert sorted(got) == sorted(reference)
    assert all(got[s] == pytest.approx(v, abs=1e-6, rel=0) for s, v in reference.items())


KERNEL = """
import json, sys
from pathlib import Path
from nbhelpers import config, launch
from nbhelpers.rundir import RunDir
root = Path(sys.argv[1])
launch.train_stage(RunDir(root, config.from_dict(json.loads((root / "config.json").read_text()))), "pretrain",
                   progress=False)
"""


@pytest.mark.slow
def test_training_workers_end_when_the_kernel_is_killed(tmp_path, prepared_run):
    """torchrun runs in its own session (an interrupted cell stops its group); a killed kernel must stop it too."""
    import signal
    import time

    from proc_state import descendants, survivors

    run = prepared_run(tmp_path / "run", ["train.micro_batch=2", "train.nproc=2", "train.max_steps=100000",
                                          "train.save_every=0", "train.eval_every=0"])
    log = open(tmp_path / "kernel.log", "wb")  # noqa: SIM115 - the kernel's output, for a failure message
    kernel = subprocess.Popen([sys.executable, "-c", KERNEL, str(run.root)], stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
    below: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not any(r["kind"] == "train" for r in loop.read_metrics(run.pretrain / loop.METRICS_FILE)) \
                if (run.pretrain / loop.METRICS_FILE).exists() else True:
            assert kernel.poll() is None and time.monotonic() < deadline, (tmp_path / "kernel.log").read_text()[-3000:]
            time.sleep(0.1)
        below = descendants(kernel.pid)
        assert len(below) >= 3  # torchrun and its two ranks
        kernel.send_signal(signal.SIGKILL)
        kernel.wait()
        left = survivors(below, within=20)
        assert not left, f"{len(left)} of {len(below)} training processes outlived the killed kernel"
    finally:
        kernel.kill()
        for pid in below:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
