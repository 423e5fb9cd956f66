"""The Hugging Face token (never shown, never pickled, never in a notebook) and uploads to the Hub."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import types

import nbformat
import pytest

from nbhelpers import hub, notebooks
from nbhelpers.hub import Secret
from nbhelpers.platform import Platform

FAKE_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"  # token-shaped, not a real one


def kaggle_here(tmp_path, accelerator="cpu") -> Platform:
    return Platform("kaggle", accelerator, "test", tmp_path)


# ---------------------------------------------------------------- secrets


def test_secret_never_shows_its_value():
    s = Secret(FAKE_TOKEN, "environment")
    for text in (repr(s), str(s), f"{s}", f"{s!r}", f"{s:>80}", format(s, ""), str([s]), str({"t": s})):
        assert FAKE_TOKEN not in text and "hidden" in text
    assert s.reveal() == FAKE_TOKEN
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(s)


def test_hf_token_from_environment(tmp_path):
    local = Platform("local", "cpu", "", tmp_path)
    assert hub.hf_token(platform=local, environ={}) is None
    tok = hub.hf_token(platform=local, environ={"HF_TOKEN": f"  {FAKE_TOKEN}\n"})
    assert tok.reveal() == FAKE_TOKEN and tok.source == "environment"


def test_hf_token_from_kaggle_secrets(monkeypatch, tmp_path):
    asked = []

    class UserSecretsClient:
        def get_secret(self, name):
            asked.append(name)
            if name != "HF_TOKEN":
                raise KeyError(name)  # what an unattached secret looks like
            return FAKE_TOKEN

    monkeypatch.setitem(sys.modules, "kaggle_secrets", types.SimpleNamespace(UserSecretsClient=UserSecretsClient))
    tok = hub.hf_token(platform=kaggle_here(tmp_path), environ={"HF_TOKEN": "hf_from_env_should_lose"})
    assert tok.reveal() == FAKE_TOKEN and tok.source == "kaggle_secrets"
    fallback = hub.hf_token("OTHER", platform=kaggle_here(tmp_path), environ={"OTHER": "hf_env"})
    assert fallback.source == "environment" and asked == ["HF_TOKEN", "OTHER"]


def test_hf_token_from_colab_userdata(monkeypatch, tmp_path):
    userdata = types.SimpleNamespace(get=lambda name: FAKE_TOKEN if name == "HF_TOKEN" else None)
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    google = sys.modules.get("google") or types.ModuleType("google")
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    tok = hub.hf_token(platform=Platform("colab", "gpu", "", tmp_path), environ={})
    assert tok.reveal() == FAKE_TOKEN and tok.source == "colab_userdata"


def test_scrub_and_find_secrets(tmp_path):
    s = Secret("not-token-shaped-secret", "environment")
    assert hub.scrub(f"auth {FAKE_TOKEN} and not-token-shaped-secret", s) == "auth hf_*** and ***"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(tok)"), nbformat.v4.new_code_cell("x")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"token {FAKE_TOKEN}\n")]
    path = tmp_path / "leak.ipynb"
    nbformat.write(nb, path)
    assert hub.find_secrets(path) == ["leak.ipynb: cell 1 outputs"]
    nb.cells[1].outputs = []
    nbformat.write(nb, path)
    assert hub.find_secrets(path) == []
    assert hub.find_secrets(path, "print(tok)") == ["leak.ipynb: cell 0 source"]


def _hf_folder(tmp_path):  # the upload itself is tested against a local Hub in test_push.py
    folder = tmp_path / "final"
    folder.mkdir()
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json", "model.safetensors"):
        (folder / name).write_text("{}")
    return folder


def test_push_to_hub_checks_its_inputs(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json"):
        hub.push_to_hub(tmp_path, "me/x", Secret("t", "environment"))
    with pytest.raises(ValueError, match="owner/name"):
        hub.push_to_hub(_hf_folder(tmp_path), "no-slash", Secret("t", "environment"))
    monkeypatch.setattr(hub, "hf_token", lambda *a, **k: None)
    with pytest.raises(hub.PlatformError, match="Secrets"):
        hub.push_to_hub(tmp_path / "final", "me/x")


@pytest.mark.slow
def test_executed_notebook_keeps_the_token_out_of_its_outputs(tmp_path):
    """The setup cell and every way a notebook might show the token, executed with a fake HF_TOKEN set."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        notebooks.setup_cell(),
        "tok = nbhelpers.hub.hf_token()\ntok",
        "print(tok, [tok], {'token': tok}, f'{tok}')",
        "import logging\nlogging.basicConfig()\nlogging.getLogger('x').warning('token %s %r', tok, tok)",
        "from IPython.display import display\ndisplay(tok)",
        "assert tok.reveal().startswith('hf_') and tok.source == 'environment'",
    )]
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "COLAB_"))}
    env["HF_TOKEN"] = FAKE_TOKEN
    proc = subprocess.run([sys.executable, "-m", "papermill", str(src), str(out), "--kernel", "python3",
                           "--no-progress-bar"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    executed = json.loads(out.read_text())
    shown = json.dumps([c.get("outputs", []) for c in executed["cells"]])
    assert "value hidden" in shown and "platform: local" in shown
    assert hub.find_secrets(out, FAKE_TOKEN) == []
    assert FAKE_TOKEN not in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.notebooks
def test_smoke_notebook_outputs_hold_no_token(tmp_path):
    """The first real notebook, run by the runner with a fake HF_TOKEN in the environment, then scanned."""
    sources = notebooks.discover()
    if not sources or not sources[0].stem.startswith("01"):
        pytest.skip("notebook 01 is not there yet")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "COLAB_"))}
    env["HF_TOKEN"] = FAKE_TOKEN
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "run", "--profile", "smoke", "--run-dir", str(run_dir),
                           "--only", sources[0].stem[:2]], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    executed = sorted((run_dir / "notebooks").glob("*.ipynb"))
    assert executed, "the runner wrote no executed notebook"
    for nb in executed:
        assert hub.find_secrets(nb, FAKE_TOKEN) == []
    assert FAKE_TOKEN not in proc.stdout + proc.stderr


def test_the_platforms_token_is_exported_for_hub_reads_and_never_shown(monkeypatch, tmp_path, capsys):
    """Kaggle's secret becomes HF_TOKEN in the environment (datasets, huggingface_hub and child processes read it)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    secrets = types.SimpleNamespace(UserSecretsClient=lambda: types.SimpleNamespace(
        get_secret=lambda name: FAKE_TOKEN if name == "HF_TOKEN" else None))
    monkeypatch.setitem(sys.modules, "kaggle_secrets", secrets)
    message = hub.export_hf_token(platform=kaggle_here(tmp_path))
    assert os.environ["HF_TOKEN"] == FAKE_TOKEN and "kaggle_secrets" in message
    assert FAKE_TOKEN not in message + capsys.readouterr().out
    child = subprocess.run([sys.executable, "-c", "import os; print(len(os.environ['HF_TOKEN']))"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(len(FAKE_TOKEN))  # the producer and torchrun's ranks see it too
    assert "kept" in hub.export_hf_token(platform=kaggle_here(tmp_path))
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delitem(sys.modules, "kaggle_secrets")
    assert "anonymous" in hub.export_hf_token(platform=Platform("local", "cpu", "test", tmp_path))
    assert "HF_TOKEN" not in os.environ
