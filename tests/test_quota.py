"""The output quota: Kaggle's 20 GB, a full disk, and the checkpoint save that asks first."""

from __future__ import annotations

import types
import warnings

import pytest

from nbhelpers import checkpoint, platform, quota
from nbhelpers.platform import Platform


def kaggle_here(tmp_path, accelerator="cpu") -> Platform:
    return Platform("kaggle", accelerator, "test", tmp_path)


# ---------------------------------------------------------------- output quota


def test_max_keep_last_arithmetic():
    gb = 10**9
    # the seed model: 776M parameters x 12 bytes = 9.3 GB a checkpoint; one fits with the next save beside it
    ckpt = quota.estimate_checkpoint_bytes(776_000_000)
    assert ckpt == 9_312_000_000
    assert quota.max_keep_last(ckpt, other_bytes=int(0.5 * gb)) == 1
    assert quota.max_keep_last(gb, other_bytes=0) == 19  # 19 kept + 1 being written = 20 GB
    assert quota.max_keep_last(gb, other_bytes=int(0.5 * gb)) == 18
    assert quota.max_keep_last(11 * gb, other_bytes=0) == 0  # not even one save fits beside another
    assert quota.max_keep_last(100, other_bytes=0, limit_bytes=1000) == 9
    assert quota.estimate_checkpoint_bytes(1000, "adamw8bit") == 6000
    with pytest.raises(ValueError, match="optimizer"):
        quota.estimate_checkpoint_bytes(1, "sgd")
    with pytest.raises(ValueError, match="positive"):
        quota.max_keep_last(0, 0)


def test_check_output_quota_warns_before_the_limit(tmp_path):
    (tmp_path / "runs/ckpt").mkdir(parents=True)
    (tmp_path / "runs/big.bin").write_bytes(b"\0" * 600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = quota.check_output_quota(tmp_path / "runs/ckpt", 300, limit_bytes=1000, quota_root=tmp_path)
    assert ok.fits and ok.used_bytes == 600 and ok.after_bytes == 900
    with pytest.warns(quota.OutputQuotaWarning, match="over Kaggle's 0 GB output limit"):
        bad = quota.check_output_quota(tmp_path / "runs/ckpt", 500, limit_bytes=1000, quota_root=tmp_path)
    assert not bad.fits
    assert "keep_last" in bad.message()


def test_check_output_quota_only_inside_the_limited_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(quota, "free_bytes", lambda path: None)  # the disk check has its own test
    (tmp_path / "kaggle/working").mkdir(parents=True)
    elsewhere = quota.check_output_quota(tmp_path / "tmp/ckpt", 10**12, platform=kaggle_here(tmp_path))
    assert elsewhere.fits and elsewhere.limit_bytes is None
    local = quota.check_output_quota(tmp_path, 10**12, platform=Platform("local", "cpu", ""))
    assert local.fits
    inside = quota.check_output_quota(tmp_path / "kaggle/working/runs", 10**9, platform=kaggle_here(tmp_path))
    assert inside.limit_bytes == 20 * 10**9 and inside.fits


def test_check_output_quota_warns_when_the_disk_is_full(tmp_path, monkeypatch):
    usage = types.SimpleNamespace(total=15 * 10**9, used=14 * 10**9, free=10**9)
    monkeypatch.setattr(quota.shutil, "disk_usage", lambda path: usage)
    drive = Platform("colab", "gpu", "test", tmp_path)
    with pytest.warns(quota.OutputQuotaWarning, match="only 1.00 GB are free"):
        check = quota.check_output_quota(tmp_path / "drive/runs/ckpt", 3 * 10**9, platform=drive)
    assert not check.fits and check.limit_bytes is None
    assert quota.check_output_quota(tmp_path / "drive/runs/ckpt", 10**8, platform=drive).fits
    assert quota.free_bytes(tmp_path / "not/yet/made") == 10**9  # measured at the nearest existing parent


def test_dir_bytes_ignores_symlinked_inputs(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a").write_bytes(b"1" * 10)
    (tmp_path / "out").mkdir()
    (tmp_path / "out/b").write_bytes(b"1" * 5)
    (tmp_path / "out/linked").symlink_to(tmp_path / "data", target_is_directory=True)
    assert quota.dir_bytes(tmp_path / "out") == 5


def test_checkpoint_save_checks_the_quota(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    working = tmp_path / "kaggle/working"
    working.mkdir(parents=True)
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    model = torch.nn.Linear(8, 8)
    assert quota.estimate_save_bytes(working / "ckpt", model) == 12 * (8 * 8 + 8)
    monkeypatch.setattr(platform.facts, "KAGGLE_OUTPUT_LIMIT_BYTES", 10**9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", quota.OutputQuotaWarning)
        checkpoint.save(working / "ckpt", 1, model=model, optimizer=None, state={})
    first = quota.dir_bytes(working / "ckpt/step_00000001")
    assert quota.estimate_save_bytes(working / "ckpt", model) == first
    monkeypatch.setattr(platform.facts, "KAGGLE_OUTPUT_LIMIT_BYTES", first + first // 2)
    with pytest.warns(quota.OutputQuotaWarning, match="keep_last"):
        checkpoint.save(working / "ckpt", 2, model=model, optimizer=None, state={})
    # room for two: with keep_last=2 the oldest goes early, before the third save, instead of passing the limit
    monkeypatch.setattr(platform.facts, "KAGGLE_OUTPUT_LIMIT_BYTES", 2 * first + first // 2)
    with pytest.warns(quota.OutputQuotaWarning, match="before its turn") as caught:
        checkpoint.save(working / "ckpt", 3, model=model, optimizer=None, state={}, keep_last=2)
    assert not any("over Kaggle" in str(w.message) for w in caught)
    assert [p.name for p in checkpoint.list_checkpoints(working / "ckpt")] == ["step_00000002", "step_00000003"]


def test_weekly_accelerator_quota_per_platform():
    assert quota.weekly_quota("kaggle", "gpu") == (30.0, "Kaggle's 30 GPU hours a week")
    assert quota.weekly_quota("kaggle", "tpu") == (20.0, "Kaggle's 20 TPU hours a week")
    hours, text = quota.weekly_quota("colab", "gpu")
    assert hours == 84.0 and "no published quota" in text
    assert quota.weekly_quota("local", "cpu")[0] is None
