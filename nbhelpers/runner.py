"""Run the numbered notebooks in order with papermill, injecting the profile, run directory and overrides."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from . import config as config_mod
from . import platform
from .notebooks import discover, to_notebook
from .rundir import STAGES, RunDir, default_run_dir

NOTEBOOK_STAGE = {nb: stage for stage, (nb, _, _) in STAGES.items()}
# The exit status of `python -m nbhelpers run` when a training notebook stopped by its time budget: not a
# failure, the run continues when it is started again. 75 is EX_TEMPFAIL of BSD's sysexits.h ("temporary
# failure, the user is invited to retry"); 1 stays a failure and 0 means every notebook finished.
EXIT_STOPPED = 75


class NotebookFailed(RuntimeError):
    """A notebook raised: the message names the notebook, the failing cell and the error."""


@dataclass(frozen=True)
class StepResult:
    """What happened to one notebook."""

    name: str
    status: str  # ran | skipped | stopped (by the time budget: run again to continue)
    seconds: float
    output: Path | None
    message: str = ""


def _select(sources: list[Path], only: Sequence[str] | None) -> list[Path]:
    if not only:
        return sources
    wanted = {o.strip() for o in only if o.strip()}
    if not wanted:  # [","] or [" "]: a slip, not "every notebook"
        raise ValueError(f"--only {','.join(only)!r} names no notebook: give numbers or names, e.g. 01,02")
    chosen = [s for s in sources if s.stem[:2] in wanted or s.stem in wanted]
    known = {s.stem[:2] for s in sources} | {s.stem for s in sources}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"--only {','.join(unknown)}: no such notebook; have {', '.join(s.stem for s in sources)}")
    return chosen


def _describe_failure(name: str, err: Exception, executed: Path) -> str:
    """One readable paragraph: notebook, cell number and first source line, exception."""
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    cell = getattr(err, "cell_index", None)
    src = (getattr(err, "source", "") or "").strip().splitlines()
    where = f"cell {cell}" if cell is not None else "a cell"
    if src:
        where += f" ({src[0][:80]!r})"
    return f"{name} failed in {where}: {ename}: {evalue}\n  executed notebook with the full traceback: {executed}"


def run(
    profile: str,
    run_dir: str | Path,
    only: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    force: bool = False,
    notebooks_dir: Path | None = None,
    log: Callable[[str], None] = print,
    log_output: bool = False,
    timeout: int | None = None,
) -> list[StepResult]:
    """Execute the numbered notebooks in order; stop at the first failure with a clear message.

    A training notebook stopped by its time budget ends cleanly (its checkpoint saved): the run stops
    there, since the later notebooks need its result, and the last StepResult says "stopped".
    """
    cfg = config_mod.load(profile, overrides)  # a bad profile or override fails before anything runs
    sources = _select(discover(notebooks_dir), only)
    plat = platform.detect()
    where = Path(run_dir).expanduser() if str(run_dir) else default_run_dir(profile, plat)
    if plat.name == "colab":  # no browser here: Drive must be mounted already, and only this process pushes it
        os.environ[platform.HEADLESS_ENV] = "1"
        if platform.on_drive(where, plat) and not platform.drive_mounted(plat):
            raise platform.PlatformError(f"RUN_DIR {where} is on Google Drive, which is not mounted. "
                                         + platform.headless_drive_help(profile))
    try:
        return _run_all(profile, run_dir, sources, cfg, overrides, force, log, log_output, timeout)
    finally:
        if plat.name == "colab":
            os.environ.pop(platform.HEADLESS_ENV, None)
            platform.flush_drive(where, plat)  # the kernels leave it to this process


def _run_all(profile: str, run_dir: str | Path, sources: list[Path], cfg: Any, overrides: Sequence[str],
             force: bool, log: Callable[[str], None], log_output: bool, timeout: int | None) -> list[StepResult]:
    """`run`'s notebooks, in order (see `run`)."""

    run = RunDir.open(run_dir, cfg)
    executed_dir = run.notebooks
    if run.read_only:  # a finished run on a read-only disk can still be read (05): notebooks go elsewhere
        executed_dir = Path(tempfile.mkdtemp(prefix="nbhelpers-notebooks-"))
        log(f"{run.root} is read-only: executed notebooks go to {executed_dir}")
    executed_dir.mkdir(parents=True, exist_ok=True)
    with run.lock():  # one run per run directory: a second fails here, naming this one
        return _run_notebooks(run, sources, executed_dir, profile, overrides, force, log, log_output, timeout)


def _run_notebooks(run: RunDir, sources: list[Path], executed_dir: Path, profile: str, overrides: Sequence[str],
                   force: bool, log: Callable[[str], None], log_output: bool, timeout: int | None) -> list[StepResult]:
    """Execute `sources` in order (the body of `run`, under the run directory's lock)."""
    import papermill

    results = []
    for i, source in enumerate(sources, 1):
        name = source.stem
        stage = NOTEBOOK_STAGE.get(name)
        prefix = f"[{i}/{len(sources)}] {name}"
        if stage and not force and run.is_complete(stage):
            log(f"{prefix}: skipped, artifacts complete for this configuration (--force reruns it)")
            results.append(StepResult(name, "skipped", 0.0, None))
            continue
        log(f"{prefix}: running ...")
        start = time.perf_counter()
        executed = executed_dir / f"{name}.ipynb"
        if stage and not run.read_only:
            run.clear_stop(stage)  # a stop of an earlier session is not this one's
        with tempfile.TemporaryDirectory() as tmp:
            src_nb = Path(tmp) / f"{name}.ipynb"
            nbformat.write(to_notebook(source), src_nb)
            try:
                papermill.execute_notebook(
                    str(src_nb),
                    str(executed),
                    parameters={"PROFILE": profile, "RUN_DIR": str(run.root), "OVERRIDES": list(overrides)},
                    kernel_name="python3",
                    cwd=str(source.parent),
                    progress_bar=False,
                    log_output=log_output,
                    stdout_file=sys.stdout if log_output else None,
                    execution_timeout=timeout,
                    # the kernel's own startup warnings (TCP without encryption, on a private loopback
                    # kernel) would print once per notebook; its errors still show
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],
                )
            except Exception as err:  # papermill wraps the notebook's exception
                raise NotebookFailed(_describe_failure(name, err, executed)) from None
        seconds = time.perf_counter() - start
        stop = run.stopped(stage) if stage else None
        if stop:
            log(f"{prefix}: {stop['message'].removeprefix(name + ': ')} -> {executed}")
            results.append(StepResult(name, "stopped", seconds, executed, stop["message"]))
            break  # the later notebooks need this stage's result
        log(f"{prefix}: done in {seconds:.0f}s -> {executed}")
        results.append(StepResult(name, "ran", seconds, executed))
    return results
