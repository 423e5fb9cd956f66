"""The numbered notebooks: find them, keep each `.ipynb` twin in sync with its jupytext `.py` source, and
write every notebook's badge line and setup cell from one template built from `nbhelpers.REPO_URL` / `REPO_REF`."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat

NOTEBOOK_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")
GITHUB_URL = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")
BADGE_LINE = re.compile(r"^# \[!\[Open in (Colab|Kaggle)\]")
CELL_MARKER = re.compile(r"^# %%")

# The setup cell. It runs before nbhelpers exists, so it uses only the standard library. pip gets a constraints
# file pinning the torch (and torch_xla) already installed: pip still installs every other missing dependency
# (--no-deps would skip them, and Kaggle / Colab lack some), but cannot choose another torch; a dependency that
# needs one makes pip fail with a message instead of silently breaking the image's CUDA or TPU build.
# On a CUDA machine (nvidia-smi present) the cell also installs the `gpu` extra's bitsandbytes when it is missing:
# the T4 profiles train with its 8-bit AdamW. TPU and CPU sessions never get it (it needs CUDA).
# A wheel of nbhelpers attached as a Kaggle input (a dataset) is installed in preference to the repository, so a
# release that is not (yet) served from GitHub still installs; when pip fails, the cell says what to do.
# Only the evaluation notebook (06) installs the `eval` extra (lm-eval and its Japanese extra, which compiles
# neologdn on some Pythons): 01-05 install without it.
GPU_REQUIREMENT = "bitsandbytes>=0.43"  # pyproject.toml's `gpu` extra (a test keeps the two equal)
EVAL_REQUIREMENT = "lm-eval[hf,japanese-leaderboard]>=0.4.13"  # pyproject.toml's `eval` extra (a test keeps them equal)
EVAL_NOTEBOOKS = ("06_eval",)  # the notebooks whose setup cell installs the `eval` extra
WHEEL_HELP = "docs/PLATFORMS.md: Installing from a wheel"
SETUP_TEMPLATE = """\
# Setup (Kaggle, Colab or local): install nbhelpers<<extra>> when it is missing (a wheel attached as a Kaggle input,
# else REPO_URL at REPO_REF) and on a CUDA GPU the bitsandbytes its 8-bit AdamW needs, keeping the platform's
# torch / torch_xla (pip gets a constraint pinning them); then show the platform and a short health check.
REPO_URL = "<<url>>"
REPO_REF = "<<ref>>"  # the release to install: a tag, branch or commit of REPO_URL
import glob, importlib.metadata as md, importlib.util, os, shutil, subprocess, sys, tempfile
inputs = os.path.join(os.environ.get("NBHELPERS_PLATFORM_ROOT") or "/", "kaggle", "input")
wheels = sorted(w for depth in range(1, 5) for w in glob.glob(os.path.join(inputs, *["*"] * depth, "nbhelpers-*.whl")))
package = <<wheel>> if wheels else f"nbhelpers<<extra>> @ git+{REPO_URL}@{REPO_REF}"
missing = [] if importlib.util.find_spec("nbhelpers") else [package]
<<eval>>if shutil.which("nvidia-smi") and importlib.util.find_spec("bitsandbytes") is None:
    missing.append("<<gpu>>")
if missing:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write("\\n".join(f"{d}=={md.version(d)}" for d in ("torch", "torch_xla") if importlib.util.find_spec(d)))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", pins.name, *missing], capture_output=True, text=True)
    if pip.returncode:
        raise RuntimeError(f"{pip.stderr[-2000:]}\\npip could not install {', '.join(missing)}. If it could not fetch "
                           f"{REPO_URL} at {REPO_REF}, that release is not published there: push the repository and "
                           f"its tag (git push origin {REPO_REF}), or set REPO_REF above to a branch or commit that "
                           "exists, or upload a wheel of nbhelpers as a Kaggle dataset and add it as an input "
                           "(<<wheelhelp>>); then run this cell again")
    importlib.invalidate_caches()
import nbhelpers
nbhelpers.platform.setup()
print(nbhelpers.hub.export_hf_token())  # the platform's HF token for hub reads too (never shown): higher rate limits
nbhelpers.doctor.short()
"""
EVAL_LINES = """\
if not missing and importlib.util.find_spec("lm_eval") is None:
    missing.append("<<evalreq>>")
"""


def repo(url: str | None = None, ref: str | None = None) -> tuple[str, str, str, str]:
    """(repository URL, owner, name, ref) from nbhelpers.REPO_URL / REPO_REF unless given."""
    import nbhelpers

    url = (url or nbhelpers.REPO_URL).rstrip("/")
    ref = ref or nbhelpers.REPO_REF
    m = GITHUB_URL.match(url)
    if not m:
        raise ValueError(f"nbhelpers.REPO_URL: expected https://github.com/OWNER/NAME (Colab opens GitHub notebooks "
                         f"only), got {url!r}")
    if not ref or any(c in ref for c in " ?#"):
        raise ValueError(f"nbhelpers.REPO_REF: expected a branch, tag or commit, got {ref!r}")
    return f"https://github.com/{m.group(1)}/{m.group(2)}", m.group(1), m.group(2), ref


def colab_url(stem: str, url: str | None = None, ref: str | None = None) -> str:
    """The link that opens notebooks/STEM.ipynb of the repository in Colab."""
    _, owner, name, ref = repo(url, ref)
    return f"https://colab.research.google.com/github/{owner}/{name}/blob/{ref}/notebooks/{stem}.ipynb"


def kaggle_url(stem: str, url: str | None = None, ref: str | None = None) -> str:
    """The link that imports notebooks/STEM.ipynb of the repository into a new Kaggle notebook."""
    base, _, _, ref = repo(url, ref)
    return f"https://kaggle.com/kernels/welcome?src={base}/blob/{ref}/notebooks/{stem}.ipynb"


def badge_lines(stem: str, url: str | None = None, ref: str | None = None) -> list[str]:
    """The title cell's two badge lines (as jupytext markdown comment lines)."""
    return [
        f"# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(stem, url, ref)})",
        f"# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]({kaggle_url(stem, url, ref)})",
    ]


