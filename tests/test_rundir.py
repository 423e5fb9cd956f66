"""The run directory: where it is by default on each platform, and Kaggle's inputs joining it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbhelpers import config, platform, rundir
from nbhelpers.platform import Platform
from nbhelpers.rundir import RunDir


def kaggle_here(tmp_path, accelerator="cpu") -> Platform:
    return Platform("kaggle", accelerator, "test", tmp_path)


# ---------------------------------------------------------------- run directory


def test_default_run_dir_per_platform(tmp_path):
    assert rundir.default_run_dir("p", kaggle_here(tmp_path)) == tmp_path / "kaggle/working/runs/p"
    colab = Platform("colab", "gpu", "test", tmp_path)
    assert rundir.default_run_dir("p", colab) == tmp_path / "content/runs/p"
    (tmp_path / "content/drive/MyDrive").mkdir(parents=True)
    assert rundir.default_run_dir("p", colab) == tmp_path / "content/drive/MyDrive/nbhelpers/runs/p"
    assert rundir.default_run_dir("p", Platform("local", "cpu", "test")) == Path("runs/p")


def test_run_dir_on_drive_mounts_drive_on_colab(tmp_path, monkeypatch):
    mounted = []
    monkeypatch.setattr(platform, "mount_drive", lambda *a: mounted.append(True))
    colab = Platform("colab", "gpu", "test", tmp_path)
    assert rundir.resolve_run_dir("/content/drive/MyDrive/runs/x", "x", colab) == Path(
        "/content/drive/MyDrive/runs/x")
    assert mounted == [True]
    rundir.resolve_run_dir("/content/runs/x", "x", colab)
    rundir.resolve_run_dir("/content/drive/MyDrive/runs/x", "x", Platform("local", "cpu", "test", tmp_path))
    assert mounted == [True]  # only Drive paths, only on Colab
    assert rundir.resolve_run_dir("", "x", colab) == tmp_path / "content/runs/x"


def test_mount_drive_off_colab_says_so(capsys, monkeypatch):
    monkeypatch.setattr(platform, "detect", lambda *a, **k: Platform("local", "cpu", "test"))
    assert platform.mount_drive() is False
    assert "not on Colab" in capsys.readouterr().out


def test_rundir_empty_uses_platform_default(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    run = RunDir.open("", config.load("smoke"))
    assert run.root == (tmp_path / "kaggle/working/runs/smoke").resolve()
    assert (run.root / "config.json").is_file()


def test_rundir_empty_locally_is_runs_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(platform, "detect", lambda *a, **k: Platform("local", "cpu", "test", tmp_path))
    assert RunDir.open("", config.load("smoke")).root == (tmp_path / "runs/smoke").resolve()


def _earlier_output(tmp_path, kernel: str, stage_files: dict[str, list[str]], metrics: dict) -> None:
    run = tmp_path / "kaggle/input" / kernel / "runs/smoke"
    for files in stage_files.values():
        for f in files:
            (run / f).parent.mkdir(parents=True, exist_ok=True)
            (run / f).write_text("x")
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_kaggle_chaining_links_earlier_outputs(tmp_path, monkeypatch):
    (tmp_path / "kaggle/working").mkdir(parents=True)
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    _earlier_output(tmp_path, "nbhelpers-01-tokenizer", {"tokenizer": ["tokenizer/tokenizer.json", "tokenizer/spm.model"]},
                    {"tokenizer": {"vocab": 2000, "config_fingerprint": "abc"}})
    _earlier_output(tmp_path, "nbhelpers-02-corpus", {"corpus": ["corpus/manifest.json"]},
                    {"corpus": {"tokens": 5}, "tokenizer": {"vocab": 2000}})
    run = RunDir.open("", config.load("smoke"))
    assert (run.tokenizer).is_symlink() and (run.corpus).is_symlink()
    assert (run.tokenizer / "spm.model").read_text() == "x"
    run.require("tokenizer")
    with pytest.raises(ValueError, match="manifest.json: not valid JSON"):
        run.require("corpus")  # linked outputs are checked like the run's own (provenance); these are placeholders
    assert run.metrics()["tokenizer"]["config_fingerprint"] == "abc"
    # a second open changes nothing, and the run's own entries win over the inputs'
    run.record("tokenizer", {"vocab": 1})
    RunDir.open("", config.load("smoke"))
    assert run.metrics()["tokenizer"]["vocab"] == 1


def test_kaggle_chaining_skips_incomplete_outputs(tmp_path):
    _earlier_output(tmp_path, "k", {"tokenizer": ["tokenizer/tokenizer.json"]}, {"tokenizer": {}})  # spm.model absent
    run_root = tmp_path / "kaggle/working/runs/smoke"
    run_root.mkdir(parents=True)
    assert rundir.link_inputs(run_root, "smoke", kaggle_here(tmp_path)) == []
    assert not (run_root / "tokenizer").exists()
