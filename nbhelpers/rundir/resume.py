"""Resuming a training stage from an earlier Kaggle version's checkpoints, and refusing an input older than a known session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import platform
from ..files import atomic_write_text
from ..layout import CHECKPOINTS, SESSIONS_FILE, STAGE_METRICS
from .inputs import _same_run, input_runs
from .sessions import _last_step, newest_step, read_sessions
from .stages import TRAINING_STAGES, StaleResume

if TYPE_CHECKING:
    from .run import RunDir


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
    own = run.root / stage / CHECKPOINTS
    newest = newest_step(own) or 0
    holder = next((s for s in sources if newest_step(s / stage / CHECKPOINTS) == newest), None)
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
            fetched_step = newest_step(fetched / stage / CHECKPOINTS) or 0
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
    from .. import checkpoint

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
        roots = [s / stage / CHECKPOINTS for s in sources if (s / stage / CHECKPOINTS).is_dir()]
        if not roots:
            continue
        from .. import checkpoint  # imports torch: only when an input holds checkpoints

        own = folder / CHECKPOINTS
        _link_each(own, roots)
        fetched = check_resume(run, stage, sources, plat)  # StaleResume: the inputs are older than a known session
        if fetched is not None:
            sources = [*sources, fetched]
            _link_each(own, [fetched / stage / CHECKPOINTS])
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
