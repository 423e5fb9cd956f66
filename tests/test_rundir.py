"""The run directory: where it is by default on each platform, and Kaggle's inputs joining it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
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
    colab = Platform("colab", "gpu", "test", tmp_path)  # on Drive, mounted or not: only Drive is shared
    assert rundir.default_run_dir("p", colab) == tmp_path / "content/drive/MyDrive/nbhelpers/runs/p"
    assert rundir.default_run_dir("p", Platform("local", "cpu", "test")) == Path("runs/p")


def fake_drive(monkeypatch, shared, answer: list[str]):
    """google.colab.drive with only mount() faked: 'allow' links the shared Drive at the mount point, 'deny' refuses."""
    import sys
    import types

    calls = []

    class MessageError(RuntimeError):  # what google.colab._message raises when the user does not allow access
        pass

    def mount(mountpoint, force_remount=False):
        calls.append(mountpoint)
        if answer.pop(0) != "allow":
            raise MessageError("Error: credential propagation was unsuccessful")
        Path(mountpoint).parent.mkdir(parents=True, exist_ok=True)
        Path(mountpoint).symlink_to(shared, target_is_directory=True)

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google", sys.modules.get("google") or types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.drive", colab.drive)
    monkeypatch.setattr(rundir.location, "_drive_asked", False)
    (shared / "MyDrive").mkdir(parents=True, exist_ok=True)
    return calls


def test_colab_run_dir_is_on_drive_and_a_refusal_says_what_to_do(tmp_path, monkeypatch):
    colab = Platform("colab", "gpu", "test", tmp_path / "runtime")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: colab)
    calls = fake_drive(monkeypatch, tmp_path / "drive", ["deny", "allow"])
    with pytest.raises(rundir.RunDirError) as err:
        RunDir.open("", config.load("smoke"))
    message = str(err.value)
    assert "not mounted" in message and "only Google Drive is shared" in message
    assert "allow access to Google Drive" in message and 'RUN_DIR = "/content/runs/smoke"' in message
    assert calls == [str(tmp_path / "runtime/content/drive")]
    with pytest.raises(rundir.RunDirError):  # asked once per process: no second dialog from a later cell
        RunDir.open("", config.load("smoke"))
    assert len(calls) == 1
    local = RunDir.open(tmp_path / "runtime/content/runs/smoke", config.load("smoke"))  # what the error offers
    assert local.root == (tmp_path / "runtime/content/runs/smoke").resolve()
    assert platform.mount_drive(colab) is True  # the setup cell, run again and allowed
    run = RunDir.open("", config.load("smoke"))
    assert run.root == (tmp_path / "drive/MyDrive/nbhelpers/runs/smoke").resolve()


def test_setup_cell_mounts_drive_on_colab_saying_why(tmp_path, monkeypatch, capsys):
    colab = Platform("colab", "gpu", "test", tmp_path / "runtime")
    fake_drive(monkeypatch, tmp_path / "drive", ["allow"])
    platform.setup(colab)
    out = capsys.readouterr().out
    assert "Mounting Google Drive" in out and "runtime of its own" in out
    assert platform.drive_mounted(colab)
    assert "nbhelpers/runs/PROFILE" in out


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


def _earlier_output(tmp_path, kernel: str, stage_files: dict[str, list[str]], metrics: dict,
                   mount: str = "notebooks/alice") -> Path:
    """An earlier notebook's output as Kaggle mounts it: /kaggle/input/notebooks/OWNER/SLUG/ (2025 on) or /kaggle/input/SLUG/."""
    run = tmp_path / "kaggle/input" / mount / kernel / "runs/smoke"
    for files in stage_files.values():
        for f in files:
            (run / f).parent.mkdir(parents=True, exist_ok=True)
            (run / f).write_text("x")
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.mark.parametrize("mount", ["notebooks/alice", "", "datasets/alice"])
def test_kaggle_chaining_links_earlier_outputs(tmp_path, monkeypatch, mount):
    (tmp_path / "kaggle/working").mkdir(parents=True)
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    made_with = config.load("smoke").fingerprint(*rundir.STAGES["tokenizer"][1])
    _earlier_output(tmp_path, "nbhelpers-01-tokenizer", {"tokenizer": ["tokenizer/tokenizer.json", "tokenizer/spm.model"]},
                    {"tokenizer": {"vocab": 2000, "config_fingerprint": made_with}}, mount)
    _earlier_output(tmp_path, "nbhelpers-02-corpus", {"corpus": ["corpus/manifest.json"]},
                    {"corpus": {"tokens": 5}, "tokenizer": {"vocab": 2000}}, mount)
    run = RunDir.open("", config.load("smoke"))
    assert (run.tokenizer).is_symlink() and (run.corpus).is_symlink()
    assert (run.tokenizer / "spm.model").read_text() == "x"
    run.require("tokenizer")
    with pytest.raises(ValueError, match="manifest.json: not valid JSON"):
        run.require("corpus")  # linked outputs are checked like the run's own (provenance); these are placeholders
    assert run.metrics()["tokenizer"]["config_fingerprint"] == made_with
    # a second open changes nothing, and the run's own entries win over the inputs'
    run.record("tokenizer", {"vocab": 1})
    RunDir.open("", config.load("smoke"))
    assert run.metrics()["tokenizer"]["vocab"] == 1


