"""Checkpoints: CPU safetensors + optimizer + RNG, atomic commit, pruning, model-configuration checks."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from loop_tiny import tiny_model
from safetensors import safe_open

from nbhelpers import checkpoint as ckpt


def _trained(seed=0, hidden=32, steps=2):
    """A tiny model and AdamW with a few steps of state."""
    model = tiny_model(seed=seed, hidden=hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 61, (2, 8))
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(root, step, model, opt, keep_last=2, **state):
    return ckpt.save(root, step, model=model, optimizer=opt, state=dict(state, micro_index=step,
                     model_config=ckpt.model_config_dict(model)), keep_last=keep_last)


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt = _trained()
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    path = _save(tmp_path, 5, model, opt, note="x")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    assert path.name == "step_00000005" and ckpt.latest(tmp_path) == path
    with safe_open(path / "model.safetensors", "pt") as fh:
        assert set(fh.keys()) == set(model.state_dict())
    saved_opt = torch.load(path / "optimizer.pt", weights_only=False)
    assert all(t.device.type == "cpu" for s in saved_opt["state"].values() for t in s.values() if torch.is_tensor(t))

    fresh, fresh_opt = _trained(seed=9, steps=1)
    state = ckpt.load(path, model=fresh, optimizer=fresh_opt)
    assert state["step"] == 5 and state["note"] == "x" and state["micro_index"] == 5
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(opt.state.values(), fresh_opt.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])


def test_keep_last_prunes_older_checkpoints(tmp_path):
    model, opt = _trained()
    for step in (2, 4, 6, 8):
        _save(tmp_path, step, model, opt, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000006", "step_00000008"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000006", "step_00000008"]


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = _trained()
    good = _save(tmp_path, 4, model, opt)

    def crash(tmp, step):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(ckpt, "before_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 8, model, opt)
    assert ckpt.latest(tmp_path) == good
    assert (tmp_path / ".tmp-step_00000008" / "state.json").exists()  # half-done, never seen as complete
    assert ckpt.clean_incomplete(tmp_path) == [tmp_path / ".tmp-step_00000008"]
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000004"]


def test_directory_without_state_json_is_not_a_checkpoint(tmp_path):
    model, opt = _trained()
    good = _save(tmp_path, 4, model, opt)
    (tmp_path / "step_00000009").mkdir()  # e.g. copied by hand, incomplete
    assert ckpt.latest(tmp_path) == good


def test_another_model_configuration_names_the_field(tmp_path):
    model, opt = _trained(hidden=32)
    path = _save(tmp_path, 2, model, opt)
    other, other_opt = _trained(hidden=48)
    with pytest.raises(ckpt.CheckpointMismatch) as err:
        ckpt.load(path, model=other, optimizer=other_opt)
    msg = str(err.value)
    assert "hidden_size=32 in the checkpoint but 48 in this model" in msg
    assert "intermediate_size=64 in the checkpoint but 96" in msg and str(path) in msg


def test_weights_that_do_not_fit_are_named(tmp_path):
    model, opt = _trained(hidden=32)
    path = _save(tmp_path, 2, model, opt)
    state = json.loads((path / "state.json").read_text())
    state["model_config"] = {}  # e.g. an old checkpoint without the recorded configuration
    (path / "state.json").write_text(json.dumps(state))
    other, _ = _trained(hidden=48)
    with pytest.raises(ckpt.CheckpointMismatch, match=r"does not fit this model: .*\(61, 32\) in the checkpoint, \(61, 48\)"):
        ckpt.load(path, model=other)


def test_tied_weights_are_stored_once_and_restored(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=61, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    path = ckpt.save(tmp_path, 1, model=model, optimizer=None, state={"model_config": ckpt.model_config_dict(model)})
    with safe_open(path / "model.safetensors", "pt") as fh:
        assert len(list(fh.keys())) == len(model.state_dict()) - 1
    torch.manual_seed(1)
    fresh = GPTNeoXForCausalLM(cfg)
    ckpt.load(path, model=fresh, restore_rng_state=False)
    assert torch.equal(fresh.get_output_embeddings().weight, model.get_output_embeddings().weight)
    assert fresh.get_output_embeddings().weight is fresh.get_input_embeddings().weight
