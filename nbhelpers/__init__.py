"""nbhelpers: train a Japanese GPT-NeoX language model from nothing on free notebook hardware.

The modules stand in one layer order, bottom to top: base (files, layout, registry, platform, dist, ...), config,
data (sources, tokenizer, corpus, ...), compute (model, optim, device, xla, checkpoint, planner, decoding, ...),
use (train, loop, sft, generate, evaluation), provenance, orchestration (rundir, launch, runner, hub, ...), and
the command line. A module imports only from its layer or below; `lint-imports` checks it. docs/ARCHITECTURE.md
says what each module holds.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings

__version__ = "0.1.0"

# The one place a fork changes: notebook badges and setup cells are built from it (`python -m nbhelpers notebooks`).
REPO_URL = "https://github.com/nbhelpers/nbhelpers"
# A release tag, not a branch: a badge opens the notebooks of this release and their setup cell installs the
# package of the same release, so a session started next month runs what this month's did (a branch moves).
REPO_REF = f"v{__version__}"

# Without ipywidgets (papermill's kernels, a bare Jupyter), tqdm.auto draws text bars, which read well in
# saved notebooks too; its advice to install ipywidgets would sit in every notebook's first output.
warnings.filterwarnings("ignore", message="IProgress not found")

# torch's OpenMP threads spin while they wait for each other; on a shared host (Colab's 2 vCPUs beside the corpus
# producer, another notebook) a thread whose core is taken stalls the others: bench/shared_host.py measured
# training at 0.015 of its quiet speed beside one busy process, against 0.9 with passive waits. OpenMP reads it
# once, when torch loads, so it is set only where torch is not loaded yet (`OMP_PASSIVE` says whether it took).
OMP_PASSIVE = os.environ.get("OMP_WAIT_POLICY", "PASSIVE").upper() == "PASSIVE" and "torch" not in sys.modules
if OMP_PASSIVE:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name: str):
    """Import submodules on first use so `import nbhelpers` stays fast and torch-free."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'nbhelpers' has no attribute {name!r}")