def test_kaggle_input_of_the_same_name_but_other_settings_is_not_linked(tmp_path, monkeypatch, capsys):
    """issue 25: it was linked whole, and the changed stage then failed with EROFS on .../tokenizer/spm.model."""
    (tmp_path / "kaggle/working").mkdir(parents=True)
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    source = _earlier_output(tmp_path, "nbhelpers-02-corpus",
                             {"tokenizer": ["tokenizer/tokenizer.json", "tokenizer/spm.model"],
                              "corpus": ["corpus/manifest.json"]}, {"tokenizer": {}, "corpus": {}})
    theirs = config.load("smoke", ["corpus.val_blocks=16"])
    (source / "config.json").write_text(json.dumps(theirs.to_dict()))
    run = RunDir.open("", config.load("smoke"))
    said = capsys.readouterr().out
    assert not run.tokenizer.exists() and not run.corpus.exists() and run.metrics() == {}
    assert f"tokenizer: not linked from {source}" in said and "corpus.val_blocks=16 there, 32 here" in said
    assert "run with its settings (--set / OVERRIDES)" in said and "another name (RUN_DIR)" in said
    run.tokenizer.mkdir()
    (run.tokenizer / "spm.model").write_text("mine")  # 01 writes its own folder, not the read-only input
    # no config.json, but its metrics entry records another configuration: not linked either
    (source / "config.json").unlink()
    (source / "metrics.json").write_text(json.dumps({"corpus": {"config_fingerprint": "0123456789abcdef"}}))
    shutil.rmtree(run.tokenizer)
    RunDir.open("", config.load("smoke"))
    assert not run.corpus.exists() and "records configuration 0123456789abcdef for corpus" in capsys.readouterr().out
    # the same settings: linked as before
    other = tmp_path / "again"
    (other / "kaggle/working").mkdir(parents=True)
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(other))
    same = _earlier_output(other, "k", {"tokenizer": ["tokenizer/tokenizer.json", "tokenizer/spm.model"]},
                           {"tokenizer": {}})
    (same / "config.json").write_text(json.dumps(config.load("smoke").to_dict()))
    assert RunDir.open("", config.load("smoke")).tokenizer.is_symlink()


def test_kaggle_chaining_skips_incomplete_outputs(tmp_path):
    _earlier_output(tmp_path, "k", {"tokenizer": ["tokenizer/tokenizer.json"]}, {"tokenizer": {}})  # spm.model absent
    run = RunDir(tmp_path / "kaggle/working/runs/smoke", config.load("smoke"))
    run.root.mkdir(parents=True)
    assert rundir.link_inputs(run, kaggle_here(tmp_path)) == []
    assert not (run.root / "tokenizer").exists()


# ---------------------------------------------------------------- Kaggle: resuming from an earlier version's output


def _tree(path: Path) -> dict[str, str]:
    """Every file and link under `path` with its content hash (links: their target), to prove nothing changed."""
    out = {}
    for p in sorted(path.rglob("*")):
        key = str(p.relative_to(path))
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


