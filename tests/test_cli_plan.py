"""`python -m nbhelpers plan` and `--profile auto` on the command line, planned and chosen without the hardware."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbhelpers import config, planner
from nbhelpers.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def _json(capsys, argv):
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_plan_json_for_a_t4_profile_on_a_cpu_machine(capsys):
    code, out = _json(capsys, ["plan", "--profile", "colab_t4", "--json"])
    assert code == 0
    for key in ("profile", "preset", "parameters", "tokens", "training_hours", "sessions", "fits", "weeks",
                "sustained_flops", "assumed_mfu", "memory_GiB", "usable_GiB", "session_hours"):
        assert key in out, key
    plan = planner.plan_profile(config.load("colab_t4"))
    assert (out["profile"], out["preset"], out["device"]) == ("colab_t4", "d10", "Tesla T4")
    assert out["parameters"] == plan.parameters and out["tokens"] == plan.budget_tokens == 20 * plan.parameters
    assert out["training_hours"] == pytest.approx(plan.hours) and out["training_hours"] <= 36
    assert out["sessions"] == 3 and out["fits"] is True and out["sustained_flops"] == 20e12
    assert out["shape"] == {"hidden_size": 640, "num_hidden_layers": 10, "num_attention_heads": 10,
                            "intermediate_size": 2560}


def test_plan_hours_picks_the_shape_and_lists_the_nearest(capsys):
    code, out = _json(capsys, ["plan", "--profile", "kaggle_t4x2", "--hours", "30", "--json"])
    assert code == 0 and out["preset"] == "d11" and out["training_hours"] <= 30
    assert out["overrides"] == ["model.preset=d11", "corpus.token_budget=0"] and out["hours_goal"] == 30
    assert 3 <= len(out["nearest"]) <= 4 and [r["chosen"] for r in out["nearest"]].count(True) == 1
    assert any(r["training_hours"] > 30 for r in out["nearest"])
    code = main(["plan", "--profile", "kaggle_t4x2", "--hours", "30"])
    text = capsys.readouterr().out
    assert code == 0 and "<- chosen" in text and "--set model.preset=d11" in text
    for row in ("verdict", "throughput", "sustained", "MFU", "sessions for the budget", "calendar"):
        assert row in text, row


def test_plan_with_overrides_says_when_the_seed_needs_more_than_a_week(capsys):
    code = main(["plan", "--profile", "kaggle_t4x2", "--set", "model.preset=seed_1b",
                 "--set", "train.gradient_checkpointing=true"])
    text = capsys.readouterr().out
    assert code == 0 and "seed_1b: 776,050,992 parameters" in text
    assert "more than a week" in text and "--hours 30" in text


def test_plan_refuses_bad_input_with_a_message(capsys):
    assert main(["plan", "--profile", "colab_t4", "--set", "model.preset=d99"]) == 1
    assert "model.preset" in capsys.readouterr().err
    assert main(["plan", "--profile", "colab_t4", "--hours", "0.01"]) == 1
    assert "no shape trains within 0.01 hours" in capsys.readouterr().err
    assert main(["plan", "--profile", "colab_t4", "--hours", "-1"]) == 1


def test_plan_table_is_the_training_doc_table(capsys):
    assert main(["plan", "--table"]) == 0
    table = capsys.readouterr().out.strip()
    assert table == planner.finish_table() and table in (ROOT / "docs" / "TRAINING.md").read_text(encoding="utf-8")


def test_plan_auto_plans_for_the_platform_it_runs_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NBHELPERS_PLATFORM_ROOT", str(tmp_path))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-8")
    code, out = _json(capsys, ["plan", "--json"])  # auto is the default
    assert code == 0 and out["profile"] == "kaggle_tpu_v5e8" and out["preset"] == "seed_1b"
    assert out["profile_reason"].startswith("auto: Kaggle with a TPU") and out["devices"] == 8
    code, out = _json(capsys, ["plan", "--profile", "colab_t4", "--json"])  # an explicit profile wins
    assert out["profile"] == "colab_t4"


def test_run_and_train_resolve_auto_and_print_the_choice(tmp_path, monkeypatch, capsys):
    import nbhelpers.launch
    import nbhelpers.runner

    monkeypatch.setenv("NBHELPERS_PLATFORM_ROOT", str(tmp_path))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    for n in (0, 1):
        (tmp_path / "dev").mkdir(exist_ok=True)
        (tmp_path / "dev" / f"nvidia{n}").touch()
    seen = []
    monkeypatch.setattr(nbhelpers.runner, "run", lambda profile, *a, **k: seen.append(profile) or [])
    monkeypatch.setattr(nbhelpers.launch, "worker_main", lambda stage, run_dir, profile, *a, **k: seen.append(profile) or 0)
    assert main(["run", "--profile", "auto", "--run-dir", str(tmp_path / "r")]) == 0
    assert main(["train", "--stage", "pretrain", "--profile", "auto", "--run-dir", str(tmp_path / "r")]) == 0
    assert main(["run", "--profile", "smoke", "--run-dir", str(tmp_path / "r")]) == 0
    assert seen == ["kaggle_t4x2", "kaggle_t4x2", "smoke"]
    assert capsys.readouterr().out.count("profile: kaggle_t4x2 (auto: Kaggle with 2 GPUs") == 2


def test_plan_runs_as_a_module_with_no_accelerator_needed():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-m", "nbhelpers", "plan", "--profile", "kaggle_tpu_v5e8", "--json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True).stdout
    data = json.loads(out)
    assert data["preset"] == "seed_1b" and data["fits"] and data["training_hours"] <= 45 and data["sessions"] == 5
