"""Train a stage in the notebook's process or in torchrun worker processes (DDP over several GPUs).

`train_stage(run, "pretrain")` is what 03 calls (04: "sft"). With one process (a CPU, one GPU, a TPU host) it builds
the stage's job (`pretrain_job`: tokenizer, corpus, model, batches, lr horizon; `sft_job`) and runs `train.train` in
the kernel. With several (CUDA with more than one visible GPU, or `train.nproc=N`) it runs

    python -m torch.distributed.run --standalone --nproc_per_node=N -m nbhelpers train --stage pretrain ...

streams rank 0's progress into the notebook and returns the TrainResult rank 0 wrote to the stage
folder (`launch_result.json`). Each worker builds its job with the same function (one code path) and
joins the process group inside `train.train` (NCCL on CUDA, gloo on the CPU). A resume is the loop's own:
it finds the newest complete checkpoint whichever way the previous session ran.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import config as config_mod
from .files import atomic_write_text, read_json
from .layout import CHECKPOINTS, CONFIG_FILE, FINAL, STAGE_METRICS, TRAINING_STAGES
from .platform import cpu_cores
from .rundir import RunDir
from .train import BadStepsError, Job, TrainingError, TrainResult

STAGES = TRAINING_STAGES  # the stages whose training runs here (03 and 04)
RESULT_FILE = "launch_result.json"  # rank 0's TrainResult, read back by the notebook
ERROR_FILE = "launch_error.json"  # the first failing rank's exception, re-raised in the notebook
DATA_FILE = "data_stats.json"  # rank 0's reading figures: waits for the producer, parts read, disk
TAIL_LINES = 30
TRACEBACK_LINES = 120  # a failing worker's last traceback is shown whole when it is at most this long
FLUSH_S = 1.0  # the workers' output reaches the notebook in pieces at most this often (one output message each)
PROGRESS_S = "10"  # rank 0's bar redraws at most every 10 s (TQDM_MININTERVAL): a saved notebook stays small


class LaunchError(TrainingError):
    """The worker processes failed; the message holds their last output lines."""


# ---------------------------------------------------------------- the stage's training set-up


def pretrain_job(cfg: config_mod.RunConfig, run: RunDir, *, choice: Any = None) -> Job:
    """03's training set-up for this process: model, this rank's share of the stream, the time budget.

    The training blocks come from the corpus producer while the device trains (`corpus.stream`): the token
    budget gives the steps (and the cosine's horizon), and the loop keeps the data position in its checkpoints.
    """
    from transformers import AutoTokenizer

    from . import corpus as corpus_mod
    from . import device, model, planner, platform, provenance
    from .batches import PackedBatches, dist_rank_world
    from .corpus.stream import StreamBatches

    run.require("corpus")
    provenance.check_resume(run, "pretrain", write=dist_rank_world()[0] == 0)  # its checkpoints: the same inputs
    choice = choice or device.select(cfg.train)
    tokenizer = AutoTokenizer.from_pretrained(run.tokenizer)
    corpus = corpus_mod.load_corpus(run.corpus)
    vocab_size = len(tokenizer)
    net = model.build_model(cfg.model, vocab_size, tokenizer=tokenizer, device_choice=choice, seed=cfg.train.seed)
    model.check_compatible(net.config, seq_len=corpus.block_len, tokenizer_vocab=vocab_size)
    t = cfg.train
    world = dist_rank_world()[1]  # the ranks on this host share its producer and its cores
    stream, start, hashes, budget = corpus_mod.open_stream(cfg, run.root, trainers=world)
    train_batches = StreamBatches(stream, start, hashes, t.micro_batch, budget.blocks, seed=t.seed)  # this rank's share
    eval_batches = {"val": PackedBatches(corpus.val, t.micro_batch, shuffle=False)}
    peak = planner.peak_flops(choice)
    train_cfg = platform.apply_session_limit(t)  # last: what is left of the session once the model is built
    return Job(net, train_batches, train_cfg, run.pretrain, eval_batches, tokenizer, device_choice=choice,
               peak_flops=peak)


def sft_job(cfg: config_mod.RunConfig, run: RunDir, *, choice: Any = None) -> Job:
    """04's training set-up for this process: the pre-trained model, this rank's instruction + replay batches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import corpus as corpus_mod
    from . import device, planner, platform, provenance, sft
    from .batches import dist_rank_world

    run.require("pretrain")
    provenance.check_resume(run, "sft", write=dist_rank_world()[0] == 0)  # its checkpoints: the same inputs
    choice = choice or device.select(cfg.train)
    tokenizer = sft.attach_chat_template(AutoTokenizer.from_pretrained(run.tokenizer), cfg.sft)  # into sft/final
    data = sft.load_instructions(cfg.sft)
    train_rows, _ = sft.encode(tokenizer, data.train, cfg.sft)
    heldout_rows, _ = sft.encode(tokenizer, data.heldout, cfg.sft)
    corpus = corpus_mod.load_corpus(run.corpus)
    replay = None
    if cfg.sft.replay_ratio > 0:  # the stream's first part, made by the producer as in 03
        from .corpus.stream import replay_blocks

        replay = replay_blocks(cfg, run.root, trainers=dist_rank_world()[1])
    train_batches, eval_batches = sft.make_batches(cfg.sft, tokenizer, train_rows, heldout_rows, corpus.val, replay,
                                                   sft.use_fixed_length(cfg, choice.backend))
    model = AutoModelForCausalLM.from_pretrained(run.pretrain / FINAL)
    # steps from this rank's share of an epoch; the time budget is what is left of the session now
    peak = planner.peak_flops(choice)
    train_cfg = platform.apply_session_limit(sft.train_config(cfg, len(train_batches)))
    return Job(model, train_batches, train_cfg, run.sft, eval_batches, tokenizer, device_choice=choice,
               peak_flops=peak)


JOBS = {"pretrain": pretrain_job, "sft": sft_job}


def run_job(job: Job, progress: bool = True, on_eval: Any = None) -> TrainResult:
    """`train.train` on a job; the batch source is closed after it (the producer stops) and its reading figures kept."""
    from .train import train

    try:
        return train(job, progress=progress, on_eval=on_eval)
    finally:
        close = getattr(job.train_batches, "close", None)
        if close is not None:
            close()
        stats = getattr(job.train_batches, "stats", None)
        if stats is not None and getattr(job.train_batches, "rank", 0) == 0:
            with contextlib.suppress(OSError):
                atomic_write_text(job.out_dir / DATA_FILE, json.dumps(stats(), indent=1))


def stage_dir(run: RunDir, stage: str) -> Path:
    """The stage's output folder (run.pretrain for "pretrain")."""
    if stage not in STAGES:
        raise ValueError(f"stage: expected {' | '.join(STAGES)}, got {stage!r}")
    return getattr(run, stage)


# ---------------------------------------------------------------- how many processes


def resolve_nproc(train_cfg: config_mod.TrainConfig, choice: Any, nproc: int | None = None) -> int:
    """Training processes: `nproc`, else train.nproc, else one per visible GPU on CUDA and one elsewhere."""
    n = train_cfg.nproc if nproc is None else int(nproc)
    config_mod.check_value("train.nproc", n, ValueError)
    if n == 0:
        return max(1, choice.num_devices) if choice.backend == "cuda" else 1
    if config_mod.nproc_problem(choice.backend, n):  # train.backend=auto found a TPU
        raise ValueError(config_mod.nproc_problem(choice.backend, n))
    if choice.backend == "cuda" and n > choice.num_devices:
        raise ValueError(f"train.nproc={n}: only {choice.num_devices} CUDA GPU(s) visible; use at most that, or 0")
    return n


# ---------------------------------------------------------------- the notebook side


def train_stage(run: RunDir, stage: str = "pretrain", nproc: int | None = None, *, progress: bool = True,
                live: bool = False) -> TrainResult:
    """Train `stage` of `run`: in this process, or in `nproc` torchrun workers (see the module docstring).

    `live=True`: the loss curve, redrawn in place at each evaluation (`plots.LiveCurve`; in a notebook only).
    """
    from . import device, platform
    from .plots import LiveCurve
    from .rundir import begin_session, end_session

    finished = finished_result(run, stage)
    if finished is not None:
        return finished
    cfg = run.config
    out = stage_dir(run, stage)
    choice = device.select(cfg.train)
    n = resolve_nproc(cfg.train, choice, nproc)
    curve = LiveCurve(out / STAGE_METRICS) if live else None
    session = begin_session(run, stage)  # where this session starts, kept in the output for the next one's check
    if n == 1:
        result = run_job(JOBS[stage](cfg, run, choice=choice), progress=progress, on_eval=curve)
    else:
        # the session budget is counted from now, not from each worker's start
        budget = platform.apply_session_limit(cfg.train).max_minutes
        deadline = time.time() + budget * 60.0 if budget > 0 else None
        result = launch(run, stage, n, deadline=deadline, progress=progress, out_dir=out, poll=curve)
    end_session(run, stage, session, result.step, result.status)
    return result


def finished_result(run: RunDir, stage: str) -> TrainResult | None:
    """The result of `stage` when an earlier Kaggle version finished it (linked read-only from an input), else None.

    Saving the training notebook again after its stage completed then trains nothing and writes nothing there:
    the figures are read from the stage's metrics.jsonl and the notebook's later cells show them.
    """
    from .train import read_metrics

    folder = run.root / stage
    if not folder.is_symlink() or not run.is_complete(stage):
        return None
    metrics = folder / STAGE_METRICS
    records = read_metrics(metrics)
    train = [r for r in records if r.get("kind") == "train"]
    evals = {r.get("split"): r for r in records if r.get("kind") == "eval"}
    step = int(train[-1]["step"]) if train else 0
    print(f"{stage} is complete (step {step}) in {folder.resolve().parent}, an input: nothing to train; its model is "
          f"{folder / FINAL}")
    return TrainResult(status="done", step=step, total_steps=step, out_dir=folder, metrics_path=metrics,
                       final_dir=folder / FINAL, train_loss=train[-1].get("loss") if train else None,
                       eval={split: {k: r.get(k) for k in ("loss", "ppl", "bpb")} for split, r in evals.items()},
                       tokens_per_s=train[-1].get("tokens_per_s") if train else None)


def worker_command(run: RunDir, stage: str, nproc: int, deadline: float | None = None,
                   progress: bool = True) -> list[str]:
    """The torchrun command line: the run's profile plus every field that differs from it as --set."""
    cfg = run.config
    if cfg.profile not in config_mod.PROFILES:
        raise ValueError(f"profile {cfg.profile!r} is not one of {', '.join(config_mod.PROFILES)}: "
                         "the worker processes rebuild the configuration from a known profile")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "nbhelpers", "train", "--stage", stage, "--profile", cfg.profile, "--run-dir", str(run.root)]
    for key, value in config_diff(config_mod.PROFILES[cfg.profile](), cfg):
        cmd += ["--set", f"{key}={json.dumps(value, ensure_ascii=False)}"]
    if deadline is not None:
        cmd += ["--deadline", f"{deadline:.3f}"]
    if not progress:
        cmd.append("--no-progress")
    return cmd


