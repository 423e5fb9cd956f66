"""`python -m nbhelpers doctor`: what this session is, checked before quota is spent, as text for a bug report.

Each line is one finding with a verdict (ok, info, warn, fail) and, where something is off, what to do. The
setup cell ends with `short()`: one summary line and the findings that are not ok. The full report (`report`)
adds the hub's reachability (a short timeout). On Kaggle it runs on a CPU kernel too, at no accelerator cost.
Nothing here initialises CUDA or imports torch_xla: GPU memory comes from nvidia-smi, versions from metadata.
"""

from __future__ import annotations

import os
import platform as pyplatform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import platform, quota, rundir
from .files import read_json
from .layout import CHECKPOINTS, RUN_METRICS
from .platform import Platform

VERDICTS = ("ok", "info", "warn", "fail")
HUB_TIMEOUT_S = 3.0
LOW_DISK_BYTES = 5 * 10**9  # below this a checkpoint of the 776M model (9.3 GB) no longer fits
GB = 1e9


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    name: str
    verdict: str  # ok | info | warn | fail
    detail: str
    todo: str = ""  # what to do, where the verdict is warn or fail

    def line(self) -> str:
        """The finding as plain text: `[warn] name   detail` and an indented `-> todo`."""
        text = f"[{self.verdict:>4}] {self.name:<12} {self.detail}"
        return text + (f"\n{'':20}-> {self.todo}" if self.todo else "")


def _python_torch(plat: Platform) -> Finding:
    torch_v = platform._version("torch")
    xla_v = platform._version("torch_xla") or platform._version("torch-xla")
    detail = f"Python {sys.version.split()[0]}, torch {torch_v or 'absent'}" + (f", torch_xla {xla_v}" if xla_v else "")
    if torch_v is None:
        return Finding("python/torch", "fail", detail, "install torch (Kaggle and Colab images have it; locally: "
                       "pip install torch) before the package")
    problem = platform.check_torch_xla(torch_v, xla_v)
    if problem:
        return Finding("python/torch", "fail" if plat.accelerator == "tpu" else "warn", detail, problem)
    if plat.accelerator == "tpu" and not xla_v:
        return Finding("python/torch", "fail", detail, "a TPU without torch_xla: use Kaggle's TPU image (Settings -> "
                       "Accelerator -> TPU VM v5e-8) rather than installing torch_xla yourself")
    return Finding("python/torch", "ok", detail)


def _nvidia_smi() -> list[str]:
    """'name, memory' per GPU from nvidia-smi (no CUDA context in this process), [] when there is none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def _accelerator(plat: Platform) -> Finding:
    how = {"kaggle": "Settings -> Accelerator", "colab": "Runtime -> Change runtime type"}.get(plat.name, "")
    if plat.accelerator == "gpu":
        gpus = _nvidia_smi()
        if not gpus:
            return Finding("accelerator", "warn", "a GPU device file exists but nvidia-smi lists no GPU",
                           "restart the session; if it persists, choose the GPU again" + (f" ({how})" if how else ""))
        return Finding("accelerator", "ok", f"{len(gpus)} GPU(s): " + "; ".join(gpus))
    if plat.accelerator == "tpu":
        kind = os.environ.get("TPU_ACCELERATOR_TYPE", "")
        return Finding("accelerator", "ok", f"TPU {kind}".strip() + " (16 GiB HBM per v5e chip)")
    if plat.name == "local":
        return Finding("accelerator", "info", "none: training runs on the CPU (the smoke profile's scale)")
    return Finding("accelerator", "warn", "none: this session has no GPU or TPU",
                   f"fine for 01, 02 and this check; for 03-06 choose an accelerator ({how})")


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes, {} where there is none."""
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            parts = value.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _host() -> Finding:
    cores = platform.cpu_cores()
    mem = _meminfo()
    total, avail = mem.get("MemTotal"), mem.get("MemAvailable")
    ram = f", RAM {total / GB:.1f} GB ({avail / GB:.1f} GB available)" if total and avail else ""
    detail = f"{cores} cores ({pyplatform.machine()}){ram}"
    if avail is not None and avail < 2 * GB:
        return Finding("host", "warn", detail, "under 2 GB of RAM free: close other notebooks or restart the session")
    return Finding("host", "ok", detail)


