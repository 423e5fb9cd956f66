"""The platforms' flows rehearsed end to end: NBHELPERS_PLATFORM_ROOT plus each platform's own variables.

Kaggle: a saved version starts with an empty /kaggle/working; earlier outputs (other notebooks', and this
notebook's previous version's) arrive read-only under /kaggle/input/notebooks/OWNER/SLUG/. Colab: each
notebook opened from its badge gets a runtime of its own (its own /content); only Google Drive is shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nbhelpers import notebooks, rundir, runner

pytestmark = [pytest.mark.slow, pytest.mark.notebooks]

# smoke scale, shortened: 30 steps, every step logged, checkpoints every 10
SHORT = ["--set", "train.max_steps=30", "--set", "train.log_every=1", "--set", "train.eval_every=10",
         "--set", "train.save_every=10"]
TIMING = ("tokens_per_s", "mfu", "elapsed_s")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "COLAB_", "NBHELPERS_"))}
    return {**env, **extra}


def _run(args, env, wrap=(), timeout=900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke", *map(str, args)]
    return subprocess.run([*wrap, *cmd], env=env, capture_output=True, text=True, timeout=timeout)


def _files(path: Path) -> dict[str, str]:
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(path))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _curve(metrics: Path) -> list[dict]:
    """The train and eval records of a metrics.jsonl without their timings."""
    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records if r.get("kind") in ("train", "eval")]


def _save_version(root: Path, slug: str) -> Path:
    """Kaggle keeps /kaggle/working as the version's output; the next session mounts it read-only as an input."""
    out = root / "kaggle/input/notebooks/alice" / slug
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(root / "kaggle/working", out)
    (root / "kaggle/working").mkdir()
    return out


