"""Command line: `python -m nbhelpers run ...` executes the notebooks; `notebooks` keeps the twins in sync."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PROFILES, ConfigError
from .layout import TRAINING_STAGES

EPILOG = """examples:
  python -m nbhelpers run --profile smoke --run-dir runs/smoke
  python -m nbhelpers run --profile smoke --run-dir runs/smoke --only 01,02 --set train.max_steps=50
  python -m nbhelpers run --profile colab_t4 --run-dir runs/t4 --only 03 --force
  python -m nbhelpers notebooks --check
  python -m nbhelpers chat --run-dir runs/smoke
  python -m nbhelpers plan --profile kaggle_t4x2 --hours 30
  python -m nbhelpers plan --profile colab_t4 --set model.preset=seed_1b --set train.gradient_checkpointing=true --json
  python -m nbhelpers doctor
  python -m nbhelpers release-check
  python -m nbhelpers push --run-dir runs/smoke --stage sft --repo alice/ja-neox-sft --dry-run
  python -m nbhelpers kaggle --user alice --profile kaggle_tpu_v5e8
  python -m torch.distributed.run --standalone --nproc_per_node=2 -m nbhelpers train --stage pretrain \
      --profile kaggle_t4x2 --run-dir runs/t4x2

Overrides are section.field=value; the value is read as JSON when it parses, as a string otherwise
(train.lr=3e-4, corpus.mixture='{"bundled_prose": 1}', train.backend=cpu).
A second run skips stages whose artifacts are complete for the same configuration; --force reruns them.

--profile auto picks the platform's profile: Kaggle's TPU -> kaggle_tpu_v5e8, Kaggle with two GPUs ->
kaggle_t4x2, Colab or one CUDA GPU -> colab_t4, otherwise smoke (it prints the choice and why).

--run-dir "" (the default) is the platform's: /kaggle/working/runs/PROFILE on Kaggle, Google Drive on
Colab, runs/PROFILE here. NBHELPERS_PLATFORM_ROOT=DIR with a platform's own variables rehearses it here:
  NBHELPERS_PLATFORM_ROOT=/tmp/kg KAGGLE_KERNEL_RUN_TYPE=Batch python -m nbhelpers run --profile smoke

exit status:
  0   every notebook asked for finished
  1   a notebook failed, or the configuration or run directory is wrong (the message says which)
  75  a training notebook (03, 04) stopped by its time budget, its checkpoint saved: the later notebooks
      did not run; run the same command again (a new session, or a new Kaggle version) to continue
"""


KAGGLE_EPILOG = """examples:
  python -m nbhelpers kaggle --user alice --profile kaggle_tpu_v5e8
  python -m nbhelpers kaggle --user alice --profile kaggle_t4x2 --only 03,04 --out build/kaggle-t4

Each folder holds kernel-metadata.json and the notebook with PROFILE set; push them in order with
`kaggle kernels push -p FOLDER`, each after the previous one finished: a notebook reads the earlier
notebooks' outputs (kernel_sources), so they must exist first. kaggle-metadata.json at the top of the
repository gives the defaults (privacy, dataset_sources) and is itself the 03_pretrain kernel's metadata.

03 and 04 also read their own previous version's output: when the session's time budget stops one,
push the same folder again (a new version) and it resumes from the checkpoint; repeat until its last
cell says it is done. The first push reports the kernel's own output as not a valid kernel source
(there is none yet); later pushes find it. The kernels need Internet (a phone-verified account).
"""


def _only(text: str) -> list[str]:
    """The notebooks `--only` names; ValueError when it was given but names none (`--only ,` ran all six)."""
    names = [o.strip() for o in text.split(",") if o.strip()]
    if text and not names:
        raise ValueError(f"--only {text!r} names no notebook: give numbers or names, e.g. --only 01,02 "
                         "(leave --only out to run every notebook)")
    return names


def _kaggle(args: argparse.Namespace) -> int:
    """`python -m nbhelpers kaggle`: write the kernel folders and print how to push them."""
    import json
    import os

    from . import kaggle_kernels
    from .notebooks import default_dir

    notebooks_dir = args.notebooks or default_dir()
    base_path = Path(notebooks_dir).parent / "kaggle-metadata.json"
    base = json.loads(base_path.read_text(encoding="utf-8")) if base_path.is_file() else {}
    owner = args.user or os.environ.get("KAGGLE_USERNAME") or str(base.get("id", "")).split("/")[0]
    try:
        only = _only(args.only)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not owner or owner == kaggle_kernels.PLACEHOLDER_USER:
        print("error: pass --user YOUR_KAGGLE_NAME (or set KAGGLE_USERNAME)", file=sys.stderr)
        return 1
    try:
        folders = kaggle_kernels.write_kaggle_kernels(args.out, owner, args.profile, notebooks_dir,
                                                only=only, base=base,
                                                cpu_stages=[c.strip() for c in args.cpu_stages.split(",") if c.strip()])
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for folder in folders:
        meta = json.loads((folder / "kernel-metadata.json").read_text(encoding="utf-8"))
        shape = meta["machine_shape"] or "no accelerator"
        print(f"kaggle kernels push -p {folder}   # {meta['id']} on {shape}; then wait for "
              f"`kaggle kernels status {meta['id']}` to say complete"
              + ("; push it again (a new version) to continue after a time-budget stop"
                 if meta["id"] in meta["kernel_sources"] else ""))
    return 0


CHAT_EPILOG = """examples:
  python -m nbhelpers chat --run-dir runs/smoke
  python -m nbhelpers chat --run-dir runs/smoke --stage pretrain --temperature 0
  printf '日本の首都は？\\n/exit\\n' | python -m nbhelpers chat --run-dir runs/smoke --no-stream