def _space(name: str, path: Path | None, todo: str) -> Finding:
    if path is None:
        return Finding(name, "info", "none on this platform")
    free = quota.free_bytes(path)
    if free is None:
        return Finding(name, "warn", f"{path}: free space unknown", todo)
    detail = f"{path}: {free / GB:.1f} GB free"
    return Finding(name, "ok" if free >= LOW_DISK_BYTES else "warn", detail, "" if free >= LOW_DISK_BYTES else todo)


def _disks(plat: Platform) -> list[Finding]:
    scratch = {"kaggle": plat.path(platform.KAGGLE_TEMP), "colab": plat.path(platform.COLAB_CONTENT)}.get(
        plat.name, Path(tempfile.gettempdir()))
    found = [_space("scratch", scratch, "free space on the local disk: the corpus stream's parts live there")]
    out = _space("output", plat.runs_root, "free space or choose another RUN_DIR: checkpoints are written there")
    if plat.output_root is not None and plat.output_limit_bytes:
        used = quota.dir_bytes(plat.output_root)
        limit = plat.output_limit_bytes
        detail = f"{out.detail}; {used / GB:.1f} of the {limit / GB:.0f} GB Kaggle keeps"
        verdict, todo = out.verdict, out.todo
        if used > 0.8 * limit:
            verdict, todo = "warn", "delete old runs under /kaggle/working or lower train.keep_last"
        out = Finding("output", verdict, detail, todo)
    found.append(out)
    if plat.name == "colab":
        if platform.drive_mounted(plat):
            found.append(_space("drive", plat.path(platform.COLAB_DRIVE / "MyDrive"),
                                "free space on Google Drive (its free tier holds 15 GB in all)"))
        else:
            found.append(Finding("drive", "warn", "Google Drive is not mounted", platform.drive_help()))
    return found


def input_runs_report(plat: Platform, name: str | None = None) -> list[Finding]:
    """Runs among Kaggle's inputs (all, or those called `name`) and their training stages' newest steps."""
    if plat.inputs is None:
        return [Finding("inputs", "info", "none (only Kaggle attaches inputs)")]
    if not plat.inputs.is_dir():
        return [Finding("inputs", "warn", f"{plat.inputs} does not exist", "run on Kaggle, or create it in a rehearsal")]
    runs = [p for p in rundir.walk_dirs(plat.inputs, rundir.INPUT_DEPTH) if rundir.is_run(p)
            and (name is None or p.name == name)]
    if not runs:
        return [Finding("inputs", "info", f"no run directory under {plat.inputs}: a first session starts from nothing",
                        "for 02-06 add the earlier notebooks' outputs as inputs (Add Input -> Your Work -> Notebooks)")]
    found = []
    for run in runs:
        steps = []
        for stage in rundir.TRAINING_STAGES:
            step = rundir.newest_step(run / stage / CHECKPOINTS)
            sessions = rundir.read_sessions(run / stage)
            if step is not None or sessions:
                steps.append(f"{stage} step {step if step is not None else '-'}"
                             + (f" (session {sessions[-1].get('session')})" if sessions else ""))
        finished = sorted(read_json(run / RUN_METRICS)) if (run / RUN_METRICS).is_file() else []
        detail = f"{run.relative_to(plat.inputs)}: finished {', '.join(finished) or 'nothing'}"
        found.append(Finding("input", "ok", detail + (f"; {', '.join(steps)}" if steps else "")))
    return found


def _budget(plat: Platform) -> Finding:
    limit = plat.session_limit_minutes
    if limit is None:
        return Finding("time budget", "info", "no session limit here (train.max_minutes=0 trains to the end)")
    clock = platform.session_clock(plat.root, limit)
    budget = platform.default_max_minutes(plat, clock.elapsed_minutes)
    detail = f"{budget:g} min for training of the {limit / 60:g} h limit (clock: {clock.describe()})"
    if budget <= platform.MIN_BUDGET_MINUTES:
        return Finding("time budget", "warn", detail, "the session is nearly over: start a new session (Kaggle: save "
                       "a new version) before training, or set train.max_minutes")
    return Finding("time budget", "ok", detail)


