"""Atomic writes: whole or absent, with the user's umask (not mkstemp's 0600), and not rewritten when unchanged."""

from __future__ import annotations

import os
import stat

import pytest

from nbhelpers import config, files
from nbhelpers.rundir import RunDir


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_write_gives_the_umask_permissions(tmp_path, umask, mask):
    umask(mask)
    assert files.current_umask() == mask
    files.atomic_write_text(tmp_path / "a.json", "{}")
    with open(tmp_path / "plain.json", "w") as fh:  # what any other program of the user gets
        fh.write("{}")
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "plain.json") == 0o666 & ~mask


def test_run_files_are_readable_by_the_group_and_others_under_umask_022(tmp_path, umask):
    umask(0o022)
    run = RunDir.open(tmp_path / "run", config.load("smoke"))
    run.record("tokenizer", {"vocab": 1})
    assert _mode(run.root / "config.json") == 0o644
    assert _mode(run.metrics_path) == 0o644


def test_write_if_changed_leaves_an_equal_file_alone(tmp_path):
    path = tmp_path / "x.txt"
    assert files.write_text_if_changed(path, "あ\n") is True
    before = os.stat(path)
    assert files.write_text_if_changed(path, "あ\n") is False
    assert os.stat(path).st_ino == before.st_ino and os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert files.write_text_if_changed(path, "い\n") is True
    assert path.read_text(encoding="utf-8") == "い\n"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    files.atomic_write_text(path, '{"old": 1}')

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        files.atomic_write_text(path, '{"new": 2}')
    assert files.read_json(path) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_an_atomic_file_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "part-000.bin"
    with files.atomic_file(path) as fh:
        fh.write(b"\1" * 10)
        assert not path.exists()  # a reader sees nothing until the block ends
        assert [p.suffix for p in tmp_path.iterdir()] == [".tmp"]
    assert path.read_bytes() == b"\1" * 10
    with pytest.raises(RuntimeError, match="killed"), files.atomic_file(path) as fh:
        fh.write(b"\2" * 4)
        raise RuntimeError("killed")
    assert path.read_bytes() == b"\1" * 10  # the old content, and no temporary left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-000.bin"]


def test_read_json_names_the_broken_file(tmp_path):
    (tmp_path / "m.json").write_text("{oops")
    with pytest.raises(ValueError, match="m.json: not valid JSON"):
        files.read_json(tmp_path / "m.json")
