"""`python -m nbhelpers release-check`: the version, the tag, REPO_REF, the badges and the `.ipynb` twins agree.

A badge opens the notebooks at REPO_REF and their setup cell installs the package at REPO_REF, so a release is
consistent only when pyproject's version, `nbhelpers.__version__`, REPO_REF (v + the version), the git tag of
that name (when the repository has it) and every notebook's badges, setup cell and twin say the same. CI runs it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import notebooks


@dataclass(frozen=True)
class Check:
    """One agreement the release needs: what was compared and, where it fails, what to do."""

    name: str
    ok: bool
    detail: str
    todo: str = ""

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'FAIL':>4}] {self.name:<10} {self.detail}" + (
            f"\n{'':16}-> {self.todo}" if not self.ok and self.todo else "")


def pyproject_version(root: Path) -> str | None:
    """`version = "..."` of pyproject.toml's [project] table, None when absent."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the one line is read by pattern
        m = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(encoding="utf-8"), re.M)
        return m.group(1) if m else None
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {}).get("version")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def tag_version(root: Path, tag: str) -> str | None:
    """`__version__` in nbhelpers/__init__.py at git tag `tag`, None when the repository has no such tag."""
    if not (_git(root, "tag", "--list", tag) or "").strip():
        return None
    text = _git(root, "show", f"{tag}:nbhelpers/__init__.py") or ""
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else ""


def checks(root: Path | None = None, version: str | None = None, ref: str | None = None) -> list[Check]:
    """Every agreement, in order; `version` and `ref` default to the package's."""
    import nbhelpers

    root = Path(root or notebooks.default_dir().parent)
    version = version or nbhelpers.__version__
    ref = ref or nbhelpers.REPO_REF
    declared = pyproject_version(root)
    out = [Check("version", declared == version, f"pyproject.toml {declared}, nbhelpers.__version__ {version}",
                 "make pyproject.toml's version and nbhelpers/__init__.py's __version__ equal")]
    out.append(Check("REPO_REF", ref == f"v{version}", f"REPO_REF {ref} (expected v{version})",
                     "REPO_REF is v + the version: a badge and the package it installs must be one release"))
    tagged = tag_version(root, ref)
    if tagged is None:
        out.append(Check("tag", True, f"no git tag {ref} here yet: create it on the release commit "
                                      f"(git tag {ref} && git push origin {ref}); the setup cells install it"))
    else:
        out.append(Check("tag", tagged == version, f"git tag {ref} holds version {tagged or 'unknown'}",
                         f"move the tag to the commit of version {version} (git tag -f {ref}) or raise the version"))
    wanted_badges = []
    for source in notebooks.discover(root / "notebooks"):
        text = source.read_text(encoding="utf-8")
        names_ref = f"/blob/{ref}/notebooks/{source.stem}.ipynb" in text and f'REPO_REF = "{ref}"' in text
        if not names_ref or notebooks.apply_template(text, source.stem, ref=ref) != text:
            wanted_badges.append(source.name)
    out.append(Check("badges", not wanted_badges, "every notebook's badges and setup cell name " + ref
                     if not wanted_badges else f"{', '.join(wanted_badges)} name another ref or repository",
                     "python -m nbhelpers notebooks (writes them from REPO_URL / REPO_REF), then commit"))
    stale = [p.name for p in notebooks.sync(root / "notebooks", check=True)]
    out.append(Check("twins", not stale, "every .ipynb equals its jupytext source" if not stale
                     else f"out of date: {', '.join(stale)}", "python -m nbhelpers notebooks, then commit"))
    return out


def main(root: Path | None = None) -> int:
    """Print the checks; 1 when one fails."""
    found = checks(root)
    for check in found:
        print(check.line())
    failed = [c for c in found if not c.ok]
    print("release check: " + ("all agree" if not failed else f"{len(failed)} disagreement(s)"))
    return 1 if failed else 0
