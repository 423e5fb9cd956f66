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
    """wrap(paths) -> the argv prefix that runs a command where each of `paths` is a read-only bind mount.

    A read-only file system refuses writes even to root (the tests run as root here, where permission
    bits stop nothing): EROFS, as on a read-only disk or Kaggle's /kaggle/input. A user and mount
    namespace (unshare -rm) needs no privileges; skips where it is not allowed.
    """
    import shutil
    import subprocess

    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("unshare -rm (a user and mount namespace) is not allowed here")

    def wrap(paths) -> list[str]:
        mounts = " && ".join(f'mount --bind "{p}" "{p}" && mount -o remount,bind,ro "{p}"' for p in paths)
        return ["unshare", "-rm", "sh", "-c", f'{mounts} && exec "$@"', "sh"]

    return wrap
