"""Command line: `python -m nbhelpers run ...` executes the notebooks; `notebooks` keeps the twins in sync."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PROFILES, ConfigError

EPILOG = """examples:
  python -m nbhelpers run --profile smoke --run-dir runs/smoke
  python -m nbhelpers run --profile smoke --run-dir runs/smoke --only 01,02 --set train.max_steps=50
  python -m nbhelpers run --profile colab_t4 --run-dir runs/t4 --only 03 --force
  python -m nbhelpers notebooks --check
  python -m nbhelpers push --run-dir runs/smoke --stage sft --repo alice/ja-neox-sft --dry-run
  python -m nbhelpers kaggle --user alice --profile kaggle_tpu_v5e8
  python -m torch.distributed.run --standalone --nproc_per_node=2 -m nbhelpers train --stage pretrain \
      --profile kaggle_t4x2 --run-dir runs/t4x2

Overrides are section.field=value; the value is read as JSON when it parses, as a string otherwise
(train.lr=3e-4, corpus.mixture='{"bundled_prose": 1}', train.backend=cpu).
A second run skips stages whose artifacts are complete for the same configuration; --force reruns them.

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
    if not owner or owner == kaggle_kernels.PLACEHOLDER_USER:
        print("error: pass --user YOUR_KAGGLE_NAME (or set KAGGLE_USERNAME)", file=sys.stderr)
        return 1
    try:
        folders = kaggle_kernels.write_kaggle_kernels(args.out, owner, args.profile, notebooks_dir,
                                                only=args.only.split(","), base=base,
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
    p_run.add_argument("--profile", required=True, choices=sorted(PROFILES), help="configuration profile")
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
    p_tr.add_argument("--stage", required=True, choices=["pretrain", "sft"], help="the stage whose training runs")
    p_tr.add_argument("--run-dir", required=True, type=Path, help="run directory prepared by the earlier notebooks")
    p_tr.add_argument("--profile", default=None, choices=sorted(PROFILES),
                      help="configuration profile (default: the run directory's config.json)")
    p_tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. train.micro_batch=4 (repeatable)")
    p_tr.add_argument("--deadline", type=float, default=None, help="Unix time by which to checkpoint and stop")
    p_tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_push = sub.add_parser("push", help="upload a run's pretrain/final or sft/final to the Hugging Face Hub "
                            "(bf16 safetensors, tokenizer, model card), private unless --public")
    p_push.add_argument("--run-dir", required=True, type=Path, help="the run directory")
    p_push.add_argument("--stage", required=True, choices=["pretrain", "sft"], help="which final/ to upload")
    p_push.add_argument("--repo", required=True, help="owner/name on the Hub (created if missing)")
    p_push.add_argument("--public", action="store_true", help="make a new repository public (default: private)")
    p_push.add_argument("--dry-run", action="store_true", help="list the files and sizes; upload nothing")
    p_push.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"], help="weights' precision (default bf16)")
    args = parser.parse_args(argv)

    if args.command == "push":
        return _push(args)

    if args.command == "train":
        from .launch import worker_main

        return worker_main(args.stage, args.run_dir, args.profile, args.overrides, args.deadline,
                           progress=not args.no_progress)

    if args.command == "kaggle":
        return _kaggle(args)

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

    only = [o for o in args.only.split(",") if o.strip()]
    try:
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