def _stopped_version(tmp_path, cfg, steps=(1, 2), mount="notebooks/alice/nbhelpers-03-pretrain") -> Path:
    """An earlier version's output of 03: config.json, checkpoints of `steps`, a torn one, metrics.jsonl."""
    torch = pytest.importorskip("torch")
    from nbhelpers import checkpoint

    run = tmp_path / "kaggle/input" / mount / "runs/smoke"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    (run / "metrics.json").write_text(json.dumps({"tokenizer": {}, "corpus": {}}))
    model = torch.nn.Linear(4, 4)
    for step in steps:
        checkpoint.save(run / "pretrain/checkpoints", step, model=model, optimizer=None, state={"micro_index": step},
                        keep_last=0)
    (run / f"pretrain/checkpoints/.tmp-step_{steps[-1] + 1:08d}").mkdir()  # a save the session's end cut short
    records = [{"kind": "train", "step": s, "loss": 9.0 - s} for s in range(1, steps[-1] + 1)]
    (run / "pretrain/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_kaggle_resume_links_checkpoints_in_place_and_carries_the_metrics(tmp_path, monkeypatch):
    from nbhelpers import checkpoint

    torch = pytest.importorskip("torch")
    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    source = _stopped_version(tmp_path, cfg)
    before = _tree(tmp_path / "kaggle/input")
    run = RunDir.open("", cfg)  # version 2: an empty working dir
    own = run.pretrain / "checkpoints"
    assert sorted(p.name for p in own.iterdir()) == ["step_00000001", "step_00000002"]
    assert all(p.is_symlink() for p in own.iterdir())  # read in place: nothing copied into the output
    assert checkpoint.latest(own).resolve() == (source / "pretrain/checkpoints/step_00000002").resolve()
    assert (run.pretrain / "metrics.jsonl").read_text() == (source / "pretrain/metrics.jsonl").read_text()
    assert not (run.pretrain / "metrics.jsonl").is_symlink()  # the loop rewrites it: a copy of our own

    # the loop saves here; pruning a link removes the link, never the input's checkpoint
    model = torch.nn.Linear(4, 4)
    checkpoint.save(own, 3, model=model, optimizer=None, state={}, keep_last=2)
    checkpoint.save(own, 4, model=model, optimizer=None, state={}, keep_last=2)
    checkpoint.clean_incomplete(own)
    assert _tree(tmp_path / "kaggle/input") == before
    run.stop("pretrain", 4, 10)  # the session's end: links to the input go, the output holds our own only
    assert sorted(p.name for p in own.iterdir()) == ["step_00000003", "step_00000004"]
    assert not any(p.is_symlink() for p in own.iterdir())
    assert run.stopped("pretrain")["step"] == 4
    assert _tree(tmp_path / "kaggle/input") == before


def test_kaggle_resume_prefers_the_newest_checkpoint_wherever_it_is(tmp_path, monkeypatch):
    from nbhelpers import checkpoint

    torch = pytest.importorskip("torch")
    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    _stopped_version(tmp_path, cfg, steps=(1, 2))
    # an interactive session's own newer checkpoint (and its longer history) wins over the input's
    own = tmp_path / "kaggle/working/runs/smoke/pretrain"
    checkpoint.save(own / "checkpoints", 5, model=torch.nn.Linear(4, 4), optimizer=None, state={})
    (own / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 5, "loss": 1.0}) + "\n")
    run = RunDir.open("", cfg)
    assert checkpoint.latest(run.pretrain / "checkpoints").name == "step_00000005"
    assert json.loads((run.pretrain / "metrics.jsonl").read_text())["step"] == 5


def test_kaggle_resume_ignores_inputs_of_another_run(tmp_path, monkeypatch):
    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    _stopped_version(tmp_path, config.load("smoke", ["model.preset=tiny"]))  # another model: not this run's
    run = RunDir.open("", cfg)
    assert not (run.pretrain / "checkpoints").exists() and not (run.pretrain / "metrics.jsonl").exists()


def test_kaggle_resume_from_a_dataset_made_from_the_output(tmp_path, monkeypatch):
    from nbhelpers import checkpoint

    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    _stopped_version(tmp_path, cfg, steps=(3,), mount="datasets/alice/my-pretrain-output")
    run = RunDir.open("", cfg)
    assert checkpoint.latest(run.pretrain / "checkpoints").name == "step_00000003"


# ---------------------------------------------------------------- run directories that cannot work, config.json


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke", *map(str, args)],
                          capture_output=True, text=True, timeout=300, **kwargs)