def setup_cell(url: str | None = None, ref: str | None = None, stem: str = "") -> str:
    """The setup cell's code for notebook `stem` (06 installs the `eval` extra too)."""
    base, _, _, ref = repo(url, ref)
    evaluates = stem in EVAL_NOTEBOOKS
    cell = SETUP_TEMPLATE.replace("<<eval>>", EVAL_LINES if evaluates else "")
    wheel = 'wheels[-1] + "[eval]"' if evaluates else "wheels[-1]"
    for key, value in (("url", base), ("ref", ref), ("extra", "[eval]" if evaluates else ""), ("wheel", wheel),
                       ("gpu", GPU_REQUIREMENT),
                       ("evalreq", EVAL_REQUIREMENT), ("wheelhelp", WHEEL_HELP)):
        cell = cell.replace(f"<<{key}>>", value)
    return cell


def _split_cells(text: str) -> tuple[str, list[list[str]]]:
    """(header before the first cell, cells as lists of lines, each starting with its `# %%` marker)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if CELL_MARKER.match(line)]
    if not starts:
        return text, []
    header = "\n".join(lines[: starts[0]])
    cells = [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]
    return header, cells


def apply_template(text: str, stem: str, url: str | None = None, ref: str | None = None, where: str = "") -> str:
    """The notebook source `text` with its badge line and setup cell written from the template."""
    header, cells = _split_cells(text)
    where = where or stem
    if not cells or "[markdown]" not in cells[0][0]:
        raise ValueError(f"{where}: the first cell must be the markdown title cell (# %% [markdown])")
    params = [i for i, c in enumerate(cells) if "parameters" in c[0] and "tags" in c[0]]
    if len(params) != 1:
        raise ValueError(f"{where}: expected exactly one cell tagged parameters, found {len(params)}")

    title = cells[0]
    body_end = len(title)
    while body_end > 1 and not title[body_end - 1].strip():
        body_end -= 1  # trailing blank lines stay after the badges
    found = [i for i, line in enumerate(title) if BADGE_LINE.match(line)]
    if found:
        kept = [line for i, line in enumerate(title[:body_end]) if i not in found]
        at = found[0]
        title = kept[:at] + badge_lines(stem, url, ref) + kept[at:] + title[body_end:]
    else:
        title = title[:body_end] + ["#"] + badge_lines(stem, url, ref) + title[body_end:]
    cells[0] = title

    setup = ["# %%", *setup_cell(url, ref, stem).rstrip("\n").split("\n"), ""]
    code_before = [i for i in range(1, params[0]) if "[markdown]" not in cells[i][0]]
    if code_before:
        cells[code_before[0]] = setup  # the first code cell before the parameters is the setup cell
    else:
        cells.insert(params[0], setup)
    out = "\n".join(["\n".join(c) for c in cells])
    return (header + "\n" if header else "") + out.rstrip("\n") + "\n"


def default_dir() -> Path:
    """The repository's notebooks/ folder (next to the package in a checkout or editable install)."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def discover(directory: Path | None = None) -> list[Path]:
    """The numbered notebook sources (`NN_name.py`) in order."""
    directory = Path(directory or default_dir())
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no notebooks folder at {directory}; pass --notebooks DIR (a clone of the repository has one)"
        )
    return sorted(p for p in directory.iterdir() if NOTEBOOK_NAME.match(p.name))


def to_notebook(source: Path, text: str | None = None) -> nbformat.NotebookNode:
    """Read a jupytext percent source (or its `text`) as a notebook with no outputs."""
    nb = jupytext.reads(text, fmt="py:percent") if text is not None else jupytext.read(source, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.nbformat, nb.nbformat_minor = 4, 5
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.id = f"cell-{i:02d}"  # stable ids keep the committed twin byte-identical across syncs
    return nb


def render(source: Path, text: str | None = None) -> str:
    """The exact text of the `.ipynb` twin of `source` (or of the source `text`)."""
    return nbformat.writes(to_notebook(source, text), version=4) + "\n"


def sync(directory: Path | None = None, check: bool = False) -> list[Path]:
    """Write (or with check=True, only list) sources whose badge line or setup cell differ from the template,
    and `.ipynb` twins that differ from their sources."""
    stale = []
    for source in discover(directory):
        current = source.read_text(encoding="utf-8")
        wanted = apply_template(current, source.stem, where=str(source))
        if wanted != current:
            stale.append(source)
            if not check:
                source.write_text(wanted, encoding="utf-8")
        twin = source.with_suffix(".ipynb")
        text = render(source, wanted)
        if not twin.exists() or twin.read_text(encoding="utf-8") != text:
            stale.append(twin)
            if not check:
                twin.write_text(text, encoding="utf-8")
    return stale


def parameters_cells(source: Path) -> int:
    """How many cells of a notebook source are tagged `parameters`."""
    return sum("parameters" in c.metadata.get("tags", []) for c in to_notebook(source).cells)