def config_diff(base: config_mod.RunConfig, cfg: config_mod.RunConfig) -> list[tuple[str, Any]]:
    """(section.field, value) for every field where `cfg` differs from `base`."""
    a, b = base.to_dict(), cfg.to_dict()
    return [(f"{s}.{k}", v) for s, sub in b.items() if isinstance(sub, dict)
            for k, v in sub.items() if a[s].get(k) != v]


def launch(run: RunDir, stage: str, nproc: int, *, deadline: float | None = None, progress: bool = True,
           out_dir: Path | None = None, poll: Any = None) -> TrainResult:
    """Run the stage's training in `nproc` torchrun workers, stream their output, return rank 0's TrainResult.

    `poll()` runs here between flushes of their output (the live loss curve, which redraws only at evaluations).
    """
    out = out_dir or stage_dir(run, stage)
    out.mkdir(parents=True, exist_ok=True)
    for name in (RESULT_FILE, ERROR_FILE):  # a previous session's files must not answer for this one
        (out / name).unlink(missing_ok=True)
    # the workers end when this process (the notebook's kernel) does, even killed (see worker_main)
    env = dict(os.environ, PYTHONUNBUFFERED="1", NBHELPERS_KERNEL_PID=str(os.getpid()))
    package_root = str(Path(__file__).resolve().parents[1])  # the workers import this very nbhelpers
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    if "OMP_NUM_THREADS" not in env:  # torchrun would set 1; give each rank its share of the cores
        env["OMP_NUM_THREADS"] = str(max(1, cpu_cores() // nproc))
    env.setdefault("TQDM_MININTERVAL", PROGRESS_S)
    cmd = worker_command(run, stage, nproc, deadline, progress)
    _release_cuda_cache()
    code, tail = _stream(cmd, env, poll)
    if code != 0:
        raise _failure(out, stage, nproc, code, tail)
    path = out / RESULT_FILE
    if not path.is_file():
        raise LaunchError(f"the {nproc} {stage} workers exited cleanly but wrote no {path}; last lines:\n"
                          + "\n".join(tail))
    return result_from_json(json.loads(path.read_text(encoding="utf-8")))


def _release_cuda_cache() -> None:
    """Hand the kernel's cached GPU memory back (a model it freed), so rank 0 on the same GPU can use it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def _stream(cmd: list[str], env: dict[str, str], poll: Any = None) -> tuple[int, list[str]]:
    """Run `cmd`, copying its output to this process's stdout as it comes, `poll()` after each flush;
    (exit code, last lines)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = proc.stdout.fileno()
    recent, pending, flushed = "", "", 0.0
    try:
        while True:
            ready = select.select([fd], [], [], FLUSH_S)[0]
            chunk = os.read(fd, 65536) if ready else None
            if chunk == b"":
                break
            if chunk:
                text = decoder.decode(chunk)
                pending += text
                recent = (recent + text)[-60000:]
            if pending and time.monotonic() - flushed >= FLUSH_S:
                sys.stdout.write(pending)  # tqdm's \r updates redraw the bar in Jupyter too
                sys.stdout.flush()
                pending, flushed = "", time.monotonic()
                if poll is not None:
                    poll()
        sys.stdout.write(pending + decoder.decode(b"", final=True))
        sys.stdout.flush()
        code = proc.wait()
        if poll is not None:  # the last evaluation, logged just before the workers ended
            poll()
    except BaseException:  # an interrupted cell stops the workers too (their group, not just torchrun)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    finally:
        proc.stdout.close()
    return code, output_tail(recent)


def output_tail(text: str) -> list[str]:
    """The workers' last lines worth showing: from the last traceback's first line on, else the last TAIL_LINES."""
    lines = [ln.rstrip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    # torchrun's own report of a failed child (its traceback and summary) says nothing the workers did not
    ends = [i for i, ln in enumerate(lines) if "elastic/multiprocessing" in ln and "failed (exitcode" in ln]
    lines = lines[:ends[0] if ends else len(lines)]
    # two ranks failing together interleave their tracebacks, and Python 3.13's carets make each one longer
    heads = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    start = len(lines) - TAIL_LINES
    if heads and len(lines) - heads[-1] <= TRACEBACK_LINES:
        start = min(start, heads[-1])
    return lines[max(0, start):]


def _failure(out: Path, stage: str, nproc: int, code: int, tail: list[str]) -> Exception:
    """The error to raise for failed workers: the worker's own exception type when it wrote one."""
    where = "last lines of the workers' output:\n" + "\n".join(tail)
    err_path = out / ERROR_FILE
    if err_path.is_file():
        err = json.loads(err_path.read_text(encoding="utf-8"))
        msg = f"{stage} worker rank {err['rank']} of {nproc} failed: {err['type']}: {err['message']}\n{where}"
        return BadStepsError(msg) if err["type"] == "BadStepsError" else LaunchError(msg)
    return LaunchError(f"the {nproc} {stage} worker processes failed (torchrun exit code {code}); the newest "
                       f"complete checkpoint in {out / CHECKPOINTS} is kept and a rerun resumes it; {where}")


def result_to_json(result: TrainResult) -> dict[str, Any]:
    """A TrainResult as JSON (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()}


def result_from_json(data: dict[str, Any]) -> TrainResult:
    """The TrainResult `result_to_json` wrote."""
    paths = {"out_dir", "metrics_path", "checkpoint", "final_dir"}
    return TrainResult(**{k: (Path(v) if k in paths and v is not None else v) for k, v in data.items()})


# ---------------------------------------------------------------- the worker side


def worker_main(stage: str, run_dir: str | os.PathLike, profile: str | None, overrides: list[str],
                deadline: float | None = None, progress: bool = True) -> int:
    """One torchrun rank: build the stage's job, train; rank 0 writes the result (or the error) for the notebook."""
    import torch

    from .batches import dist_rank_world
    from .corpus.workers import exit_when_gone

    if os.environ.get("NBHELPERS_KERNEL_PID"):  # torchrun runs in its own session: a killed kernel would not stop it
        exit_when_gone(int(os.environ["NBHELPERS_KERNEL_PID"]))
    root = Path(run_dir).resolve()
    if profile:
        cfg = config_mod.load(profile, overrides)
    else:  # the configuration the notebook recorded in the run directory
        cfg = config_mod.apply_overrides(config_mod.from_dict(read_json(root / CONFIG_FILE)), overrides)
    run = RunDir(root, cfg)  # not RunDir.open: the notebook already created and linked it
    out = stage_dir(run, stage)
    rank = dist_rank_world()[0]
    try:
        job = JOBS[stage](cfg, run)
        if deadline is not None:  # what is left of the notebook's budget once this rank's job is built
            left = max(0.05, (deadline - time.time()) / 60.0)
            job = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, max_minutes=left))
        result = run_job(job, progress=progress and rank == 0)
    except Exception as err:
        if not (out / ERROR_FILE).exists():  # the first rank to fail names the cause
            with contextlib.suppress(OSError):
                atomic_write_text(out / ERROR_FILE, json.dumps(
                    {"rank": rank, "type": type(err).__name__, "message": str(err)}, ensure_ascii=False))
        raise
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rank == 0:
        atomic_write_text(out / RESULT_FILE, json.dumps(result_to_json(result), ensure_ascii=False, indent=1))
    return 0
