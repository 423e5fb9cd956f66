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

Overrides are section.field=value; the value is read as JSON when it parses, as a string otherwise
(train.lr=3e-4, corpus.mixture='{"bundled_prose": 1}', train.backend=cpu).
A second run skips stages whose artifacts are complete for the same configuration; --force reruns them.
"""


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
    p_run.add_argument("--run-dir", required=True, type=Path, help="run directory (created if missing)")
    p_run.add_argument("--only", default="", help="comma-separated notebook numbers or names, e.g. 01,02")
    p_run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. train.lr=3e-4 (repeatable)")
    p_run.add_argument("--force", action="store_true", help="rerun stages whose artifacts are complete")
    p_run.add_argument("--notebooks", type=Path, default=None, help="notebooks folder (default: the repository's)")
    p_run.add_argument("--verbose", action="store_true", help="stream the notebooks' cell output")
    p_nb = sub.add_parser("notebooks", help="write the .ipynb twins from the jupytext .py sources")
    p_nb.add_argument("--check", action="store_true", help="only report twins that differ (exit 1 if any)")
    p_nb.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: the repository's)")
    args = parser.parse_args(argv)

    if args.command == "notebooks":
        from .notebooks import sync

        stale = sync(args.dir, check=args.check)
        for path in stale:
            print(f"{'out of date' if args.check else 'wrote'}: {path}")
        if args.check and stale:
            print("run `python -m nbhelpers notebooks` and commit the .ipynb files", file=sys.stderr)
            return 1
        return 0

    from .runner import NotebookFailed, run

    only = [o for o in args.only.split(",") if o.strip()]
    try:
        run(args.profile, args.run_dir, only=only, overrides=args.overrides, force=args.force,
            notebooks_dir=args.notebooks, log_output=args.verbose)
    except (ConfigError, NotebookFailed, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"all done: results in {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
