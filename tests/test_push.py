"""`python -m nbhelpers push` and hub.push_stage against a local stand-in of the Hub's HTTP API (tests/hub_server.py)."""

from __future__ import annotations

import json

import pytest
import torch
from hub_server import LocalHub
from run_records import make_run
from safetensors import safe_open

from nbhelpers import hub
from nbhelpers.__main__ import main
from nbhelpers.credentials import Secret

TOKEN = "hf_" + "ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210"  # token-shaped, not a real one


@pytest.fixture
def local_hub(monkeypatch):
    """The stand-in, with huggingface_hub pointed at it through its endpoint setting and the token in HF_TOKEN."""
    import huggingface_hub.constants as c

    with LocalHub(TOKEN) as server:
        monkeypatch.setattr(c, "ENDPOINT", server.url)
        monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", True)  # the LFS path: the stand-in speaks no Xet
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("push") / "run")


def test_push_uploads_bf16_weights_tokenizer_and_card_privately(run, local_hub, capsys):
    assert main(["push", "--run-dir", str(run), "--stage", "sft", "--repo", "me/ja-neox-sft"]) == 0
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and "uploaded: " in out.out
    repo = local_hub.state.repos["me/ja-neox-sft"]
    assert repo["private"] is True
    files = repo["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md"} <= set(files)
    weights = run / "sft" / "final" / "model.safetensors"
    assert len(files["model.safetensors"]) < 0.6 * weights.stat().st_size  # 2 bytes a weight, not 4
    pushed = run.parent / "pushed.safetensors"
    pushed.write_bytes(files["model.safetensors"])
    with safe_open(str(pushed), "pt") as f, safe_open(str(weights), "pt") as g:
        assert set(f.keys()) == set(g.keys())
        for name in f.keys():  # noqa: SIM118
            a, b = f.get_tensor(name), g.get_tensor(name)
            if b.is_floating_point():
                assert a.dtype == torch.bfloat16 and torch.equal(a, b.to(torch.bfloat16))
    assert json.loads(files["config.json"])["dtype"] == "bfloat16"
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "language: ja" in card and "pipeline_tag: text-generation" in card
    meta = local_hub.state.validated[-1]
    assert meta["language"] == "ja" and meta["library_name"] == "transformers" and meta["license"] == "cc-by-sa-4.0"
    assert "kunishou/databricks-dolly-15k-ja" in meta["datasets"] and "wikimedia/wikipedia" in meta["datasets"]
    assert "me/ja-neox-sft" in card and "kunishou/databricks-dolly-15k-ja" in card
    assert not (run / "sft" / "final" / "README.md").exists() or "me/ja-neox-sft" not in (
        run / "sft" / "final" / "README.md").read_text()  # the folder itself is never changed by a push


def test_public_and_fp16(run, local_hub):
    assert main(["push", "--run-dir", str(run), "--stage", "pretrain", "--repo", "me/base", "--public",
                 "--dtype", "fp16"]) == 0
    repo = local_hub.state.repos["me/base"]
    assert repo["private"] is False and json.loads(repo["files"]["config.json"])["dtype"] == "float16"
    assert "base-model" in repo["files"]["README.md"].decode()


def test_a_failed_commit_says_what_failed_and_a_retry_finishes_without_resending(run, local_hub):
    local_hub.state.fail_commits = 1
    with pytest.raises(hub.PlatformError) as err:
        hub.push_stage(run, "sft", "me/retry")
    msg = str(err.value)
    assert "while uploading" in msg and "500" in msg and "run the same command again" in msg and TOKEN not in msg
    assert local_hub.state.repos["me/retry"]["files"] == {}
    sent = list(local_hub.state.lfs_puts)
    assert sent, "the weights went up before the commit failed"
    hub.push_stage(run, "sft", "me/retry")
    assert "model.safetensors" in local_hub.state.repos["me/retry"]["files"]
    assert local_hub.state.lfs_puts == sent  # the weights were not sent twice


def test_a_wrong_token_is_reported_without_the_token(run, local_hub, monkeypatch):
    wrong = "hf_" + "Q" * 34
    with pytest.raises(hub.PlatformError) as err:
        hub.push_stage(run, "sft", "me/x", token=Secret(wrong, "environment"))
    assert "401" in str(err.value) and wrong not in str(err.value) and "creating the repository" in str(err.value)


def test_dry_run_lists_files_and_sizes_and_sends_nothing(run, local_hub, capsys):
    assert main(["push", "--run-dir", str(run), "--stage", "sft", "--repo", "me/dry", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert local_hub.state.requests == []
    weights = run / "sft" / "final" / "model.safetensors"
    listed = {f.path: f.size for f in hub.plan_upload(run / "sft" / "final")}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= set(listed)
    assert weights.stat().st_size * 0.45 < listed["model.safetensors"] < weights.stat().st_size * 0.6
    assert "model.safetensors" in out and "MB" in out and "private" in out and "total" in out


@pytest.mark.parametrize("args, message", [
    (["--repo", "no-slash"], "owner/name"),
    (["--repo", "me/a/b"], "owner/name"),
    (["--repo", "me/bad name"], "owner/name"),
])
def test_bad_repo_names_are_refused_before_anything(run, local_hub, capsys, args, message):
    assert main(["push", "--run-dir", str(run), "--stage", "sft", *args]) == 1
    assert message in capsys.readouterr().err and local_hub.state.requests == []


def test_a_stage_without_final_names_the_notebook(tmp_path, local_hub, capsys):
    run = make_run(tmp_path / "run", stages=("pretrain",), evaluated=False)
    assert main(["push", "--run-dir", str(run), "--stage", "sft", "--repo", "me/x"]) == 1
    err = capsys.readouterr().err
    assert "sft/final" in err and "04_instruction_tuning" in err and local_hub.state.requests == []


def test_no_token_says_where_to_put_one(run, local_hub, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    before = sorted(p.name for p in (run / "sft" / "final").iterdir())
    assert main(["push", "--run-dir", str(run), "--stage", "sft", "--repo", "me/x"]) == 1
    assert "Secrets" in capsys.readouterr().err and local_hub.state.requests == []
    assert sorted(p.name for p in (run / "sft" / "final").iterdir()) == before


def test_the_chat_template_travels_with_the_tokenizer(tmp_path, local_hub):
    run = make_run(tmp_path / "run", evaluated=False)
    template = "{{ eos_token }}{% for m in messages %}### 指示:\n{{ m['content'] }}\n\n### 応答:\n{% endfor %}"
    (run / "sft" / "final" / "chat_template.jinja").write_text(template, encoding="utf-8")
    notes = {f.path: f.note for f in hub.plan_upload(run / "sft" / "final")}
    assert notes["chat_template.jinja"] == "the chat template"
    hub.push_stage(run, "sft", "me/chat")
    files = local_hub.state.repos["me/chat"]["files"]
    assert files["chat_template.jinja"].decode() == template and "apply_chat_template" in files["README.md"].decode()