def _one_clear_line(proc, *words):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: RUN_DIR"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for word in words:
        assert word in lines[0], lines[0]


def test_run_dir_that_is_a_file_or_under_one_gets_one_clear_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(rundir.RunDirError, match="is a file, not a folder"):
        RunDir.open(tmp_path / "f", config.load("smoke"))
    with pytest.raises(rundir.RunDirError, match=r"lies under .*/f, which is a file"):
        RunDir.open(tmp_path / "f/run", config.load("smoke"))
    _one_clear_line(_cli("--run-dir", tmp_path / "f", "--only", "01"), "is a file")
    _one_clear_line(_cli("--run-dir", tmp_path / "f/a/b", "--only", "01"), "lies under", str(tmp_path / "f"))
    assert (tmp_path / "f").read_text() == "x"


def test_run_dir_on_a_read_only_file_system_gets_one_clear_line(tmp_path, read_only):
    (tmp_path / "disk").mkdir()
    proc = subprocess.run([*read_only([tmp_path / "disk"]), sys.executable, "-m", "nbhelpers", "run", "--profile",
                           "smoke", "--run-dir", str(tmp_path / "disk/run"), "--only", "01"],
                          capture_output=True, text=True, timeout=300)
    _one_clear_line(proc, "cannot be created", "read-only file system")
    assert list((tmp_path / "disk").iterdir()) == []