def _token(plat: Platform) -> Finding:
    from . import hub

    try:
        token = hub.hf_token(platform=plat)
    except Exception as err:  # a platform's secret store that fails must not stop the check
        return Finding("hub token", "warn", f"could not read ({type(err).__name__})", "set HF_TOKEN in the environment")
    if token is None:
        where = {"kaggle": "Add-ons -> Secrets: HF_TOKEN", "colab": "the key icon (Secrets): HF_TOKEN, notebook access on"}
        return Finding("hub token", "warn", "not set: the hub's anonymous reads are rate-limited per IP address",
                       f"add a read token ({where.get(plat.name, 'export HF_TOKEN=hf_...')})")
    return Finding("hub token", "ok", f"set (from {token.source}; value not shown)")


def hub_endpoint() -> str:
    """The hub's address: HF_ENDPOINT (what huggingface_hub reads) or huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def _hub(timeout_s: float = HUB_TIMEOUT_S) -> Finding:
    url = f"{hub_endpoint()}/api/models?limit=1"
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return Finding("hub", "warn", f"{hub_endpoint()} not reachable ({reason})",
                       "turn the session's Internet on (Kaggle: Settings -> Internet, phone-verified account); "
                       "02 streams hub sources and 06 reads lm-eval's data from there")
    ms = (time.monotonic() - start) * 1000
    if status == 429:
        return Finding("hub", "warn", f"{hub_endpoint()} answers 429 (rate limited)", "set HF_TOKEN (see hub token)")
    verdict = "ok" if status < 400 else "warn"
    return Finding("hub", verdict, f"{hub_endpoint()} answered {status} in {ms:.0f} ms",
                   "" if verdict == "ok" else "the hub refused the request: check HF_ENDPOINT and the token")


def _safe(name: str, check: Callable[[], Finding | list[Finding]]) -> list[Finding]:
    """A check that raises becomes a warn finding: the doctor itself never stops a notebook."""
    try:
        out = check()
    except Exception as err:
        return [Finding(name, "warn", f"the check failed: {type(err).__name__}: {err}", "include this line in a report")]
    return out if isinstance(out, list) else [out]


def findings(plat: Platform | None = None, run_name: str | None = None, network: bool = True) -> list[Finding]:
    """Every check, in report order; `network` adds the hub's reachability."""
    plat = plat or platform.detect()
    kaggle = f", Kaggle run type {plat.run_type}" if plat.run_type else ""
    out = [Finding("platform", "ok", f"{plat.name} ({plat.accelerator}{kaggle}): {plat.reason}")]
    out += _safe("python/torch", lambda: _python_torch(plat))
    out += _safe("accelerator", lambda: _accelerator(plat))
    out += _safe("host", _host)
    out += _safe("disk", lambda: _disks(plat))
    out += _safe("inputs", lambda: input_runs_report(plat, run_name))
    out += _safe("time budget", lambda: _budget(plat))
    out += _safe("hub token", lambda: _token(plat))
    if network:
        out += _safe("hub", _hub)
    return out


def report(plat: Platform | None = None, run_name: str | None = None, network: bool = True) -> str:
    """The full report as plain text."""
    from . import __version__

    found = findings(plat, run_name, network)
    head = (f"nbhelpers {__version__} doctor, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
            f"(paste this whole text into a bug report; it holds no token)")
    return "\n".join([head, *(f.line() for f in found), _summary(found)])


def _summary(found: list[Finding]) -> str:
    counts = {v: sum(f.verdict == v for f in found) for v in VERDICTS}
    return "doctor: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def short(plat: Platform | None = None) -> list[Finding]:
    """What the setup cell prints: one summary line and the findings that are not ok (no network)."""
    found = findings(plat, network=False)
    worse = [f for f in found if f.verdict in ("warn", "fail")]
    print(_summary(found) + " (the full report: !python -m nbhelpers doctor)")
    for f in worse:
        print(f.line())
    return found


def main(run_name: str | None = None, network: bool = True) -> int:
    """`python -m nbhelpers doctor`: print the report; 1 when a check failed."""
    text = report(run_name=run_name, network=network)
    print(text)
    return 1 if "[fail]" in text else 0
