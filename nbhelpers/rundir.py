"""The run directory: where each stage reads the previous stage's artifacts and writes its own.

Also where a run directory is when RUN_DIR is empty (the platform's default), and how, on Kaggle, the
outputs of earlier notebooks and of earlier versions of this one (attached as inputs, read-only under
/kaggle/input) join this version's run directory in /kaggle/working:

- a stage another notebook finished (its files and metrics.json entry) is linked as a whole folder;
- a training stage (03, 04) that an earlier version of its notebook stopped by the time budget is
  resumed: the input's complete checkpoints are linked one by one into this run's `checkpoints/`
  (read in place, never copied: a `seed_1b` checkpoint is 9.3 GB of the 20 GB output) and its
  `metrics.jsonl` is copied (small), so the loop finds the newest checkpoint where it always looks and
  carries the metrics history on. New checkpoints are written here; the links are removed once a newer
  checkpoint of this version exists, so the version's output holds only its own.

How a version's output becomes the next version's input (Kaggle's docs: notebook outputs can be added
as a notebook's data sources; the Kaggle CLI's `kernels push` sends `kernel_sources` as the kernel's
`kernel_data_sources`): the generated kernel metadata of 03 and 04 names the kernel itself among its
`kernel_sources`, so each saved version reads the previous version's output. Outputs are found at any
depth up to INPUT_DEPTH under /kaggle/input, which covers the layout of 2025 onwards
(/kaggle/input/notebooks/OWNER/SLUG/..., /kaggle/input/datasets/OWNER/SLUG/...) and the older
/kaggle/input/SLUG/...: a Kaggle dataset made from an output works the same way.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import platform
from .config import RunConfig
from .files import atomic_write_text, read_json, write_text_if_changed
from .layout import CONFIG_FILE, RUN_METRICS, SESSIONS_FILE, STAGE_METRICS, STATE_FILE, STEP_PREFIX, XLA_CACHE, step_dir

# Stage name -> (notebook, config sections its output depends on, files that must exist when done).
STAGES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "tokenizer": ("01_tokenizer", ("tokenizer", "corpus"), ("tokenizer/tokenizer.json", "tokenizer/spm.model")),
    "corpus": ("02_corpus", ("tokenizer", "corpus", "model"), ("corpus/manifest.json",)),
    "pretrain": ("03_pretrain", ("tokenizer", "corpus", "model", "train"), ("pretrain/final/config.json",)),
    "sft": ("04_instruction_tuning", ("tokenizer", "corpus", "model", "train", "sft"), ("sft/final/config.json",)),
    "chat": ("05_chat", ("tokenizer", "corpus", "model", "train", "sft"), ()),
    "eval": ("06_eval", ("tokenizer", "corpus", "model", "train", "sft", "eval"), ("eval/results.json",)),
}
TRAINING_STAGES = ("pretrain", "sft")  # the stages that checkpoint and resume (03, 04)
IDENTITY = ("tokenizer", "corpus", "model")  # sections that make an input's checkpoints this run's
CONFIG_SUM = "config.json.sha256"  # `sha256sum -c` format: what nbhelpers last wrote to config.json (a hand edit shows)
LOCK_FILE = "run.lock"  # the run holding this run directory: pid, host, since (one run per run directory)
LOCK_BEAT_S = 60.0  # the holder touches its lock this often
LOCK_STALE_S = 600.0  # a lock of another host untouched this long is a run that is gone (a Colab runtime ended)
STOP_FILE = "stopped.json"  # in a stage folder: the stage stopped by its time budget, to be continued
INPUT_DEPTH = 6  # /kaggle/input/notebooks/OWNER/SLUG/runs/NAME is 5 levels down; a dataset may add one


class StageMissing(RuntimeError):
    """A stage's input is absent: the message names the notebook to run first."""


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked: one line saying what is wrong and what to do."""


class RunDirBusy(RunDirError):
    """Another run holds the run directory's lock: the message names its pid, host and start."""


def config_diff(theirs: dict[str, Any], ours: dict[str, Any], sections: tuple[str, ...] | None = None) -> list[str]:
    """`section.field=THEIRS there, OURS here` for every setting (of `sections`, all when None) that differs."""
    theirs, ours = json.loads(json.dumps(theirs)), json.loads(json.dumps(ours))  # tuples and lists alike
    out = []
    for section in sections or sorted(set(theirs) | set(ours)):
        a, b = theirs.get(section), ours.get(section)
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                out.append(f"{section}={json.dumps(a, ensure_ascii=False)} there, {json.dumps(b, ensure_ascii=False)} here")
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{section}.{key}={json.dumps(a.get(key), ensure_ascii=False)} there, "
                           f"{json.dumps(b.get(key), ensure_ascii=False)} here")
    return out