def test_kaggle_saved_versions_resume_bit_exact_from_read_only_inputs(tmp_path, read_only):
    root = tmp_path / "kg"
    (root / "kaggle/working").mkdir(parents=True)
    (root / "kaggle/input").mkdir()
    env = _env(NBHELPERS_PLATFORM_ROOT=str(root), KAGGLE_KERNEL_RUN_TYPE="Batch",
               KAGGLE_URL_BASE="https://www.kaggle.com")
    inputs = root / "kaggle/input"

    # the CPU kernels 01 and 02 (one session here), saved: their output is an input from now on
    proc = _run(["--only", "01,02"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _save_version(root, "nbhelpers-02-corpus")

    # 03, version 1: the time budget ends it after its first step; the cells succeed, the runner says 75
    proc = _run(["--only", "01,02,03", *SHORT, "--set", "train.max_minutes=0.001"], env, read_only([inputs]))
    assert proc.returncode == runner.EXIT_STOPPED, proc.stdout + proc.stderr
    assert "stopped at step 1 of 30" in proc.stdout and "save a new version to continue" in proc.stdout
    v1 = _save_version(root, "nbhelpers-03-pretrain") / "runs/smoke"
    assert [p.name for p in (v1 / "pretrain/checkpoints").iterdir()] == ["step_00000001"]
    executed = (v1 / "notebooks/03_pretrain.ipynb").read_text(encoding="utf-8")
    assert '"ename"' not in executed and "stopped at step 1 of 30" in executed

    # 03, version 2: an empty working dir, version 1's output read-only under /kaggle/input
    before = _files(inputs)
    proc = _run(["--only", "01,02,03", *SHORT], env, read_only([inputs]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pretrain: resuming from step 1" in proc.stdout
    assert _files(inputs) == before  # the input was read in place, never written
    v2 = root / "kaggle/working/runs/smoke"
    assert not any(p.is_symlink() for p in (v2 / "pretrain/checkpoints").iterdir())  # only its own checkpoints
    assert (v2 / "pretrain/final/model.safetensors").is_file()

    # the same 30 steps uninterrupted, from the same tokenizer and corpus, on a plain local run
    base = tmp_path / "base"
    shutil.copytree(inputs / "notebooks/alice/nbhelpers-02-corpus/runs/smoke", base)
    proc = _run(["--run-dir", base, "--only", "03", *SHORT], _env())
    assert proc.returncode == 0, proc.stdout + proc.stderr

    resumed, straight = _curve(v2 / "pretrain/metrics.jsonl"), _curve(base / "pretrain/metrics.jsonl")
    assert [r["step"] for r in resumed if r["kind"] == "train"] == list(range(1, 31))  # step 1 is version 1's
    assert resumed == straight  # losses, learning rates, gradient norms, eval losses: bit for bit
    from safetensors.torch import load_file

    a, b = load_file(v2 / "pretrain/final/model.safetensors"), load_file(base / "pretrain/final/model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

    # 03, version 3, saved again after pretraining completed (Kaggle runs the notebook itself, as --force does
    # here): nothing trains, nothing is written into the input, the notebook succeeds
    _save_version(root, "nbhelpers-03-pretrain")
    before = _files(inputs)
    proc = _run(["--only", "03", "--force", *SHORT], env, read_only([inputs]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _files(inputs) == before
    v3 = root / "kaggle/working/runs/smoke"
    executed = (v3 / "notebooks/03_pretrain.ipynb").read_text(encoding="utf-8")
    assert '"ename"' not in executed and "pretrain is complete (step 30)" in executed
    assert (v3 / "pretrain").is_symlink()  # the finished stage, read in place
    assert json.loads((v3 / "metrics.json").read_text(encoding="utf-8"))["pretrain"]["steps"] == 30


FAKE_DRIVE = '''\
"""Stands in for google.colab.drive: mount() makes the shared Drive folder appear at the mount point."""
import os


class MessageError(RuntimeError):
    """What google.colab raises when the user does not allow access."""


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    if os.environ.get("FAKE_DRIVE_ANSWER", "allow") != "allow":
        raise MessageError("Error: credential propagation was unsuccessful")
    os.makedirs(os.path.dirname(mountpoint), exist_ok=True)
    os.symlink(os.environ["FAKE_DRIVE"], mountpoint)
    print("Mounted at " + mountpoint)
    with open(os.environ["FAKE_DRIVE_LOG"], "a") as log:
        log.write("mount " + mountpoint + "\\n")


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    mountpoint = os.path.join(os.environ["NBHELPERS_PLATFORM_ROOT"], "content/drive")
    with open(os.environ["FAKE_DRIVE_LOG"], "a") as log:
        log.write("flush_and_unmount " + mountpoint + "\\n")
    os.unlink(mountpoint)
'''


def test_colab_notebooks_in_separate_runtimes_share_only_drive(tmp_path):
    fake = tmp_path / "fake"
    (fake / "google/colab").mkdir(parents=True)
    (fake / "google/colab/__init__.py").write_text("")
    (fake / "google/colab/drive.py").write_text(textwrap.dedent(FAKE_DRIVE))
    drive = tmp_path / "drive"
    (drive / "MyDrive").mkdir(parents=True)
    pythonpath = os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])
    sources = {s.stem[:2]: s for s in notebooks.discover()}

    def runtime(name: str, notebook: str, answer: str = "allow") -> subprocess.CompletedProcess:
        """One Colab runtime: its own /content under tmp/NAME, the same Drive; the notebook as a badge opens it."""
        root = tmp_path / name
        (root / "content").mkdir(parents=True, exist_ok=True)
        env = _env(NBHELPERS_PLATFORM_ROOT=str(root), COLAB_RELEASE_TAG="release-colab-external_20261120",
                   FAKE_DRIVE=str(drive), FAKE_DRIVE_ANSWER=answer, PYTHONPATH=pythonpath,
                   FAKE_DRIVE_LOG=str(tmp_path / "drive.log"))
        source = sources[notebook]
        return subprocess.run([sys.executable, "-m", "papermill", str(source.with_suffix(".ipynb")),
                               str(root / f"{source.stem}.out.ipynb"), "-p", "PROFILE", "smoke", "--cwd",
                               str(source.parent), "--no-progress-bar"],
                              env=env, capture_output=True, text=True, timeout=900)

    first = runtime("runtime-a", "01")
    assert first.returncode == 0, first.stderr[-3000:]
    run = drive / "MyDrive/nbhelpers/runs/smoke"
    assert (run / "tokenizer/tokenizer.json").is_file()  # on Drive, not in runtime A's /content
    out_a = (tmp_path / "runtime-a/01_tokenizer.out.ipynb").read_text(encoding="utf-8")
    assert "Mounting Google Drive" in out_a and "runtime of its own" in out_a
    assert "Pushing the last writes to Google Drive" in out_a  # its last cell waits for Drive's upload
    assert (tmp_path / "drive.log").read_text().split() == [
        "mount", str(tmp_path / "runtime-a/content/drive"), "flush_and_unmount", str(tmp_path / "runtime-a/content/drive")]

    second = runtime("runtime-b", "02")  # another runtime: sees 01's tokenizer through Drive only
    assert second.returncode == 0, second.stderr[-3000:]
    assert (run / "corpus/manifest.json").is_file()
    assert sorted(p.name for p in (tmp_path / "runtime-b/content").iterdir()) == []  # Drive pushed and unmounted

    refused = runtime("runtime-c", "02", answer="deny")
    assert refused.returncode != 0
    out_c = (tmp_path / "runtime-c/02_corpus.out.ipynb").read_text(encoding="utf-8")
    assert "RunDirError" in out_c and "is on Google Drive, which is not mounted" in out_c
    assert "allow access to Google Drive" in out_c and "RUN_DIR" in out_c


FAKE_KAGGLEHUB = '''\
"""Stands in for kagglehub: a notebook's newest output is FAKE_KAGGLEHUB/OWNER/SLUG (FAKE_KAGGLEHUB_FULL=fail:
the whole output cannot be downloaded, as with Internet off after the small file was cached)."""
import os


def notebook_output_download(handle, path=None, **kwargs):
    root = os.path.join(os.environ["FAKE_KAGGLEHUB"], handle)
    if path is None and os.environ.get("FAKE_KAGGLEHUB_FULL") == "fail":
        raise ConnectionError("Internet is off")
    return os.path.join(root, path) if path else root
'''


def test_kaggle_version_that_mounts_a_stale_output_fetches_the_newest_or_says_what_to_attach(tmp_path):
    """Version 3 of 03 mounts version 1's output (step 1) though version 2 reached step 2 (Kaggle's kernel source
    has no version): it resumes from version 2's output through kagglehub, or stops naming what to attach."""
    root = tmp_path / "kg"
    (root / "kaggle/working").mkdir(parents=True)
    (root / "kaggle/input").mkdir()
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "kagglehub.py").write_text(FAKE_KAGGLEHUB)
    hub = tmp_path / "kagglehub-outputs"
    env = _env(NBHELPERS_PLATFORM_ROOT=str(root), KAGGLE_KERNEL_RUN_TYPE="Batch",
               KAGGLE_URL_BASE="https://www.kaggle.com", FAKE_KAGGLEHUB=str(hub),
               PYTHONPATH=os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    stop_soon = [*SHORT, "--set", "train.max_minutes=0.001"]

    def said(proc: subprocess.CompletedProcess) -> str:
        """What the runner and the executed 03 printed (its cells' outputs, JSON-decoded)."""
        executed = root / "kaggle/working/runs/smoke/notebooks/03_pretrain.ipynb"
        cells = json.loads(executed.read_text(encoding="utf-8"))["cells"] if executed.is_file() else []
        outputs = [o for c in cells for o in c.get("outputs", [])]
        texts = ["".join(o.get("text", "")) + "".join(o.get("evalue", "")) for o in outputs]
        return proc.stdout + proc.stderr + "\n".join(texts)

    assert _run(["--only", "01,02"], env).returncode == 0
    _save_version(root, "nbhelpers-02-corpus")
    proc = _run(["--only", "01,02,03", *stop_soon], env)  # version 1: step 1
    assert proc.returncode == runner.EXIT_STOPPED, proc.stdout + proc.stderr
    assert "pretrain: session 1 starts from step 0 (no checkpoint yet)" in said(proc)
    _save_version(root, "nbhelpers-03-pretrain")
    proc = _run(["--only", "01,02,03", *stop_soon], env)  # version 2: reads version 1, reaches step 2
    assert proc.returncode == runner.EXIT_STOPPED, proc.stdout + proc.stderr
    assert "pretrain: resuming from step 1 of the output of session 1 of alice/nbhelpers-03-pretrain" in said(proc)
    # Kaggle keeps version 2's output as the kernel's newest; version 3 is saved with version 1's still mounted
    (hub / "alice").mkdir(parents=True)
    shutil.move(root / "kaggle/working", hub / "alice/nbhelpers-03-pretrain")
    (root / "kaggle/working").mkdir()
    sessions = [json.loads(line) for line in (hub / "alice/nbhelpers-03-pretrain/runs/smoke/pretrain/sessions.jsonl")
                .read_text(encoding="utf-8").splitlines()]
    assert sessions[-2:] == [{**sessions[-2], "session": 2, "start_step": 1},
                             {**sessions[-1], "session": 2, "end_step": 2, "status": "time_budget"}]

    refused = _run(["--only", "01,02,03", *stop_soon], {**env, "FAKE_KAGGLEHUB_FULL": "fail"})
    assert refused.returncode == 1, refused.stdout + refused.stderr
    text = said(refused)
    assert "the inputs hold step 1 (session 1), but session 2" in text and "reached step 2" in text
    assert "attach the newest version of alice/nbhelpers-03-pretrain's output" in text
    assert not (root / "kaggle/working/runs/smoke/pretrain/checkpoints/step_00000002").exists()  # nothing retrained

    shutil.rmtree(root / "kaggle/working")
    (root / "kaggle/working").mkdir()
    proc = _run(["--only", "01,02,03", *stop_soon], env)  # version 3 again, Internet on: fetches version 2's output
    assert proc.returncode == runner.EXIT_STOPPED, proc.stdout + proc.stderr
    text = said(proc)
    assert "fetched the newest output of alice/nbhelpers-03-pretrain with kagglehub" in text
    assert "pretrain: resuming from step 2 of the output of session 2" in text
    assert "pretrain: session 3 starts from the checkpoint of step 2" in text and "stopped at step 3 of 30" in text
    v3 = root / "kaggle/working/runs/smoke/pretrain"
    assert [s["session"] for s in rundir.read_sessions(v3)] == [1, 2, 3]
    assert rundir.read_sessions(v3)[-1]["start_step"] == 2