def test_config_json_is_written_for_a_new_run_and_by_finished_stages_only(tmp_path):
    first = RunDir.open(tmp_path / "run", config.load("smoke"))
    path = first.root / "config.json"
    written = path.read_bytes()
    stamp = os.stat(path).st_mtime_ns
    other = config.load("smoke", ["train.lr=0.5"])
    again = RunDir.open(tmp_path / "run", other)  # e.g. a notebook that will fail: config.json stays as it was
    assert path.read_bytes() == written and os.stat(path).st_mtime_ns == stamp
    assert json.loads(written)["train"]["lr"] == config.load("smoke").train.lr
    again.record("tokenizer", {"vocab": 3000})  # a stage finished with this configuration: now it is the run's
    assert json.loads(path.read_text())["train"]["lr"] == 0.5
    assert not [p.name for p in first.root.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_a_hand_edit_of_config_json_is_named_not_overwritten(tmp_path):
    run = RunDir.open(tmp_path / "run", config.load("smoke"))
    path = run.root / "config.json"
    assert (run.root / "config.json.sha256").read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    data = json.loads(path.read_text())
    data["train"]["lr"], data["corpus"]["seed"] = 0.5, 9
    path.write_text(json.dumps(data, indent=2))
    edited = path.read_bytes()
    with pytest.raises(rundir.RunDirError) as err:
        RunDir.open(tmp_path / "run", config.load("smoke"))
    msg = str(err.value)
    assert f"{path} was edited by hand" in msg and "corpus.seed=9 there, 1234 here" in msg
    assert f"train.lr=0.5 there, {config.load('smoke').train.lr} here" in msg and "--set KEY=VALUE" in msg
    assert path.read_bytes() == edited  # nothing overwritten
    proc = _cli("--run-dir", run.root, "--only", "01")
    assert proc.returncode == 1 and "was edited by hand" in proc.stderr and "Traceback" not in proc.stderr
    # the edit passed as settings: nothing would be lost, the run goes on and records the file as its own
    run = RunDir.open(tmp_path / "run", config.load("smoke", ["train.lr=0.5", "corpus.seed=9"]))
    run.record("tokenizer", {})
    RunDir.open(tmp_path / "run", config.load("smoke", ["train.lr=0.5", "corpus.seed=9"]))


def test_one_run_per_run_dir_and_a_gone_holders_lock_is_recovered(tmp_path, capsys):
    import socket

    run = RunDir.open(tmp_path / "run", config.load("smoke"))
    lock = run.root / rundir.LOCK_FILE
    with run.lock():
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        busy = rf"in use by another run \(process {os.getpid()} on host {socket.gethostname()}, since .*one run per"
        with pytest.raises(rundir.RunDirBusy, match=busy), RunDir.open(tmp_path / "run", config.load("smoke")).lock():
            pass
        proc = _cli("--run-dir", run.root, "--only", "01")  # a second `run` at once: fails at once, naming it
        assert proc.returncode == 1 and f"process {os.getpid()}" in proc.stderr, proc.stderr
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": "earlier"}))
    with run.lock():  # its holder was killed: recovered, saying so
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of process {int(dead.stdout)}" in capsys.readouterr().out
    lock.write_text(json.dumps({"pid": 1, "host": "another-machine", "since": "earlier"}))
    with pytest.raises(rundir.RunDirBusy, match="on host another-machine"), run.lock():  # touched lately
        pass
    old = lock.stat().st_mtime - rundir.LOCK_STALE_S - 60
    os.utime(lock, (old, old))
    with run.lock():  # another host's, untouched for longer than its heartbeat allows: that run is gone
        pass
    assert not lock.exists()


def test_a_read_only_run_opens_for_reading_and_refuses_writing_stages(tmp_path, read_only):
    run = RunDir.open(tmp_path / "run", config.load("smoke"))
    run.record("tokenizer", {"vocab": 3000})
    before = _tree(run.root)
    code = ("import nbhelpers as n\n"
            "run = n.rundir.RunDir.open(%r, n.config.load('smoke'))\n"
            "assert run.read_only and run.metrics()['tokenizer']['vocab'] == 3000\n"
            "print(run.record('chat', {'answers': 3}))\n"
            "try:\n    run.require_writable('eval')\nexcept n.rundir.RunDirError as e:\n    print('refused:', e)\n")
    proc = subprocess.run([*read_only([run.root]), sys.executable, "-c", code % str(run.root)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "is read-only: its artifacts are read" in proc.stdout and "not recorded" in proc.stdout
    assert f"refused: 06_eval writes {run.root / 'eval'}" in proc.stdout and "cp -r" in proc.stdout
    assert _tree(run.root) == before


def test_kaggle_resume_copies_the_xla_cache_once(tmp_path, monkeypatch):
    """The compiled programs of an earlier version arrive as a writable copy; a run with its own cache keeps it."""
    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    monkeypatch.setattr(platform, "xla_installed", lambda: True)  # a TPU kernel
    source = _stopped_version(tmp_path, cfg)
    (source / "xla_cache/ab").mkdir(parents=True)
    (source / "xla_cache/ab/program").write_bytes(b"compiled")
    before = _tree(tmp_path / "kaggle/input")
    run = RunDir.open("", cfg)
    copy = run.root / "xla_cache/ab/program"
    assert copy.read_bytes() == b"compiled" and not (run.root / "xla_cache").is_symlink()
    copy.write_bytes(b"recompiled")  # torch_xla writes into it: the input is never touched
    assert _tree(tmp_path / "kaggle/input") == before
    RunDir.open("", cfg)  # the same session again: its own cache stays
    assert copy.read_bytes() == b"recompiled"
    assert not list(run.root.glob(".tmp-*"))


def test_kaggle_resume_leaves_another_runs_xla_cache(tmp_path, monkeypatch):
    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    monkeypatch.setattr(platform, "xla_installed", lambda: True)
    source = _stopped_version(tmp_path, config.load("smoke", ["model.preset=tiny"]))
    (source / "xla_cache").mkdir()
    run = RunDir.open("", cfg)
    assert not (run.root / "xla_cache").exists()


def test_a_kernel_without_torch_xla_leaves_the_xla_cache_in_the_input(tmp_path, monkeypatch):
    """A CPU or GPU kernel (01, 02, 06 on a T4) would only add the compiled programs to its 20 GB of output."""
    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    monkeypatch.setattr(platform, "xla_installed", lambda: False)
    source = _stopped_version(tmp_path, cfg)
    (source / "xla_cache").mkdir()
    run = RunDir.open("", cfg)
    assert not (run.root / "xla_cache").exists()


# ---------------------------------------------------------------- Colab's Drive at a session's end


def colab_rehearsal(monkeypatch, tmp_path) -> Platform:
    """A Colab runtime under the rehearsal root (NBHELPERS_PLATFORM_ROOT), as platform.detect() sees it."""
    monkeypatch.setenv("NBHELPERS_PLATFORM_ROOT", str(tmp_path / "runtime"))
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-external_20261120-060000_RC00")
    monkeypatch.delenv(platform.HEADLESS_ENV, raising=False)
    (tmp_path / "runtime").mkdir(exist_ok=True)
    return platform.detect()


def flushing_drive(monkeypatch, tmp_path, answers=("allow",)) -> tuple[list, list]:
    """fake_drive plus flush_and_unmount: it records its timeout and unmounts (what colabtools' call does)."""
    import sys

    mounts = fake_drive(monkeypatch, tmp_path / "drive", list(answers))
    flushes = []

    def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
        flushes.append(timeout_ms)
        (tmp_path / "runtime/content/drive").unlink()

    sys.modules["google.colab"].drive.flush_and_unmount = flush_and_unmount
    return mounts, flushes


def test_a_sessions_last_write_on_drive_is_pushed_before_the_session_ends(tmp_path, monkeypatch, capsys):
    colab = colab_rehearsal(monkeypatch, tmp_path)
    mounts, flushes = flushing_drive(monkeypatch, tmp_path, ["allow", "allow"])
    run = RunDir.open("", config.load("smoke"))
    assert run.root == (tmp_path / "drive/MyDrive/nbhelpers/runs/smoke").resolve() and flushes == []
    print(run.stop("pretrain", 40, 100))  # the time budget: the checkpoint of the last minutes goes up now
    assert flushes == [platform.DRIVE_FLUSH_MINUTES * 60_000] and not platform.drive_mounted(colab)
    assert "Pushing the last writes to Google Drive" in capsys.readouterr().out
    again = RunDir.open("", config.load("smoke"))  # a later cell in this runtime mounts Drive again
    assert again.root == run.root and len(mounts) == 2
    again.record("tokenizer", {"vocab_size": 3000})  # a notebook's last cell
    assert len(flushes) == 2
    local = RunDir.open(tmp_path / "runtime/content/runs/smoke", config.load("smoke"))
    local.record("tokenizer", {"vocab_size": 3000})  # not on Drive: nothing to push
    assert len(flushes) == 2


def test_nbhelpers_run_on_colab_without_drive_fails_at_once_saying_what_to_do(tmp_path, monkeypatch):
    from nbhelpers import runner

    colab_rehearsal(monkeypatch, tmp_path)
    mounts, flushes = flushing_drive(monkeypatch, tmp_path)
    ran = []
    monkeypatch.setattr(runner, "_run_all", lambda *a, **k: ran.append(1) or [])
    (tmp_path / "drive/MyDrive").rename(tmp_path / "drive/elsewhere")  # nothing mounted, no browser to ask
    with pytest.raises(platform.PlatformError) as err:
        runner.run("smoke", "")
    assert "cannot mount Google Drive" in str(err.value) and 'drive.mount("/content/drive")' in str(err.value)
    assert "--run-dir /content/runs/smoke" in str(err.value)
    assert mounts == [] and ran == [] and flushes == []
    monkeypatch.setenv(platform.HEADLESS_ENV, "1")  # a kernel of the runner: mounting would wait forever
    with pytest.raises(platform.PlatformError, match="cannot mount Google Drive"):
        platform.mount_drive()
    assert mounts == []


def test_nbhelpers_run_on_colab_pushes_drive_once_after_its_last_notebook(tmp_path, monkeypatch):
    from nbhelpers import runner

    colab_rehearsal(monkeypatch, tmp_path)
    mounts, flushes = flushing_drive(monkeypatch, tmp_path)
    assert platform.mount_drive() is True  # the user mounted it in a notebook cell first

    def notebooks(*args, **kwargs):  # what the kernels do: their records leave the push to the runner
        assert os.environ[platform.HEADLESS_ENV] == "1"
        RunDir.open("", config.load("smoke")).record("tokenizer", {"vocab_size": 3000})
        assert flushes == []
        return []

    monkeypatch.setattr(runner, "_run_all", notebooks)
    assert runner.run("smoke", "") == []
    assert len(flushes) == 1 and platform.HEADLESS_ENV not in os.environ
def test_a_run_recorded_under_another_profile_is_refused_naming_both(tmp_path, monkeypatch):
    """PROFILE = "auto" picking colab_t4 over a smoke run's RUN_DIR must not train a second run there."""
    monkeypatch.setattr(platform, "detect", lambda *a, **k: Platform("local", "cpu", "test", tmp_path))
    RunDir.open(tmp_path / "run", config.load("smoke"))
    before = (tmp_path / "run" / "config.json").read_bytes()
    with pytest.raises(rundir.RunDirError, match=r"profile 'smoke' .*not 'colab_t4'.*PROFILE = \"smoke\""):
        RunDir.open(tmp_path / "run", config.load("colab_t4"))
    assert (tmp_path / "run" / "config.json").read_bytes() == before  # nothing rewritten
    assert RunDir.open(tmp_path / "run", config.load("smoke", ["train.lr=1e-3"])).root == (tmp_path / "run").resolve()
# ---------------------------------------------------------------- a resume that cannot go stale


def _sessions(stage_dir: Path, *spans: tuple[int, int]) -> None:
    """sessions.jsonl with one session per (start, end) span, as begin_session / end_session write it."""
    lines = []
    for i, (start, end) in enumerate(spans, 1):
        lines += [{"session": i, "start_step": start, "start_tokens": start * 64},
                  {"session": i, "end_step": end, "end_tokens": end * 64, "status": "time_budget"}]
    (stage_dir / rundir.SESSIONS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))


def _fake_kagglehub(monkeypatch, outputs: dict[str, Path], fail_full: bool = False) -> list:
    """kagglehub.notebook_output_download serving `outputs` (handle -> the newest output's folder); calls listed."""
    import types

    calls = []

    def notebook_output_download(handle, path=None, **_):
        calls.append((handle, path))
        if path is None and fail_full:
            raise ConnectionError("Internet is off")
        return str(outputs[handle] / path) if path else str(outputs[handle])

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(notebook_output_download=notebook_output_download))
    return calls


def _newer_version(tmp_path, cfg) -> Path:
    """Version 2's output (steps 1 and 2, sessions 1 and 2), where kagglehub finds the kernel's newest output."""
    newest = _stopped_version(tmp_path / "hub", cfg, steps=(1, 2))  # under hub/kaggle/input/..., not mounted here
    _sessions(newest / "pretrain", (0, 1), (1, 2))
    return newest.parent.parent  # the output's root (it holds runs/smoke)


def test_a_stale_input_is_replaced_by_the_newest_output_through_kagglehub(tmp_path, monkeypatch, capsys):
    """Version 3 mounted version 1's output (step 1) though version 2 reached step 2: it fetches version 2's."""
    from nbhelpers import checkpoint

    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    corpus = tmp_path / "kaggle/input/notebooks/alice/nbhelpers-02-corpus/runs/smoke"  # found first, no pretrain
    corpus.mkdir(parents=True)
    (corpus / "config.json").write_text(json.dumps(cfg.to_dict()))
    (corpus / "metrics.json").write_text(json.dumps({"tokenizer": {}, "corpus": {}}))
    stale = _stopped_version(tmp_path, cfg, steps=(1,))
    _sessions(stale / "pretrain", (0, 1))
    newest = _newer_version(tmp_path, cfg)
    calls = _fake_kagglehub(monkeypatch, {"alice/nbhelpers-03-pretrain": newest})
    run = RunDir.open("", cfg)
    latest = checkpoint.latest(run.pretrain / "checkpoints")
    assert latest.name == "step_00000002" and latest.resolve().is_relative_to(newest.resolve())
    assert calls[0] == ("alice/nbhelpers-03-pretrain", "runs/smoke/pretrain/sessions.jsonl")
    out = capsys.readouterr().out
    assert "session 2 (recorded in the newest output of alice/nbhelpers-03-pretrain (kagglehub))" in out
    assert "pretrain: resuming from step 2 of the output of session 2 at" in out
    assert [s["session"] for s in rundir.read_sessions(run.pretrain)] == [1, 2]  # the history carries on


def test_a_stale_input_that_cannot_be_fetched_stops_saying_what_to_attach(tmp_path, monkeypatch):
    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    stale = _stopped_version(tmp_path, cfg, steps=(1,))
    _sessions(stale / "pretrain", (0, 1))
    _fake_kagglehub(monkeypatch, {"alice/nbhelpers-03-pretrain": _newer_version(tmp_path, cfg)}, fail_full=True)
    with pytest.raises(rundir.StaleResume) as err:
        RunDir.open("", cfg)
    text = str(err.value)
    assert "the inputs hold step 1 (session 1), but session 2" in text and "reached step 2" in text
    assert "attach the newest version of alice/nbhelpers-03-pretrain's output" in text and "save a new version" in text


def test_a_session_that_already_started_from_the_inputs_checkpoint_marks_them_stale(tmp_path, monkeypatch):
    """Without kagglehub: this run directory (an interactive session) records a session that resumed from the
    input's step 1 and reached step 2, whose checkpoint is not here: retraining from step 1 would repeat it."""
    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # not installed
    stale = _stopped_version(tmp_path, cfg, steps=(1,))
    _sessions(stale / "pretrain", (0, 1))
    here = tmp_path / "kaggle/working/runs/smoke/pretrain"
    here.mkdir(parents=True)
    _sessions(here, (0, 1), (1, 2))
    with pytest.raises(rundir.StaleResume, match="session 2 \\(recorded in this run directory\\)"):
        RunDir.open("", cfg)


def test_a_current_input_resumes_and_says_from_which_session_and_step(tmp_path, monkeypatch, capsys):
    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    current = _stopped_version(tmp_path, cfg, steps=(1, 2))
    _sessions(current / "pretrain", (0, 1), (1, 2))
    _fake_kagglehub(monkeypatch, {"alice/nbhelpers-03-pretrain": current.parent.parent})  # the newest is mounted
    RunDir.open("", cfg)
    assert ("pretrain: resuming from step 2 of the output of session 2 of alice/nbhelpers-03-pretrain"
            in capsys.readouterr().out)


def test_each_session_records_where_it_started_and_ended(tmp_path, monkeypatch, capsys):
    from nbhelpers import checkpoint

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: Platform("local", "cpu", "test", tmp_path))
    run = RunDir.open(tmp_path / "run", config.load("smoke"))
    first = rundir.begin_session(run, "pretrain")
    assert "pretrain: session 1 starts from step 0 (no checkpoint yet)" in capsys.readouterr().out
    checkpoint.save(run.pretrain / "checkpoints", 3, model=torch.nn.Linear(4, 4), optimizer=None, state={})
    (run.pretrain / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 3, "tokens": 192}) + "\n")
    rundir.end_session(run, "pretrain", first, 3, "time_budget")
    second = rundir.begin_session(run, "pretrain")
    assert second["session"] == 2 and second["start_step"] == 3 and second["start_tokens"] == 192
    assert "session 2 starts from the checkpoint of step 3 in this run directory" in capsys.readouterr().out
    sessions = rundir.read_sessions(run.pretrain)
    assert [(s["session"], s["start_step"], s.get("end_step"), s.get("end_tokens")) for s in sessions] == [
        (1, 0, 3, 192), (2, 3, None, None)]