# ---------------------------------------------------------------- where the run directory is


_drive_asked = False  # Colab asks for Drive once per process: the setup cell, or the first RunDir.open


def default_run_dir(profile: str, plat: platform.Platform | None = None) -> Path:
    """The run directory for RUN_DIR = "": Kaggle's working dir, Google Drive on Colab, runs/ locally."""
    return (plat or platform.detect()).runs_root / profile


def _on_drive(path: Path, plat: platform.Platform) -> bool:
    drives = {platform.COLAB_DRIVE, plat.path(platform.COLAB_DRIVE)}
    return path.is_absolute() and any(d in (path, *path.parents) for d in drives)


def resolve_run_dir(run_dir: str | os.PathLike, profile: str, plat: platform.Platform | None = None) -> Path:
    """RUN_DIR as given, or the platform default for ""; on Colab a run dir on Drive needs Drive mounted.

    Colab's default is on Drive because each notebook opened from its badge gets a runtime of its own
    and only Drive is shared between them: without Drive the error says what to do instead.
    """
    global _drive_asked
    plat = plat or platform.detect()
    path = default_run_dir(profile, plat) if not str(run_dir) else Path(run_dir).expanduser()
    if plat.name == "colab" and _on_drive(path, plat) and not platform.drive_mounted(plat):
        if not _drive_asked:
            _drive_asked = True
            platform.mount_drive(plat)
        if not platform.drive_mounted(plat):
            raise RunDirError(f"RUN_DIR {path} is on Google Drive, which is not mounted. {platform.DRIVE_WHY} "
                              + platform.drive_help(profile))
    return path