Type a message and Enter; the model answers with the whole conversation so far in view. Older exchanges that
no longer fit the model's context are forgotten, with a notice. /reset starts over, /exit (or Ctrl-D) leaves.
"""


def _chat(args: argparse.Namespace) -> int:
    """`python -m nbhelpers chat`: a terminal conversation with the run's tuned (or base) model."""

    from . import chat
    from .device import local_default

    bad = [f"{flag} {why}, got {value}" for flag, value, ok, why in [
        ("--temperature", args.temperature, args.temperature >= 0, "must be >= 0 (0 = greedy)"),
        ("--top-p", args.top_p, 0 < args.top_p <= 1, "must be in (0, 1]"),
        ("--top-k", args.top_k, args.top_k >= 0, "must be >= 0 (0 = all tokens)"),
        ("--repetition-penalty", args.repetition_penalty, args.repetition_penalty > 0, "must be > 0 (1 = none)"),
        ("--max-new-tokens", args.max_new_tokens, args.max_new_tokens is None or args.max_new_tokens >= 1,
         "must be >= 1")] if not ok]
    if bad:
        print("error: " + "; ".join(bad), file=sys.stderr)
        return 1
    device = args.device if args.device != "auto" else local_default()
    sampling = {"do_sample": args.temperature > 0, "repetition_penalty": args.repetition_penalty, "seed": args.seed}
    if args.temperature > 0:
        sampling.update(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    settings = {"sampling": sampling, "system": args.system}
    if args.max_new_tokens is not None:
        settings["max_new_tokens"] = args.max_new_tokens
    try:
        session = chat.load(args.run_dir, args.stage, device=device, **settings)
    except (chat.ChatError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.stage == "pretrain":
        print("(the base model was never tuned to answer: expect it to continue your text)", flush=True)
    return chat.repl(session, stream=not args.no_stream)


PLAN_EPILOG = """examples:
  python -m nbhelpers plan --profile colab_t4
  python -m nbhelpers plan --profile kaggle_t4x2 --hours 30
  python -m nbhelpers plan --profile auto --json
  python -m nbhelpers plan --table        # docs/TRAINING.md's "which model can I finish" table

The plan is for the profile's own hardware (a T4, two T4s, a TPU v5e-8), wherever this runs: memory per device
and whether it fits, the projected throughput (the stated MFU of what the device sustains), training hours,
sessions and weeks of the platform's free quota. --hours H picks the size dial's shape (model.preset=dN: N
layers of width 64N) and the token budget (corpus.tokens_per_param, 20, per parameter) that train within H
hours, and lists the nearest shapes. The vocabulary is the tokenizer's, tokenizer.vocab_size.
"""


def _plan(args: argparse.Namespace) -> int:
    """`python -m nbhelpers plan`: the plan of a profile on its hardware, or the shape that finishes in --hours."""
    import json

    from . import planner
    from .config import load
    from .platform import choose_profile

    if args.table:
        print(planner.finish_table())
        return 0
    choice = choose_profile(args.profile)
    try:
        cfg = load(choice.profile, args.overrides)
        if args.hours is not None:
            shapes = planner.choose_shape(cfg, args.hours)
            plan = shapes.chosen
        else:
            shapes, plan = None, planner.plan_profile(cfg)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        out = plan.summary() if plan else {"profile": cfg.profile, "preset": None, "fits": False}
        out["profile_reason"] = choice.reason
        if shapes:
            out.update(hours_goal=shapes.hours, overrides=shapes.overrides, nearest=shapes.rows())
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0 if plan else 1
    print(choice)
    if shapes:
        print(f"\nshapes on the size dial near {shapes.hours:g} training hours "
              f"({cfg.corpus.tokens_per_param:g} tokens per parameter):")
        for row in shapes.rows():
            mark = "  <- chosen" if row["chosen"] else ""
            print(f"  {row['preset']:>4}  {row['parameters'] / 1e6:7,.0f}M parameters  {row['tokens'] / 1e9:6.2f}B "
                  f"tokens  {row['training_hours']:8,.1f} h  {row['sessions']:4} sessions  "
                  f"{'fits' if row['fits'] else 'does NOT fit'}{mark}")
        if plan is None:
            print(f"\nno shape trains within {shapes.hours:g} hours on this profile's hardware; the smallest is "
                  "listed above", file=sys.stderr)
            return 1
        print("\nuse: " + " ".join(f"--set {o}" for o in shapes.overrides)
              + f"   (notebooks: OVERRIDES = {json.dumps(shapes.overrides)})\n")
    width = max(len(k) for k, _ in plan.rows())
    for key, value in plan.rows():
        print(f"{key:<{width}}  {value}")
    return 0


def _push(args: argparse.Namespace) -> int:
    """`python -m nbhelpers push`: upload a stage's final/ (or list what would be uploaded)."""
    from . import hub

    try:
        out = hub.push_stage(args.run_dir, args.stage, args.repo, public=args.public, dry_run=args.dry_run,
                             dtype=args.dtype)
    except (ValueError, FileNotFoundError, hub.PlatformError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(hub.format_plan(out, args.repo, args.public) if args.dry_run else f"uploaded: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m nbhelpers",
        description="Train a Japanese GPT-NeoX from nothing: run the numbered notebooks headlessly.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the numbered notebooks in order with papermill",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_run.add_argument("--profile", required=True, choices=[*sorted(PROFILES), "auto"],
                       help="configuration profile; auto: the platform's")
    p_run.add_argument("--run-dir", default="", help="run directory (created if missing); default: the "
                       "platform's (runs/PROFILE locally)")
    p_run.add_argument("--only", default="", help="comma-separated notebook numbers or names, e.g. 01,02")
    p_run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. train.lr=3e-4 (repeatable)")
    p_run.add_argument("--force", action="store_true", help="rerun stages whose artifacts are complete")
    p_run.add_argument("--notebooks", type=Path, default=None, help="notebooks folder (default: the repository's)")
    p_run.add_argument("--verbose", action="store_true", help="stream the notebooks' cell output")
    p_nb = sub.add_parser("notebooks", help="write the .ipynb twins from the jupytext .py sources")
    p_nb.add_argument("--check", action="store_true", help="only report twins that differ (exit 1 if any)")
    p_nb.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: the repository's)")
    p_doc = sub.add_parser("doctor", help="check this session (platform, torch, accelerator, disk, inputs, time, hub) "
                           "and print a report to paste into a bug report")
    p_doc.add_argument("--run", default=None, help="only the inputs holding this run name (default: all)")
    p_doc.add_argument("--no-network", action="store_true", help="skip the hub's reachability")
    p_rel = sub.add_parser("release-check", help="check that the version, the git tag, REPO_REF, the badges and the "
                           ".ipynb twins agree (exit 1 if not)")
    p_rel.add_argument("--root", type=Path, default=None, help="repository root (default: this checkout)")
    p_kg = sub.add_parser("kaggle", help="write one Kaggle kernel folder per notebook, chained by kernel_sources",
                          epilog=KAGGLE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_kg.add_argument("--user", default=None, help="your Kaggle user name (default: $KAGGLE_USERNAME, "
                      "or the owner in kaggle-metadata.json)")
    p_kg.add_argument("--profile", default="kaggle_tpu_v5e8", choices=["kaggle_tpu_v5e8", "kaggle_t4x2", "smoke"],
                      help="profile injected into each notebook; picks the accelerator (default: kaggle_tpu_v5e8)")
    p_kg.add_argument("--out", type=Path, default=Path("build/kaggle"), help="output folder (default: build/kaggle)")
    p_kg.add_argument("--only", default="", help="comma-separated notebook numbers or names, e.g. 03,04")
    p_kg.add_argument("--cpu-stages", default="01,02", help="notebooks run without an accelerator (default: 01,02)")
    p_kg.add_argument("--notebooks", type=Path, default=None, help="notebooks folder (default: the repository's)")
    p_tr = sub.add_parser("train", help="train one stage in this process; torchrun starts one per GPU "
                          "(launch.train_stage does that from the notebooks)")
    p_tr.add_argument("--stage", required=True, choices=TRAINING_STAGES, help="the stage whose training runs")
    p_tr.add_argument("--run-dir", required=True, type=Path, help="run directory prepared by the earlier notebooks")
    p_tr.add_argument("--profile", default=None, choices=[*sorted(PROFILES), "auto"],
                      help="configuration profile; auto: the platform's (default: the run directory's config.json)")
    p_tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. train.micro_batch=4 (repeatable)")
    p_tr.add_argument("--deadline", type=float, default=None, help="Unix time by which to checkpoint and stop")
    p_tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_chat = sub.add_parser("chat", help="talk to a run's model in the terminal (multi-turn; /reset, /exit)",
                            epilog=CHAT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_chat.add_argument("--run-dir", required=True, type=Path, help="the run directory the notebooks wrote")
    p_chat.add_argument("--stage", default="sft", choices=["sft", "pretrain"],
                        help="sft: the tuned model (default); pretrain: the base model, which only continues text")
    p_chat.add_argument("--max-new-tokens", type=int, default=None, help="tokens per answer (default: sft.max_new_tokens)")
    p_chat.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (default 0.7)")
    p_chat.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling, 0 < p <= 1 (default 0.9)")
    p_chat.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens; 0 = all (default)")
    p_chat.add_argument("--repetition-penalty", type=float, default=1.1, help="> 1 discourages repeats (default 1.1)")
    p_chat.add_argument("--seed", type=int, default=None, help="seed the sampling (default: unseeded)")
    p_chat.add_argument("--system", default="", help="a system message, put before the first user message")
    p_chat.add_argument("--device", default="auto", help="auto (cuda when present, else cpu) | cpu | cuda | cuda:N")
    p_chat.add_argument("--no-stream", action="store_true", help="print each answer whole instead of token by token")
    p_pl = sub.add_parser("plan", help="memory, throughput, hours, sessions and weeks of a profile's run on its own "
                          "hardware (runs anywhere); --hours H picks the model that finishes in H hours",
                          epilog=PLAN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_pl.add_argument("--profile", default="auto", choices=[*sorted(PROFILES), "auto"],
                      help="the profile to plan (default: auto, the platform this runs on)")
    p_pl.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. model.preset=seed_1b (repeatable)")
    p_pl.add_argument("--hours", type=float, default=None, help="pick the shape and token budget that train "
                      "within this many hours")
    p_pl.add_argument("--json", action="store_true", help="print one JSON object")
    p_pl.add_argument("--table", action="store_true", help="print docs/TRAINING.md's table of what each profile finishes")
    p_push = sub.add_parser("push", help="upload a run's pretrain/final or sft/final to the Hugging Face Hub "
                            "(bf16 safetensors, tokenizer, model card), private unless --public")
    p_push.add_argument("--run-dir", required=True, type=Path, help="the run directory")
    p_push.add_argument("--stage", required=True, choices=TRAINING_STAGES, help="which final/ to upload")
    p_push.add_argument("--repo", required=True, help="owner/name on the Hub (created if missing)")
    p_push.add_argument("--public", action="store_true", help="make a new repository public (default: private)")
    p_push.add_argument("--dry-run", action="store_true", help="list the files and sizes; upload nothing")
    p_push.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"], help="weights' precision (default bf16)")
    args = parser.parse_args(argv)
    if args.command == "push":
        return _push(args)
    if args.command == "chat":
        return _chat(args)
    if args.command == "plan":
        return _plan(args)

    if args.command in ("train", "run") and args.profile == "auto":
        from .platform import resolve_profile

        args.profile = resolve_profile("auto")

    if args.command == "train":
        from .launch import worker_main

        return worker_main(args.stage, args.run_dir, args.profile, args.overrides, args.deadline,
                           progress=not args.no_progress)

    if args.command == "kaggle":
        return _kaggle(args)

    if args.command == "doctor":
        from .doctor import main as doctor_main

        return doctor_main(run_name=args.run, network=not args.no_network)

    if args.command == "release-check":
        from .release import main as release_main

        return release_main(args.root)

    if args.command == "notebooks":
        from .notebooks import sync

        stale = sync(args.dir, check=args.check)
        for path in stale:
            print(f"{'out of date' if args.check else 'wrote'}: {path}")
        if args.check and stale:
            print("run `python -m nbhelpers notebooks` and commit the .ipynb files", file=sys.stderr)
            return 1
        return 0

    from .platform import PlatformError
    from .rundir import RunDirError
    from .runner import EXIT_STOPPED, NotebookFailed, run

    try:
        only = _only(args.only)
        results = run(args.profile, args.run_dir, only=only, overrides=args.overrides, force=args.force,
                      notebooks_dir=args.notebooks, log_output=args.verbose)
    except (ConfigError, NotebookFailed, RunDirError, PlatformError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if results and results[-1].status == "stopped":
        print(f"stopped, not failed: {results[-1].message}", file=sys.stderr)
        return EXIT_STOPPED
    print(f"all done: results in {args.run_dir or 'the platform default run directory'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
