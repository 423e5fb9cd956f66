"""kaggle-metadata.json and the per-notebook kernel folders, checked against the Kaggle CLI's documented fields."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from nbhelpers import kaggle_kernels as kk
from nbhelpers.__main__ import main
from nbhelpers.rundir import STAGES

ROOT = Path(__file__).resolve().parent.parent
TOP = ROOT / "kaggle-metadata.json"
# What `kaggle kernels push` requires or reads (Kaggle CLI docs/kernels_metadata.md and kernels_push()).
REQUIRED = ("id", "title", "code_file", "language", "kernel_type")
DOCUMENTED = {"id", "id_no", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu",
              "enable_tpu", "enable_internet", "machine_shape", "dataset_sources", "competition_sources",
              "kernel_sources", "model_sources", "keywords", "docker_image", "docker_image_pinning_type"}


def good() -> dict:
    return kk.kernel_metadata("03_pretrain", "alice", "kaggle_tpu_v5e8", ["01_tokenizer", "02_corpus"])


def test_top_level_file_is_valid_for_kernels_push():
    meta = json.loads(TOP.read_text(encoding="utf-8"))
    assert set(meta) <= DOCUMENTED and all(meta.get(k) for k in REQUIRED)
    assert meta["language"] == "python" and meta["kernel_type"] == "notebook"
    assert meta["machine_shape"] == "TpuV5E8" and meta["enable_tpu"] is True and meta["enable_gpu"] is False
    assert meta["enable_internet"] is True  # the setup cell pip-installs nbhelpers
    kk.validate_kernel_metadata(meta, where=str(TOP))
    if (ROOT / meta["code_file"]).exists() or (ROOT / "notebooks/03_pretrain.py").exists():
        kk.validate_kernel_metadata(meta, ROOT, where=str(TOP))  # code_file exists relative to the file


def test_top_level_file_is_what_the_generator_writes_for_03():
    meta = json.loads(TOP.read_text(encoding="utf-8"))
    owner = meta["id"].split("/")[0]
    earlier = [STAGES[s][0] for s in ("tokenizer", "corpus")]
    assert meta == kk.kernel_metadata("03_pretrain", owner, "kaggle_tpu_v5e8", earlier,
                                            code_file="notebooks/03_pretrain.ipynb", base=meta)
    # 03 reads 01's and 02's outputs, and its own previous version's (to resume from its checkpoint)
    assert meta["kernel_sources"] == [f"{owner}/nbhelpers-01-tokenizer", f"{owner}/nbhelpers-02-corpus",
                                      f"{owner}/nbhelpers-03-pretrain"]


def test_machine_shapes_per_profile():
    t4 = kk.kernel_metadata("03_pretrain", "alice", "kaggle_t4x2")
    assert (t4["machine_shape"], t4["enable_gpu"], t4["enable_tpu"]) == ("NvidiaTeslaT4", True, False)
    tpu = kk.kernel_metadata("04_instruction_tuning", "alice", "kaggle_tpu_v5e8")
    assert (tpu["machine_shape"], tpu["enable_gpu"], tpu["enable_tpu"]) == ("TpuV5E8", False, True)
    cpu = kk.kernel_metadata("01_tokenizer", "alice", "kaggle_tpu_v5e8")  # no accelerator quota spent
    assert (cpu["machine_shape"], cpu["enable_gpu"], cpu["enable_tpu"]) == ("", False, False)
    with pytest.raises(ValueError, match="does not run on Kaggle"):
        kk.kernel_metadata("03_pretrain", "alice", "colab_t4")
    with pytest.raises(ValueError, match="Kaggle user"):
        kk.kernel_metadata("03_pretrain", "a/b", "kaggle_t4x2")


@pytest.mark.parametrize(("change", "message"), [
    ({"enable_gpu": True, "enable_tpu": False, "machine_shape": ""}, "P100"),
    ({"machine_shape": "NvidiaTeslaP100", "enable_gpu": True, "enable_tpu": False}, "retired"),
    ({"machine_shape": "TpuV38"}, "retired"),
    ({"machine_shape": "NvidiaT4x2"}, "machine_shape must be one of"),
    ({"machine_shape": "NvidiaTeslaT4"}, "is a GPU"),
    ({"enable_gpu": True}, "both true"),
    ({"enable_tpu": "yes"}, "true or false"),
    ({"enable_internet": False}, "enable_internet"),
    ({"language": "julia"}, "language"),
    ({"kernel_type": "app"}, "kernel_type"),
    ({"code_file": "03_pretrain.py"}, "ipynb"),
    ({"code_file": ""}, "code_file"),
    ({"title": "nbhelpers 03 pre-train"}, "gives the slug"),
    ({"title": "abc"}, "five characters"),
    ({"id": "alice/nbhelpers-03-pretrain/2"}, "no version"),
    ({"id": "", "id_no": None}, "id"),
    ({"kernel_sources": ["nbhelpers-01-tokenizer"]}, "owner/slug"),
    ({"dataset_sources": "alice/data"}, "must be a list"),
    ({"accelerator": "TpuV5E8"}, "unknown field"),
])
def test_validation_names_the_bad_field(change, message):
    meta = {**good(), **change}
    with pytest.raises(ValueError, match=message):
        kk.validate_kernel_metadata(meta, where="k.json")


def test_string_booleans_are_accepted_like_the_cli():
    meta = {**good(), "is_private": "false", "enable_tpu": "true", "enable_gpu": "false", "enable_internet": "True"}
    kk.validate_kernel_metadata(meta)


def test_code_file_must_exist_next_to_the_metadata(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        kk.validate_kernel_metadata(good(), tmp_path)
    (tmp_path / "03_pretrain.ipynb").write_text("{}")
    kk.validate_kernel_metadata(good(), tmp_path)


SOURCE = '''# %% [markdown]
# # {nn} · Stage
#
# Text.

# %%
import nbhelpers

# %% tags=["parameters"]
PROFILE = "smoke"  # profiles
RUN_DIR = ""  # empty = the platform default
OVERRIDES = []  # none

# %%
print(PROFILE)
'''


@pytest.fixture
def fake_notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for stem in ("01_tokenizer", "02_corpus", "03_pretrain"):
        (folder / f"{stem}.py").write_text(SOURCE.replace("{nn}", stem[:2]), encoding="utf-8")
    return folder


def test_generator_writes_chained_kernel_folders(fake_notebooks, tmp_path):
    base = {"is_private": False, "dataset_sources": ["alice/extra-text"]}
    folders = kk.write_kaggle_kernels(tmp_path / "out", "alice", "kaggle_t4x2", fake_notebooks, base=base)
    assert [f.name for f in folders] == ["01_tokenizer", "02_corpus", "03_pretrain"]
    metas = [json.loads((f / "kernel-metadata.json").read_text()) for f in folders]
    assert [m["kernel_sources"] for m in metas] == [
        [], ["alice/nbhelpers-01-tokenizer"],
        ["alice/nbhelpers-01-tokenizer", "alice/nbhelpers-02-corpus", "alice/nbhelpers-03-pretrain"]]
    assert [m["machine_shape"] for m in metas] == ["", "", "NvidiaTeslaT4"]
    assert all(m["is_private"] is False and m["dataset_sources"] == ["alice/extra-text"] for m in metas)
    for folder, meta in zip(folders, metas):
        kk.validate_kernel_metadata(meta, folder)
        nb = nbformat.read(folder / meta["code_file"], as_version=4)
        nbformat.validate(nb)
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        at = tags.index(["parameters"])
        assert tags[at + 1] == ["injected-parameters"] and 'PROFILE = "kaggle_t4x2"' in nb.cells[at + 1].source
        assert "nbhelpers.platform.setup()" in nb.cells[1].source  # the template's setup cell, not the stale one
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_generator_only_and_errors(fake_notebooks, tmp_path):
    folders = kk.write_kaggle_kernels(tmp_path / "out", "alice", "kaggle_tpu_v5e8", fake_notebooks, only=["03"])
    assert [f.name for f in folders] == ["03_pretrain"]
    meta = json.loads((folders[0] / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == ["alice/nbhelpers-01-tokenizer", "alice/nbhelpers-02-corpus",
                                      "alice/nbhelpers-03-pretrain"]
    with pytest.raises(ValueError, match="no such notebook"):
        kk.write_kaggle_kernels(tmp_path / "out", "alice", "kaggle_tpu_v5e8", fake_notebooks, only=["09"])


def test_cli_writes_folders_and_prints_push_commands(fake_notebooks, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    out = tmp_path / "kernels"
    assert main(["kaggle", "--notebooks", str(fake_notebooks), "--out", str(out)]) == 1
    assert "--user" in capsys.readouterr().err
    assert main(["kaggle", "--user", "alice", "--notebooks", str(fake_notebooks), "--out", str(out),
                 "--profile", "kaggle_tpu_v5e8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"kaggle kernels push -p {out / '01_tokenizer'}")
    assert "alice/nbhelpers-03-pretrain on TpuV5E8" in lines[2]
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    assert main(["kaggle", "--notebooks", str(fake_notebooks), "--out", str(out), "--only", "02"]) == 0
    assert json.loads((out / "02_corpus/kernel-metadata.json").read_text())["id"] == "bob/nbhelpers-02-corpus"


def test_kernel_folders_pass_the_kaggle_cli_checks(fake_notebooks, tmp_path):
    """The Kaggle CLI's own `kernels push` reads each folder; its request is captured instead of sent."""
    extended = pytest.importorskip("kaggle.api.kaggle_api_extended", reason="the kaggle CLI is not installed")
    folders = kk.write_kaggle_kernels(tmp_path / "out", "alice", "kaggle_tpu_v5e8", fake_notebooks)
    sent = []

    class Client:
        def __enter__(self):
            kernels_api_client = type("K", (), {"save_kernel": lambda _self, request: sent.append(request)})()
            self.kernels = type("Kernels", (), {"kernels_api_client": kernels_api_client})()
            return self

        def __exit__(self, *exc):
            return False

    api = extended.KaggleApi()
    api.build_kaggle_client = Client
    for folder in folders:
        api.kernels_push(str(folder))
    assert [r.slug for r in sent] == [f"alice/nbhelpers-0{i}-{n}" for i, n in ((1, "tokenizer"), (2, "corpus"),
                                                                                   (3, "pretrain"))]
    assert [(r.enable_gpu, r.enable_tpu, r.machine_shape or "") for r in sent] == [
        (False, False, ""), (False, False, ""), (False, True, "TpuV5E8")]
    assert list(sent[2].kernel_data_sources) == ["alice/nbhelpers-01-tokenizer", "alice/nbhelpers-02-corpus",
                                                 "alice/nbhelpers-03-pretrain"]
    assert all(r.enable_internet and r.is_private and r.kernel_type == "notebook" for r in sent)
