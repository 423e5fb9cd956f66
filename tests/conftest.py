"""Shared test helpers: Debian's Japanese texts (real prose no one here wrote)."""

from __future__ import annotations

import pytest

from nbhelpers import sources


@pytest.fixture(scope="session")
def debian_files():
    """Debian's Japanese documentation files; skips when the packages are not installed."""
    files = sources.debian_files()
    if not files:
        pytest.skip("Debian's Japanese texts are absent: apt-get install debian-reference-ja manpages-ja")
    return files


@pytest.fixture(scope="session")
def debian_lines(debian_files):
    """Every non-empty line of the Debian Japanese texts, as plain text."""
    lines = []
    for path in debian_files:
        lines += [ln for ln in sources.read_debian_file(path).splitlines() if ln.strip()]
    return lines


@pytest.fixture(scope="session")
def read_only():
    """run(paths, argv, **kw): argv in a mount namespace where each of `paths` is a read-only bind mount.

    A read-only file system refuses writes even to root (the tests run as root here, where permission
    bits stop nothing): EROFS, as on a read-only disk or Kaggle's /kaggle/input. Skips where user
    namespaces are not allowed.
    """
    import shutil
    import subprocess

    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("unshare -rm (a user and mount namespace) is not allowed here")

    def run(paths, argv, **kwargs):
        mounts = " && ".join(f'mount --bind "{p}" "{p}" && mount -o remount,bind,ro "{p}"' for p in paths)
        return subprocess.run(["unshare", "-rm", "sh", "-c", f'{mounts} && exec "$@"', "sh", *map(str, argv)],
                              **kwargs)

    return run
