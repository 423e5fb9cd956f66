"""Faults: SIGKILL mid-run and mid-save then exact resume, NaN / inf steps, the time budget."""

from __future__ import annotations

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
import torch
from loop_tiny import blocks, cpu_choice, tiny_model, train_cfg
from safetensors.torch import load_file
from transformers import GPTNeoXForCausalLM

from nbhelpers import checkpoint as ckpt
from nbhelpers import loop
from nbhelpers.batches import ArrayBlocks, PackedBatches

SCRIPT = Path(__file__).with_name("loop_tiny.py")
STEPS = 24


def _launch(out: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(out.parent / f"{out.name}.log", "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), "--steps", str(STEPS), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def _finish(proc: subprocess.Popen, out: Path, timeout: float = 240) -> None:
    assert proc.wait(timeout) == 0, (out.parent / f"{out.name}.log").read_text()[-3000:]


def _train_steps(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in loop.read_metrics(out / loop.METRICS_FILE) if r["kind"] == "train"}


def _kill_at(proc: subprocess.Popen, out: Path, step: int, timeout: float = 240) -> None:
    """SIGKILL `proc` as soon as it has logged `step` (it is then inside a later step)."""
    deadline = time.monotonic() + timeout
    while max(_train_steps(out), default=0) < step:
        assert proc.poll() is None, f"finished before step {step}: " + (out.parent / f"{out.name}.log").read_text()[-2000:]
        assert time.monotonic() < deadline, f"step {step} not reached"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _resumes(out: Path) -> list[int]:
    return [r["step"] for r in loop.read_metrics(out / loop.METRICS_FILE) if r.get("event") == "resume"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, float]:
    """Per-step losses of an uninterrupted run."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    _finish(_launch(out), out)
    losses = _train_steps(out)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


@pytest.mark.slow
def test_sigkill_twice_then_resume_matches_an_uninterrupted_run(reference, tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    out = tmp_path / "killed"
    first = rng.randint(5, 11)
    _kill_at(_launch(out, "--step-sleep", "0.04"), out, first)
    saved = ckpt.latest(out / "checkpoints")
    assert saved is not None, f"seed {seed}"
    second = rng.randint(int(saved.name[5:]) + 5, 20)  # past the next checkpoint (saves every 4 steps)
    _kill_at(_launch(out, "--step-sleep", "0.04"), out, second)
    saved_again = ckpt.latest(out / "checkpoints")
    _finish(_launch(out), out)
    resumes = _resumes(out)  # each run resumed the newest checkpoint there was when the last one died
    assert resumes == [int(saved.name[5:]), int(saved_again.name[5:])], (seed, resumes)
    assert resumes[1] > resumes[0]
    losses = _train_steps(out)
    assert sorted(losses) == list(range(1, STEPS + 1)), seed
    for step, loss in reference.items():
        assert losses[step] == pytest.approx(loss, abs=1e-6, rel=0), (seed, step)


@pytest.mark.slow
def test_sigkill_while_saving_keeps_and_resumes_the_previous_checkpoint(reference, tmp_path):
    out = tmp_path / "killed_in_save"
    proc = _launch(out, "--stall-save-at", "8")
    deadline = time.monotonic() + 240
    while not (out / "stalled").exists():  # the save of step 8 has written everything but not committed
        assert proc.poll() is None and time.monotonic() < deadline, (out.parent / f"{out.name}.log").read_text()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [".tmp-step_00000008", "step_00000004"]
    assert ckpt.latest(out / "checkpoints").name == "step_00000004"
    _finish(_launch(out), out)
    assert _resumes(out) == [4]
    assert not (out / "checkpoints" / ".tmp-step_00000008").exists()
    losses = _train_steps(out)
    assert all(losses[s] == pytest.approx(v, abs=1e-6, rel=0) for s, v in reference.items())


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_resumes_from_the_one_before_with_a_warning(reference, tmp_path):
    """Through the loop, for one damage (test_checkpoint covers each kind: cut short, broken state.json, missing part)."""
    out = tmp_path / "damaged"
    _kill_at(_launch(out, "--step-sleep", "0.04"), out, 13)  # checkpoints of steps 8 and 12 exist
    newest = ckpt.latest(out / "checkpoints")
    assert newest.name == "step_00000012"
    (newest / "model.safetensors").write_bytes((newest / "model.safetensors").read_bytes()[:-1000])  # a cut-short copy
    _finish(_launch(out), out)
    log = (out.parent / f"{out.name}.log").read_text()
    assert f"checkpoint {newest}" in log and "Resuming from the earlier complete checkpoint" in log
    assert _resumes(out) == [8] and (out / "checkpoints" / "incomplete-step_00000012").is_dir()
    losses = _train_steps(out)  # steps 9-12 again, from the earlier state: the same losses as without the fault
    assert all(losses[s] == pytest.approx(v, abs=1e-6, rel=0) for s, v in reference.items())


def test_a_planted_pickle_in_a_checkpoint_stops_the_run_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    first = loop.train(tiny_model(), PackedBatches(ArrayBlocks(blocks()), 4, seed=3), train_cfg(max_steps=4),
                       tmp_path / "out", device_choice=cpu_choice(), peak_flops=1e10, progress=False)
    path = first.checkpoint
    state = json.loads((path / "state.json").read_text())
    for name in state.pop("files"):  # the format of earlier versions, with a crafted RNG file
        if name != "model.safetensors":
            (path / name).unlink()
    (path / "state.json").write_text(json.dumps(state))

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"python": Planted()}, path / "rng_rank0.pt")
    torch.save({"state": {}, "param_groups": []}, path / "optimizer.pt")
    with pytest.raises(ckpt.LegacyCheckpoint, match="not loaded: unpickling a file can run any code"):
        loop.train(tiny_model(), PackedBatches(ArrayBlocks(blocks()), 4, seed=3), train_cfg(max_steps=8),
                   tmp_path / "out", device_choice=cpu_choice(), peak_flops=1e10, progress=False)
    assert not marker.exists()



def test_a_hand_edited_step_in_state_json_resumes_from_the_checkpoint_before(tmp_path):
    """issue 25: state.json's "step" changed 8 -> 6 once gave other final weights; now the checkpoint is passed over."""
    def run(out):
        return loop.train(tiny_model(), PackedBatches(ArrayBlocks(blocks()), 4, seed=3), train_cfg(max_steps=8),
                          out, device_choice=cpu_choice(), peak_flops=1e10, progress=False)

    reference = load_file(run(tmp_path / "ref").final_dir / "model.safetensors")
    first = run(tmp_path / "out")
    assert first.checkpoint.name == "step_00000008"
    state_file = first.checkpoint / "state.json"
    state_file.write_text(state_file.read_text().replace('"step": 8,', '"step": 6,'))
    shutil.rmtree(first.final_dir)
    with pytest.warns(ckpt.CheckpointWarning, match=r"step_00000008: state.json is corrupt.*step_00000004"):
        again = run(tmp_path / "out")
    assert again.resumed_from == 4
    final = load_file(again.final_dir / "model.safetensors")
    assert all(torch.equal(final[k], v) for k, v in reference.items())

# ---------------------------------------------------------------- NaN and inf


class PoisonModel(GPTNeoXForCausalLM):
    """Multiplies the loss by the batch's `poison` (1 normally, NaN or inf to simulate a blow-up)."""

    def forward(self, poison=None, **kwargs):
        out = super().forward(**kwargs)
        if poison is not None and out.loss is not None:
            out.loss = out.loss * poison.mean()
        return out


class PoisonBatches:
    """PackedBatches whose micro-batches of the given optimizer steps carry a NaN / inf poison."""

    def __init__(self, inner, accum: int, bad_steps: dict[int, float]) -> None:
        self.inner, self.accum, self.bad = inner, accum, bad_steps

    def __len__(self) -> int:
        return len(self.inner)

    def batch(self, index: int):
        b = self.inner.batch(index)
        value = self.bad.get(index // self.accum + 1, 1.0)  # optimizer steps counted from 1
        return dict(b, poison=torch.full((b["input_ids"].shape[0],), value))


class Checksums(loop.Hooks):
    """Records a checksum of the weights after every step."""

    def __init__(self, model) -> None:
        self.model, self.sums = model, []

    def after_optimizer_step(self) -> None:
        self.sums.append(sum(float(p.detach().double().sum()) for p in self.model.parameters()))


def _poisoned_run(tmp_path, bad, precision="fp32", **kw):
    model = tiny_model(model_cls=PoisonModel, dropout=0.0)
    cfg = train_cfg(max_steps=12, **kw)
    src = PoisonBatches(PackedBatches(ArrayBlocks(blocks()), cfg.micro_batch, seed=3), cfg.grad_accum, bad)
    hooks = Checksums(model)
    result = loop.train(model, src, cfg, tmp_path, device_choice=cpu_choice(precision), hooks=hooks,
                        peak_flops=1e10, progress=False)
    return result, hooks.sums


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_isolated_bad_steps_are_skipped_and_training_goes_on(tmp_path, optimizer):
    result, sums = _poisoned_run(tmp_path, {5: float("nan"), 8: float("inf"), 9: float("nan")}, optimizer=optimizer)
    assert result.status == "done"
    assert sums[4] == sums[3] and sums[7] == sums[6] == sums[8]  # steps 5, 8, 9 left the weights alone
    assert sums[5] != sums[4] and sums[9] != sums[8]
    records = [r for r in loop.read_metrics(result.metrics_path) if r["kind"] == "train"]
    assert records[-1]["bad_steps"] == 3
    opt = ckpt.read_part(result.checkpoint, "optimizer")
    steps = [float(s["step"]) for s in opt["state"].values() if "step" in s]  # AdamW's; Muon keeps no count
    assert steps and all(s == 9 for s in steps)  # AdamW counted only the good steps
    assert all(torch.isfinite(t).all() for t in load_file(result.checkpoint / "model.safetensors").values())


def test_consecutive_bad_steps_stop_and_keep_the_last_good_checkpoint(tmp_path):
    nan = float("nan")
    with pytest.raises(loop.BadStepsError, match=r"4 consecutive steps .*max_bad_steps=3") as err:
        _poisoned_run(tmp_path, {5: nan, 6: nan, 7: nan, 8: nan}, log_every=5, save_every=4)
    assert "step_00000004" in str(err.value)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step_00000004"]
    event = [r for r in loop.read_metrics(tmp_path / loop.METRICS_FILE) if r.get("event") == "bad_steps"]
    assert len(event) == 1 and event[0]["step"] == 8  # found at the save of step 8, which it did not write
    assert not (tmp_path / "final").exists()


def test_fp16_scaler_skips_a_nan_step(tmp_path):
    result, sums = _poisoned_run(tmp_path, {6: float("nan")}, precision="fp16")
    assert result.status == "done" and sums[5] == sums[4]
    records = [r for r in loop.read_metrics(result.metrics_path) if r["kind"] == "train"]
    assert records[-1]["bad_steps"] == 1  # the poisoned step; fp16 overflow skips are the scaler's, not counted
    assert (result.checkpoint / "scaler.safetensors").exists()
    assert torch.isfinite(torch.tensor(records[-1]["loss"]))


# ---------------------------------------------------------------- time budget


class SlowSteps(loop.Hooks):
    def after_optimizer_step(self) -> None:
        time.sleep(0.08)


def test_time_budget_checkpoints_and_exits_before_the_end_then_resumes(tmp_path):
    budget_min = 0.1  # 6 s
    cfg = train_cfg(max_steps=500, save_every=1000, max_minutes=budget_min)
    src = PackedBatches(ArrayBlocks(blocks()), cfg.micro_batch, seed=3)
    started = time.perf_counter()
    result = loop.train(tiny_model(), src, cfg, tmp_path, device_choice=cpu_choice(), hooks=SlowSteps(),
                        peak_flops=1e10, progress=False)
    elapsed = time.perf_counter() - started
    assert result.status == "time_budget" and 0 < result.step < 500
    assert elapsed < budget_min * 60  # the point of the budget: out before it ends
    assert result.checkpoint.name == f"step_{result.step:08d}"
    event = [r for r in loop.read_metrics(result.metrics_path) if r.get("event") == "time_budget"]
    assert event and event[0]["step"] == result.step and not (tmp_path / "final").exists()
    done = loop.train(tiny_model(), src, train_cfg(max_steps=result.step + 3, save_every=1000), tmp_path,
                      device_choice=cpu_choice(), peak_flops=1e10, progress=False)
    assert done.resumed_from == result.step and done.status == "done" and (tmp_path / "final" / "config.json").exists()
    json.loads((tmp_path / "final" / "config.json").read_text())


@pytest.mark.slow
def test_sigkill_inside_a_finish_then_resume_matches_an_uninterrupted_finish(tmp_path):
    """A wsd run killed at the peak lr, finished with train.finish; killed again mid-decay, it resumes exactly."""
    import shutil

    stopped = tmp_path / "stopped"
    _kill_at(_launch(stopped, "--schedule", "wsd", "--save-every", "2", "--step-sleep", "0.04"), stopped, 12)
    at = int(ckpt.latest(stopped / "checkpoints").name[5:])
    shutil.copytree(stopped, tmp_path / "whole")
    shutil.copytree(stopped, tmp_path / "killed")
    finish = ("--schedule", "wsd", "--save-every", "2", "--finish", "--decay-fraction", "0.5")
    _finish(_launch(tmp_path / "whole", *finish), tmp_path / "whole")
    reference = _train_steps(tmp_path / "whole")
    end = at + round(0.5 * at)
    assert max(reference) == end and (tmp_path / "whole" / "final").is_dir()
    killed = tmp_path / "killed"
    _kill_at(_launch(killed, *finish, "--step-sleep", "0.04"), killed, at + 3)  # inside the decay
    assert int(ckpt.latest(killed / "checkpoints").name[5:]) > at
    _finish(_launch(killed, *finish), killed)
    assert _resumes(killed)[-1] > at and (killed / "final").is_dir()
    assert _train_steps(killed) == reference  # every step's loss, bit for bit
