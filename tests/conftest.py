"""Shared test helpers: Debian's Japanese texts (real prose no one here wrote), a small SentencePiece model, one
torch thread for loop tests."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from nbhelpers import sources

EOS = 3


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A small SentencePiece model (unk/pad/bos/eos = 0/1/2/3, byte fallback) trained on bundled text."""
    import sentencepiece

    texts = list(sources.iter_texts("bundled_prose")) + list(itertools.islice(sources.iter_texts("arithmetic"), 300))
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=1500, model_type="unigram",
        character_coverage=0.995, byte_fallback=True, unk_id=0, pad_id=1, bos_id=2, eos_id=EOS, num_threads=1,
        split_by_whitespace=False, max_sentence_length=20000, minloglevel=2)
    out = tmp_path_factory.mktemp("tok")
    (out / "spm.model").write_bytes(model.getvalue())
    return out


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


@pytest.fixture
def one_thread():
    """torch on one thread for the test (the same kernels run after run: losses compare bitwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
