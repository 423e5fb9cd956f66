"""train.report_to: a live tracker beside metrics.jsonl (tensorboard for real, wandb offline, the install path)."""

from __future__ import annotations

import importlib.util

import pytest
from loop_tiny import blocks, cpu_choice, tiny_model, train_cfg

from nbhelpers import config, loop, trackers
from nbhelpers.batches import ArrayBlocks, PackedBatches


def _train(out, **kw):
    cfg = train_cfg(max_steps=6, eval_every=3, **kw)
    src = PackedBatches(ArrayBlocks(blocks()), cfg.micro_batch, seed=3)
    evals = {"val": PackedBatches(ArrayBlocks(blocks(16, seed=1)), cfg.micro_batch, seed=0)}
    return loop.train(tiny_model(), src, cfg, out, evals, device_choice=cpu_choice(), progress=False)


def test_report_to_is_checked_by_the_config():
    assert config.apply_overrides(config.smoke(), ["train.report_to=tensorboard"]).train.report_to == "tensorboard"
    with pytest.raises(config.ConfigError, match=r"train.report_to.*tensorboard"):
        config.apply_overrides(config.smoke(), ["train.report_to=mlflow"])


def test_tensorboard_gets_what_metrics_jsonl_gets(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install tensorboard (the trackers extra; CI installs it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run" / "pretrain"
    _train(out, report_to="tensorboard")
    records = loop.read_metrics(out / loop.METRICS_FILE)
    acc = EventAccumulator(str(out / trackers.TENSORBOARD_DIR))
    acc.Reload()
    train = [r for r in records if r["kind"] == "train"]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars("train/loss")] == \
        [(r["step"], r["loss"]) for r in train]
    evals = [r for r in records if r["kind"] == "eval" and r["split"] == "val"]
    assert [e.step for e in acc.Scalars("eval/val/loss")] == [r["step"] for r in evals] and evals
    assert {"config/text_summary", "events/text_summary"} <= set(acc.Tags()["tensors"])


def test_no_tracker_writes_nothing_beside_the_record(tmp_path):
    out = tmp_path / "run" / "pretrain"
    _train(out)
    assert not (out / trackers.TENSORBOARD_DIR).exists() and (out / loop.METRICS_FILE).is_file()


def test_wandb_offline_without_a_key(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb", reason="wandb is optional (pip install wandb)")
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run" / "sft"
    out.mkdir(parents=True)
    tracker = trackers.open_tracker("wandb", out, {"lr": 1e-3})
    assert "logging offline" in capsys.readouterr().out
    tracker.log({"kind": "train", "step": 1, "loss": 2.5, "lr": 1e-3})
    tracker.log({"kind": "eval", "step": 1, "split": "val", "loss": 2.0})
    tracker.close()
    assert not tracker.failed
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs and runs[0].stat().st_size > 0


def test_a_missing_tracker_package_is_installed_on_demand_or_says_how(tmp_path, monkeypatch):
    """The real pip, with no index to install from: the message names the package and what to do."""
    monkeypatch.setitem(trackers.PACKAGES, "trackio", ("nbhelpers_no_such_tracker", "nbhelpers-no-such-tracker"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert importlib.util.find_spec("nbhelpers_no_such_tracker") is None
    with pytest.raises(trackers.TrackerError) as err:
        trackers.open_tracker("trackio", tmp_path)
    msg = str(err.value)
    assert "installing nbhelpers-no-such-tracker failed" in msg and "train.report_to=none" in msg
    with pytest.raises(trackers.TrackerError, match="not installed: pip install 'nbhelpers-no-such-tracker'"):
        trackers.open_tracker("trackio", tmp_path, install=False)


def test_a_tracker_that_fails_warns_once_and_training_goes_on(tmp_path):
    class Broken(trackers.Tracker):
        name = "broken"
        calls = 0

        def _log(self, record):
            Broken.calls += 1
            raise ConnectionError("tracker server gone")

    t = Broken()
    with pytest.warns(UserWarning, match="stopped logging.*metrics.jsonl is still written"):
        t.log({"kind": "train", "step": 1, "loss": 1.0})
    t.log({"kind": "train", "step": 2, "loss": 1.0})
    assert t.failed and Broken.calls == 1


def test_scalars_skip_non_numbers_and_non_finite():
    step, values = trackers._scalars({"kind": "train", "step": 4, "loss": 1.5, "lr": 1e-3, "mfu": None,
                                      "bad": float("nan"), "flag": True, "device": "cpu"})
    assert step == 4 and values == {"train/loss": 1.5, "train/lr": 1e-3}