def _prepare(root: Path) -> bool:
    """Create `root` when missing; True when it is writable. One clear RunDirError for what cannot work."""
    if root.exists() and not root.is_dir():
        raise RunDirError(f"RUN_DIR {root} is a file, not a folder: choose another RUN_DIR or move the file away")
    blocker = next((p for p in root.parents if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        raise RunDirError(f"RUN_DIR {root} lies under {blocker}, which is a file: no folder can be made there; "
                          "choose another RUN_DIR")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = "read-only file system" if err.errno == errno.EROFS else (err.strerror or str(err))
        raise RunDirError(f"RUN_DIR {root} cannot be created ({why} at {err.filename or blocker}): choose a "
                          "writable RUN_DIR") from None
    return os.access(root, os.W_OK)  # False on a read-only mount, also for root


# ---------------------------------------------------------------- Kaggle's inputs


def _walk_dirs(top: Path, depth: int) -> Iterator[Path]:
    """Folders under `top`, at most `depth` levels down, without following symlinks or entering hidden ones."""
    level = [top]
    for _ in range(depth):
        nxt = []
        for folder in level:
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                        nxt.append(Path(entry.path))
        yield from sorted(nxt)
        level = [p for p in nxt if not _is_run(p)]  # a run's own folders hold no other run


def _is_run(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / RUN_METRICS).is_file()


def input_runs(name: str, plat: platform.Platform | None = None) -> list[Path]:
    """Run directories called `name` (config.json or metrics.json inside) among Kaggle's inputs, in path order."""
    plat = plat or platform.detect()
    inputs = plat.inputs
    if inputs is None or not inputs.is_dir():
        return []
    return [p for p in _walk_dirs(inputs, INPUT_DEPTH) if p.name == name and _is_run(p)]


def _same_run(source: Path, config: RunConfig) -> bool:
    """True when the run in `source` was made with this run's tokenizer, corpus and model configuration."""
    try:
        theirs = config_mod.from_dict(read_json(source / CONFIG_FILE))
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return theirs.fingerprint(*IDENTITY) == config.fingerprint(*IDENTITY)


def link_inputs(run: RunDir, plat: platform.Platform | None = None) -> list[str]:
    """Link the stage folders that earlier notebooks finished in their outputs into `run`, and merge their metrics entries.

    Symlinks, not copies: a 776M model's checkpoints would otherwise count twice against the 20 GB
    output limit. Returns the stage names it linked. Stages already present are left alone.
    """
    linked: list[str] = []
    metrics = run.metrics()
    ours = run.config.to_dict()
    for source in input_runs(run.root.name, plat):
        theirs = read_json(source / RUN_METRICS) if (source / RUN_METRICS).is_file() else {}
        their_config = _input_config(source)
        for stage, (notebook, sections, files) in STAGES.items():
            if stage in metrics or stage not in theirs:
                continue
            folders = {Path(f).parts[0] for f in files}
            if not folders or not all((source / f).exists() for f in files):
                continue
            if any((run.root / f).exists() and not (run.root / f).is_symlink() for f in folders):
                continue  # this run has its own (partial) folder: never mix the two
            # linked, a stage of other settings would be redone here, inside the read-only input (EROFS): check first
            differ = config_diff(their_config, ours, sections) if their_config is not None else []
            made_with = theirs[stage].get("config_fingerprint") if isinstance(theirs[stage], dict) else None
            if not differ and made_with and made_with != run.config.fingerprint(*sections):
                differ = [f"its metrics.json records configuration {made_with} for {stage}, this run's is "
                          f"{run.config.fingerprint(*sections)} (settings of another nbhelpers version?)"]
            if differ:
                print(f"{stage}: not linked from {source}: that run of the same name was made with other settings "
                      f"({'; '.join(differ[:6])}{' …' if len(differ) > 6 else ''}). {notebook} makes it here "
                      "instead. To reuse the input's, run with its settings (--set / OVERRIDES); to keep both, "
                      "give this run another name (RUN_DIR)")
                continue
            for folder in folders:
                target = run.root / folder
                if not target.exists() and not target.is_symlink():
                    target.symlink_to(source / folder, target_is_directory=True)
            metrics[stage] = theirs[stage]
            linked.append(stage)
    if linked:
        atomic_write_text(run.metrics_path, json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    return linked


def _input_config(source: Path) -> dict[str, Any] | None:
    """The configuration an input run recorded (config.json), defaults filled in, or None when it has none that reads."""
    try:
        data = read_json(source / CONFIG_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:  # a field added since then counts with its default, as it does for the fingerprints
        return config_mod.from_dict(data).to_dict()
    except (ValueError, TypeError, KeyError):
        return data  # a field since removed or renamed: compared as written


def _last_step(metrics_file: Path) -> int:
    """The highest step a metrics.jsonl records, -1 when there is none."""
    last = -1
    with contextlib.suppress(OSError):
        for line in metrics_file.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                last = max(last, int(json.loads(line).get("step", -1)))
    return last


_STEP_DIR = re.compile(rf"^{STEP_PREFIX}(\d+)$")  # read here without importing torch (checkpoint does)


def newest_step(checkpoints: Path) -> int | None:
    """The highest step of a committed checkpoint (a step_N folder with its state.json) under `checkpoints`."""
    steps = [int(m.group(1)) for p in (checkpoints.iterdir() if checkpoints.is_dir() else [])
             if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(steps, default=None)


def read_sessions(stage_dir: Path) -> list[dict[str, Any]]:
    """The sessions a stage folder records, oldest first: each start line merged with its end line."""
    merged: dict[int, dict[str, Any]] = {}
    with contextlib.suppress(OSError):
        for line in (stage_dir / SESSIONS_FILE).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                record = json.loads(line)
                merged.setdefault(int(record["session"]), {}).update(record)
    return [merged[k] for k in sorted(merged)]


def _tokens_at(metrics_file: Path, step: int) -> int | None:
    """The tokens a metrics.jsonl records at the last train record up to `step`."""
    tokens = None
    with contextlib.suppress(OSError):
        for line in metrics_file.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
                r = json.loads(line)
                if r.get("kind") == "train" and int(r["step"]) <= step and r.get("tokens") is not None:
                    tokens = int(r["tokens"])
    return tokens


def _append_session(folder: Path, record: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    old = (folder / SESSIONS_FILE).read_text(encoding="utf-8") if (folder / SESSIONS_FILE).is_file() else ""
    atomic_write_text(folder / SESSIONS_FILE, old + json.dumps(record, ensure_ascii=False) + "\n")


def begin_session(run: RunDir, stage: str) -> dict[str, Any]:
    """Record (and print) where this session of `stage` starts: its counter, step and tokens, and from where."""
    folder = run.root / stage
    ckpts = folder / "checkpoints"
    step = newest_step(ckpts) or 0
    newest = ckpts / step_dir(step)
    source = str(Path(os.readlink(newest)).parent.parent.parent) if newest.is_symlink() else "this run directory"
    sessions = read_sessions(folder)
    record = {"session": (int(sessions[-1]["session"]) + 1) if sessions else 1, "start_step": step,
              "start_tokens": _tokens_at(folder / STAGE_METRICS, step) or 0, "source": source if step else "",
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "platform": platform.detect().name}
    if not run.read_only:
        _append_session(folder, record)
    where = f"the checkpoint of step {step} in {source}" if step else "step 0 (no checkpoint yet)"
    print(f"{stage}: session {record['session']} starts from {where}")
    return record


def end_session(run: RunDir, stage: str, session: dict[str, Any], step: int, status: str) -> None:
    """Record where this session of `stage` ended (step, tokens, why)."""
    if run.read_only:
        return
    folder = run.root / stage
    _append_session(folder, {"session": session["session"], "end_step": step,
                             "end_tokens": _tokens_at(folder / STAGE_METRICS, step), "status": status,
                             "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


class StaleResume(RunDirError):
    """The inputs hold an older output of this run than a session is known to have written: says what to attach."""


def _kernel_handle(source: Path, plat: platform.Platform) -> tuple[str, Path] | None:
    """("OWNER/SLUG", the run's path inside that notebook's output) for an input under notebooks/OWNER/SLUG."""
    inputs = plat.inputs
    try:
        parts = source.relative_to(inputs).parts if inputs else ()
    except ValueError:
        return None
    if len(parts) >= 4 and parts[0] == "notebooks":
        return f"{parts[1]}/{parts[2]}", Path(*parts[3:])
    return None


def _kagglehub() -> Any:
    """kagglehub (on Kaggle's images), or None where it is not installed."""
    try:
        import kagglehub
    except ImportError:
        return None
    return kagglehub


def _newest_output(handle: str, inside: Path, stage: str) -> tuple[list[dict[str, Any]], Any]:
    """(sessions recorded in the newest version's output of `handle`, kagglehub) via kagglehub; ([], None) if unknown."""
    hub = _kagglehub()
    if hub is None:
        return [], None
    try:
        # force_download: a copy cached by an earlier call in this session may predate the newest version
        path = Path(hub.notebook_output_download(handle, path=str(inside / stage / SESSIONS_FILE), force_download=True))
    except Exception as err:  # no Internet, no such file in the newest version, an API change: unknown, not fatal
        print(f"{stage}: could not ask Kaggle for the newest output of {handle} ({type(err).__name__}: {err})")
        return [], hub
    return read_sessions(path.parent) if path.name == SESSIONS_FILE else read_sessions(path), hub


def _attach_hint(handle: str | None, stage: str) -> str:
    slug = handle or "this notebook"
    return (f"attach the newest version of {slug}'s output: in the editor's Input panel open {slug}, choose its "
            f"newest version (or remove the input and add it again: Add Input -> Your Work -> Notebooks -> "
            f"{slug.split('/')[-1]}), then save a new version; or turn Internet on so this notebook fetches it "
            f"(kagglehub). The {stage} stage stopped here instead of training the same steps again.")


def check_resume(run: RunDir, stage: str, sources: list[Path], plat: platform.Platform) -> Path | None:
    """Fail (StaleResume) or fetch the newest output when the inputs are older than a recorded session reached.

    Kaggle mounts an `owner/slug` kernel source without a version; nothing guarantees it is the newest. Known
    sessions come from the inputs, this run directory and (kagglehub) the kernel's newest output. The inputs are
    stale when a known session reached a step beyond the newest checkpoint here, or started from that checkpoint
    although the newest checkpoint's own output does not record it. Returns a fetched output's run folder.
    """
    own = run.root / stage / "checkpoints"
    newest = newest_step(own) or 0
    holder = next((s for s in sources if newest_step(s / stage / "checkpoints") == newest), None)
    holder_sessions = read_sessions(holder / stage) if holder is not None else read_sessions(run.root / stage)
    last_here = int(holder_sessions[-1]["session"]) if holder_sessions else 0
    # (where, record, recorded elsewhere): a session this run directory recorded that left no newer checkpoint here
    # crashed before its first save; only another output's session shows that this checkpoint was already resumed
    known = [(str(s), r, True) for s in sources for r in read_sessions(s / stage)]
    known += [("this run directory", r, False) for r in read_sessions(run.root / stage)]
    # the kernel that trains this stage: an input holding the stage (02's output, also an input, holds none)
    handle = next((h for s in sources if (s / stage).is_dir() and (h := _kernel_handle(s, plat))), None)
    hub = None
    if handle is not None:
        newest_sessions, hub = _newest_output(handle[0], handle[1], stage)
        known += [(f"the newest output of {handle[0]} (kagglehub)", r, True) for r in newest_sessions]

    def ahead(r: dict[str, Any], elsewhere: bool) -> bool:
        reached = max(int(r.get("end_step") or 0), int(r.get("start_step") or 0))
        resumed_here = int(r["session"]) > last_here and int(r.get("start_step") or 0) >= newest > 0
        return reached > newest or (elsewhere and resumed_here)

    stale = [(where, r) for where, r, elsewhere in known if ahead(r, elsewhere)]
    if not stale:
        return None
    where, record = max(stale, key=lambda x: int(x[1]["session"]))
    reached = max(int(record.get("end_step") or 0), int(record.get("start_step") or 0))
    problem = (f"{stage}: the inputs hold step {newest} (session {last_here}), but session {record['session']} "
               f"(recorded in {where}) started from step {record.get('start_step')} and reached step {reached}: "
               "this version mounted an older output of the notebook")
    if hub is not None and handle is not None:
        try:
            fetched = Path(hub.notebook_output_download(handle[0])) / handle[1]
        except Exception as err:  # any failure leads to the message saying what to attach
            print(f"{problem}; fetching the newest output failed ({type(err).__name__}: {err})")
        else:
            fetched_step = newest_step(fetched / stage / "checkpoints") or 0
            if fetched_step > newest:
                print(f"{problem}; fetched the newest output of {handle[0]} with kagglehub: {fetched}")
                return fetched
            # the newest output holds no newer checkpoint (its session ended before a save): nothing better exists
            print(f"{problem}; the newest output of {handle[0]} holds no newer checkpoint (step {fetched_step}), "
                  f"so this session resumes from step {newest}")
            return None
    raise StaleResume(f"{problem}. To continue from step {reached}, {_attach_hint(handle and handle[0], stage)}")


def _link_each(own: Path, roots: list[Path]) -> None:
    """Link every complete checkpoint under `roots` into `own`, unless one of that step is there already."""
    from . import checkpoint

    for root in roots:
        for ckpt in checkpoint.list_checkpoints(root):
            target = own / ckpt.name
            if not target.exists() and not target.is_symlink():
                own.mkdir(parents=True, exist_ok=True)
                target.symlink_to(ckpt, target_is_directory=True)


def link_checkpoints(run: RunDir, plat: platform.Platform | None = None) -> dict[str, Path]:
    """Resume training stages from checkpoints this run left in Kaggle's inputs; {stage: newest linked checkpoint}.

    Each complete checkpoint of an input that holds this run (same name, same tokenizer, corpus and model
    configuration) is linked into `STAGE/checkpoints/` unless one of that step is already there; when
    the newest checkpoint is now an input's, its metrics.jsonl replaces a shorter local history.
    """
    plat = plat or platform.detect()
    sources = [s for s in input_runs(run.root.name, plat) if _same_run(s, run.config)]
    resumed: dict[str, Path] = {}
    for stage in TRAINING_STAGES:
        folder = run.root / stage
        if folder.is_symlink() or stage in run.metrics():
            continue  # finished: linked whole, or done here
        roots = [s / stage / "checkpoints" for s in sources if (s / stage / "checkpoints").is_dir()]
        if not roots:
            continue
        from . import checkpoint  # imports torch: only when an input holds checkpoints

        own = folder / "checkpoints"
        _link_each(own, roots)
        fetched = check_resume(run, stage, sources, plat)  # StaleResume: the inputs are older than a known session
        if fetched is not None:
            sources = [*sources, fetched]
            _link_each(own, [fetched / stage / "checkpoints"])
        newest = checkpoint.latest(own)
        if newest is None or not newest.is_symlink():
            continue
        source_stage = Path(os.readlink(newest)).parent.parent
        step = int(checkpoint.read_state(newest)["step"])
        local = folder / STAGE_METRICS
        if (source_stage / STAGE_METRICS).is_file() and _last_step(local) < step:
            atomic_write_text(local, (source_stage / STAGE_METRICS).read_text(encoding="utf-8"))
        theirs = read_sessions(source_stage)
        if len(theirs) > len(read_sessions(folder)) and (source_stage / SESSIONS_FILE).is_file():
            atomic_write_text(folder / SESSIONS_FILE, (source_stage / SESSIONS_FILE).read_text(encoding="utf-8"))
        resumed[stage] = newest
        handle = _kernel_handle(source_stage.parent, plat)
        version = (f"the output of session {theirs[-1]['session']}" if theirs else "an output") + (
            f" of {handle[0]}" if handle else "")
        print(f"{stage}: resuming from step {step} of {version} at {source_stage.parent} (an input, read in place; new "
              f"checkpoints go to {own})")
    return resumed




def _xla_host() -> bool:
    """True where torch_xla is installed (Kaggle's TPU image), the only place the XLA cache is read."""
    return importlib.util.find_spec("torch_xla") is not None


def carry_xla_cache(run: RunDir, plat: platform.Platform | None = None) -> Path | None:
    """Copy the XLA compilation cache an earlier version of this run left in Kaggle's inputs into `run`.

    A copy, not a link: torch_xla adds entries to the folder, and an input is read-only. Only on a host with
    torch_xla (a CPU or GPU kernel would only add the programs to its 20 GB of output) and only when this run has
    no cache of its own yet; the newest input's (by modification time) when several hold one. Returns the source.
    """
    own = run.root / XLA_CACHE
    if not _xla_host() or own.exists() or own.is_symlink():
        return None
    plat = plat or platform.detect()
    caches = [s / XLA_CACHE for s in input_runs(run.root.name, plat)
              if _same_run(s, run.config) and (s / XLA_CACHE).is_dir()]
    if not caches:
        return None
    source = max(caches, key=lambda c: c.stat().st_mtime)
    partial = run.root / f".tmp-{XLA_CACHE}"
    shutil.rmtree(partial, ignore_errors=True)  # a copy cut short by an earlier session's end
    shutil.copytree(source, partial, symlinks=False)
    partial.rename(own)
    size = sum(f.stat().st_size for f in own.rglob("*") if f.is_file())
    print(f"{XLA_CACHE}: {size / 2**20:,.0f} MiB of compiled programs copied from {source.parent} (not compiled again)")
    return source


# ---------------------------------------------------------------- one run per run directory


def _lock_holder(path: Path) -> dict[str, Any]:
    """What a lock file says about its holder ({} when it is unreadable: a holder still writing it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _stale_because(path: Path, holder: dict[str, Any]) -> str | None:
    """Why a lock's holder is gone, or None while it may still run."""
    try:
        idle = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "it was released"
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return None if _pid_alive(holder["pid"]) else f"process {holder['pid']} on this host has ended"
    if idle > LOCK_STALE_S:
        return f"untouched for {idle / 60:.0f} minutes (its holder touches it every {LOCK_BEAT_S:.0f} s)"
    return None


def _take_lock(path: Path) -> None:
    """Create the lock file exclusively; recover it from a holder that is gone; RunDirBusy otherwise."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _lock_holder(path)
            why = _stale_because(path, holder)
            if why is None:
                raise RunDirBusy(
                    f"{path.parent} is in use by another run (process {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')}, since {holder.get('since', '?')}; lock file {path}): one run per run "
                    "directory. Wait for it to finish, or stop it; if it is gone (its machine ended), delete the lock "
                    "file") from None
            print(f"{path}: taking over the lock of process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                  f"({why})")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        return
    raise RunDirBusy(f"{path}: could not take the run directory's lock (another run keeps taking it)")


# ---------------------------------------------------------------- the run directory


def _check_profile(root: Path, profile: str) -> None:
    """Refuse a run directory whose config.json records another profile: its artifacts belong to that run."""
    recorded_file = root / CONFIG_FILE
    if not recorded_file.is_file():
        return
    try:
        recorded = read_json(recorded_file).get("profile")
    except (OSError, ValueError, AttributeError) as err:
        raise RunDirError(f"{recorded_file}: cannot read the recorded configuration ({err}); "
                          "fix or delete the file, or use another RUN_DIR") from err
    if recorded and recorded != profile:
        raise RunDirError(
            f"{root} holds a run made with profile {recorded!r} ({recorded_file}), not {profile!r}: set "
            f"PROFILE = \"{recorded}\" (--profile {recorded}) to continue it, or another RUN_DIR for a "
            f"{profile} run; PROFILE = \"auto\" chose {profile!r} for this machine if you did not name it")


@dataclass(frozen=True)
class RunDir:
    """Paths and bookkeeping of one run directory."""

    root: Path
    config: RunConfig
    read_only: bool = False  # opened to read a finished run where nothing can be written (05 works there)

    @classmethod
    def open(cls, root: str | os.PathLike, config: RunConfig) -> RunDir:
        """Create the directory if needed; on Kaggle join the inputs; record the configuration of a new run.

        config.json is written when the run has none; afterwards a stage that completes records the
        configuration it was made with (`record`). So a failed invocation never changes it, a file that is
        already right is never rewritten, and a read-only finished run opens for reading.
        """
        plat = platform.detect()
        path = resolve_run_dir(root, config.profile, plat)  # "": Kaggle working dir, Drive, runs/
        writable = _prepare(path)
        run = cls(path.resolve(), config, read_only=not writable)
        _check_profile(run.root, config.profile)
        if run.read_only:
            print(f"{run.root} is read-only: its artifacts are read, nothing is written there")
            return run
        if plat.name == "kaggle":
            link_inputs(run, plat)  # earlier notebooks' outputs (kernel_sources)
            link_checkpoints(run, plat)  # earlier versions of a training notebook stopped by the time budget
            carry_xla_cache(run, plat)  # and the programs they compiled on the TPU
        if not (run.root / CONFIG_FILE).exists():
            run._write_config()
        else:
            run.check_config_file()
        return run

    def _write_config(self) -> None:
        text = json.dumps(self.config.to_dict(), indent=2, ensure_ascii=False)
        write_text_if_changed(self.root / CONFIG_FILE, text)
        write_text_if_changed(self.root / CONFIG_SUM, f"{hashlib.sha256(text.encode()).hexdigest()}  {CONFIG_FILE}\n")

    def check_config_file(self) -> None:
        """RunDirError when config.json was edited by hand (it differs from config.json.sha256) in a way this run's
        settings do not share: the run would overwrite the edit, so it names the keys and what to do instead."""
        path, record = self.root / CONFIG_FILE, self.root / CONFIG_SUM
        if not record.is_file():
            return  # a run dir of an earlier nbhelpers: the record comes with the next finished stage
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == record.read_text(encoding="utf-8").split(" ")[0].strip():
            return
        try:
            differ = config_diff(json.loads(data), self.config.to_dict())
        except ValueError as err:
            differ = [f"the file is not valid JSON ({err})"]
        if not differ:
            self._write_config()  # edited to exactly this run's settings: nothing would be lost
            return
        raise RunDirError(
            f"{path} was edited by hand (it no longer matches {CONFIG_SUM}): {'; '.join(differ)} (there: the file, "
            "here: this run's --profile and --set). The settings come from --profile and --set (a notebook's PROFILE "
            "and OVERRIDES), never from config.json, which the next finished stage overwrites: pass the edit as "
            "--set KEY=VALUE, then delete config.json (it is written again); or delete it to drop the edit")

    @contextlib.contextmanager
    def lock(self) -> Iterator[Path]:
        """Hold the run directory for this process (one run per run dir): RunDirBusy names the holder otherwise.

        The lock file names its holder's pid and host; it is recovered when the holder is gone (a dead pid on this
        host, or a lock of another host untouched for LOCK_STALE_S: the holder touches it every LOCK_BEAT_S).
        """
        if self.read_only:
            yield self.root / LOCK_FILE
            return
        path = self.root / LOCK_FILE
        _take_lock(path)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(LOCK_BEAT_S):
                with contextlib.suppress(OSError):
                    os.utime(path)

        thread = threading.Thread(target=beat, name="nbhelpers-run-lock", daemon=True)
        thread.start()
        try:
            yield path
        finally:
            stop.set()
            thread.join()
            holder = _lock_holder(path)
            if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():  # still ours
                path.unlink(missing_ok=True)

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def metrics_path(self) -> Path:
        return self.root / RUN_METRICS

    def metrics(self) -> dict[str, Any]:
        """All stages' headline figures so far."""
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def require_writable(self, stage: str) -> None:
        """Fail before any work when `stage` would have to write into a read-only run directory."""
        if self.read_only:
            notebook = STAGES[stage][0]
            raise RunDirError(f"{notebook} writes {self.root / stage} and metrics.json, but {self.root} is "
                              f"read-only: copy the run to a writable folder (cp -r {self.root} NEW) and set "
                              "RUN_DIR to it (on Kaggle, RUN_DIR = \"\" links a finished run from the inputs into "
                              "/kaggle/working)")

    def record(self, stage: str, figures: dict[str, Any]) -> dict[str, Any]:
        """Store a stage's headline figures in metrics.json, mark the stage complete, record its configuration."""
        if stage not in STAGES:
            raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
        sections = STAGES[stage][1]
        entry = {**figures, "config_fingerprint": self.config.fingerprint(*sections)}
        if self.read_only:
            if STAGES[stage][2]:  # a stage with artifacts cannot have made them here
                self.require_writable(stage)
            print(f"{stage}: figures shown, not recorded ({self.root} is read-only)")
            return entry
        data = self.metrics()
        data[stage] = entry
        atomic_write_text(self.metrics_path, json.dumps(data, indent=2, ensure_ascii=False, default=str))
        self._write_config()  # the configuration the run's newest finished stage was made with
        if stage in TRAINING_STAGES:
            self.clear_stop(stage)
            self.unlink_inputs(stage)
        self._end_session()
        return data[stage]

    def _end_session(self) -> None:
        """After a notebook's last write: on Colab, wait until Drive holds it (it unmounts; a later open remounts)."""
        global _drive_asked
        if platform.flush_drive(self.root):
            _drive_asked = False

    # ------------------------------------------------------------ a stage stopped by its time budget

    def stop(self, stage: str, step: int, total_steps: int, reason: str = "time budget") -> str:
        """Record that `stage` stopped at `step` of `total_steps` (its checkpoint saved); return what to do next.

        The notebook's cells succeed (papermill exits 0); `python -m nbhelpers run` reads this record and
        exits with EXIT_STOPPED instead of running the later notebooks.
        """
        plat = platform.detect()
        notebook = STAGES[stage][0]
        message = (f"{notebook}: stopped at step {step} of {total_steps} ({reason}; checkpoint saved): "
                   f"{continue_hint(plat)}")
        if not self.read_only:
            self.unlink_inputs(stage)
            atomic_write_text(self.root / stage / STOP_FILE, json.dumps(
                {"stage": stage, "step": step, "total_steps": total_steps, "reason": reason, "message": message},
                indent=1, ensure_ascii=False))
            self._end_session()  # the checkpoint of the session's last minutes, on Drive before the runtime ends
        return message

    def clear_stop(self, stage: str) -> None:
        """Forget an earlier session's stop of `stage` (not in a finished stage linked read-only from an input)."""
        if not (self.root / stage).is_symlink():
            (self.root / stage / STOP_FILE).unlink(missing_ok=True)

    def stopped(self, stage: str) -> dict[str, Any] | None:
        """The stop record of `stage` (see `stop`), or None when it did not stop early."""
        path = self.root / stage / STOP_FILE
        return read_json(path) if path.is_file() else None

    def unlink_inputs(self, stage: str) -> list[str]:
        """Remove links to an input's checkpoints once this run has a newer checkpoint of its own.

        The version's output then holds only what it wrote (whatever Kaggle does with symlinks when it
        saves an output), and the next version links this version's checkpoints instead.
        """
        own = self.root / stage / "checkpoints"
        if not own.is_dir() or (self.root / stage).is_symlink():
            return []
        from . import checkpoint

        mine = [p for p in checkpoint.list_checkpoints(own) if not p.is_symlink()]
        if not mine:
            return []
        removed = []
        for link in sorted(own.iterdir()):
            if link.is_symlink() and (not link.name.startswith(checkpoint.PREFIX) or link.name < mine[-1].name):
                link.unlink()  # the link only: the input itself is read-only and never touched
                removed.append(link.name)
        return removed

    def is_complete(self, stage: str) -> bool:
        """True when the stage recorded its figures for this configuration and its files exist."""
        notebook, sections, files = STAGES[stage]
        entry = self.metrics().get(stage)
        if not entry or entry.get("config_fingerprint") != self.config.fingerprint(*sections):
            return False
        return all((self.root / f).exists() for f in files)

    def require(self, stage: str) -> None:
        """Fail with the notebook to run first when `stage` has not produced its artifacts, or made them from
        other inputs than the run holds now (provenance.check: tokenizer, corpus settings, model)."""
        notebook, _, files = STAGES[stage]
        missing = [f for f in files if not (self.root / f).exists()]
        if missing or stage not in self.metrics():
            what = ", ".join(missing) if missing else f"the {stage} entry of metrics.json"
            raise StageMissing(f"{self.root}: {what} not found; run notebooks/{notebook} first")
        from . import provenance  # here: it reads tokenizers, which the runner process never needs

        provenance.check(self, stage)


def continue_hint(plat: platform.Platform | None = None) -> str:
    """How the user continues a stage stopped by the session's time budget, on this platform."""
    plat = plat or platform.detect()
    if plat.name == "kaggle":
        return ("run the notebook again / save a new version to continue (Save Version, or `kaggle kernels push`: "
                "the new version reads this version's output and resumes from its checkpoint)")
    if plat.name == "colab":
        return ("run the notebook again / save a new version to continue (in a new runtime: the checkpoint is on "
                "Drive and the notebook resumes from it)")
    return "run the notebook again / save a new version to continue (it resumes from the checkpoint)"