def test_sessions_that_left_no_newer_checkpoint_do_not_stop_the_resume(tmp_path, monkeypatch, capsys):
    """A session that crashed before its first save (recorded here, or as the kernel's newest output) is no
    reason to stop: nothing newer exists anywhere, so the run resumes from the input's step 1."""
    from nbhelpers import checkpoint

    cfg = config.load("smoke")
    monkeypatch.setattr(platform, "detect", lambda *a, **k: kaggle_here(tmp_path))
    stale = _stopped_version(tmp_path, cfg, steps=(1,))
    _sessions(stale / "pretrain", (0, 1))
    here = tmp_path / "kaggle/working/runs/smoke/pretrain"
    here.mkdir(parents=True)
    (here / rundir.SESSIONS_FILE).write_text(  # an editor run of this session that crashed before saving
        (stale / "pretrain" / rundir.SESSIONS_FILE).read_text() + json.dumps({"session": 2, "start_step": 1}) + "\n")
    crashed = _stopped_version(tmp_path / "hub", cfg, steps=(1,))  # version 2: started at 1, saved nothing
    (crashed / "pretrain" / rundir.SESSIONS_FILE).write_text((here / rundir.SESSIONS_FILE).read_text())
    _fake_kagglehub(monkeypatch, {"alice/nbhelpers-03-pretrain": crashed.parent.parent})
    run = RunDir.open("", cfg)
    assert checkpoint.latest(run.pretrain / "checkpoints").name == "step_00000001"
    assert "holds no newer checkpoint (step 1), so this session resumes from step 1" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # without kagglehub: this directory's record alone
    (tmp_path / "kaggle/working/runs/smoke/pretrain/checkpoints").rename(tmp_path / "old-links")
    RunDir.open("", cfg)  # no StaleResume
