"""Checkpoints: CPU safetensors + optimizer + RNG, atomic commit, pruning, model-configuration checks."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from loop_tiny import tiny_model
from safetensors import SafetensorError, safe_open

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
    saved_opt = ckpt.read_part(path, "optimizer")
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

    monkeypatch.setattr(ckpt.saving, "before_commit", crash)
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
    (path / "state.json").write_text(json.dumps(ckpt.seal_state(state)))
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


# ---------------------------------------------------------------- complete or not; nothing unpickled


def _corrupt_same_size(file):
    data = bytearray(file.read_bytes())
    data[-5] ^= 0xFF  # a byte of tensor data: the size and the header stay right
    file.write_bytes(bytes(data))


def test_state_json_is_written_last_and_lists_every_other_file(tmp_path, monkeypatch):
    model, opt = _trained()
    seen = {}

    def look(tmp, step):  # the moment before the rename that commits the checkpoint
        seen.update(state=json.loads((tmp / "state.json").read_text()), files={p.name for p in tmp.iterdir()})

    monkeypatch.setattr(ckpt.saving, "before_commit", look)
    path = ckpt.save(tmp_path, 3, model=model, optimizer=opt, state={"model_config": ckpt.model_config_dict(model)},
                     scaler=torch.amp.GradScaler("cpu"), arrays={"hashes": np.arange(5, dtype=np.uint64)})
    listed = seen["state"]["files"]
    assert set(listed) == seen["files"] - {"state.json"} == {
        "model.safetensors", "optimizer.safetensors", "scaler.safetensors", "rng_rank0.safetensors",
        "arrays.safetensors"}
    for name, entry in listed.items():
        assert entry["bytes"] == (path / name).stat().st_size and len(entry["crc32"]) == 8
    assert ckpt.verify(path, full=True)["step"] == 3


def test_nothing_is_unpickled_when_a_checkpoint_loads(tmp_path, monkeypatch):
    import pickle

    model, opt = _trained()
    path = _save(tmp_path, 2, model, opt)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    for owner, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(owner, name, refuse)
    fresh, fresh_opt = _trained(seed=3)
    ckpt.load(path, model=fresh, optimizer=fresh_opt)
    for a, b in zip(opt.state.values(), fresh_opt.state.values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"]) and torch.equal(a["step"], b["step"])
    assert fresh_opt.param_groups[0]["betas"] == opt.param_groups[0]["betas"]


@pytest.mark.parametrize("damage, words", [
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-100]),
     ["model.safetensors has", "cut short"]),
    (lambda p: (p / "state.json").write_text('{"step": 4, "fi'), ["state.json is not valid JSON"]),
    (lambda p: (p / "optimizer.safetensors").unlink(), ["optimizer.safetensors is missing"]),
    (lambda p: _corrupt_same_size(p / "optimizer.safetensors"), ["optimizer.safetensors is corrupt", "CRC-32"]),
    (lambda p: (p / "rng_rank0.safetensors").write_bytes(b"\x00" * 7), ["rng_rank0.safetensors has 7 bytes"]),
    (lambda p: _corrupt_same_size(p / "arrays.safetensors"), ["arrays.safetensors is corrupt", "CRC-32"]),
    (lambda p: _corrupt_same_size(p / "scheduler.safetensors"), ["scheduler.safetensors"]),
    (lambda p: _edit_state(p, step=6), ["state.json is corrupt", "hand edit"]),
    (lambda p: _edit_state(p, step=6, seal=True), ["says step 6 but the folder is step_00000008"]),
    (lambda p: _edit_state(p, drop_seal=True), ["state.json has no state_crc32"]),
])
def test_a_damaged_newest_checkpoint_is_named_and_the_earlier_one_resumes(tmp_path, damage, words):
    model, opt = _trained()
    good = _save(tmp_path, 4, model, opt)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    more, more_opt = _trained(seed=5, steps=3)
    sched = torch.optim.lr_scheduler.LambdaLR(more_opt, lambda s: 1.0)
    bad = ckpt.save(tmp_path, 8, model=more, optimizer=more_opt, scheduler=sched,
                    state={"micro_index": 8, "model_config": ckpt.model_config_dict(more)},
                    arrays={"dedup": np.arange(64, dtype=np.uint64)})
    damage(bad)
    fresh, fresh_opt = _trained(seed=9, steps=1)
    with pytest.warns(ckpt.CheckpointWarning) as caught:
        path, state = ckpt.load_latest(tmp_path, model=fresh, optimizer=fresh_opt)
    msg = str(caught[0].message)
    assert path == good and state["step"] == 4
    assert str(bad) in msg and all(w in msg for w in words), msg
    assert f"Resuming from the earlier complete checkpoint {good}" in msg
    assert all(torch.equal(expected[k], v) for k, v in fresh.state_dict().items())
    # set aside, not deleted: the next save is not pruned in favour of it, and it can still be inspected
    assert (tmp_path / "incomplete-step_00000008").is_dir() and ckpt.latest(tmp_path) == good


def _edit_state(path, step=None, seal=False, drop_seal=False):
    """Change state.json as a hand edit would (`seal`: with a valid CRC, as a tool that knows the format would)."""
    state = json.loads((path / "state.json").read_text())
    if step is not None:
        state["step"] = step
    if seal:
        state = ckpt.seal_state(state)
    if drop_seal:
        del state[ckpt.STATE_CRC]
    (path / "state.json").write_text(json.dumps(state, indent=2))


def test_every_byte_of_state_json_is_covered(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path, 5, model, opt, note="x")
    state = json.loads((path / "state.json").read_text())
    assert state[ckpt.STATE_CRC] == ckpt.state_crc(state) and ckpt.verify(path)["note"] == "x"
    text = (path / "state.json").read_text()
    (path / "state.json").write_text(text.replace('"note": "x"', '"note": "y"'))
    with pytest.raises(ckpt.CheckpointIncomplete, match="state.json is corrupt"):
        ckpt.verify(path)
    # a checkpoint of the previous format (no seal) still loads; its step is still checked against its name
    old = _save(tmp_path / "old", 3, model, opt)
    state = json.loads((old / "state.json").read_text())
    del state[ckpt.STATE_CRC]
    (old / "state.json").write_text(json.dumps(dict(state, format=2)))
    assert ckpt.verify(old)["step"] == 3
    (old / "state.json").write_text(json.dumps(dict(state, format=2, step=2)))
    with pytest.raises(ckpt.CheckpointIncomplete, match="says step 2 but the folder is step_00000003"):
        ckpt.verify(old)


def test_no_complete_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path, 4, model, opt)
    (path / "optimizer.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointIncomplete, match=r"no complete checkpoint under .*optimizer.safetensors is missing"):
        ckpt.load_latest(tmp_path, model=model, optimizer=opt)
    assert ckpt.load_latest(tmp_path / "none", model=model) is None


def test_a_part_the_caller_needs_but_the_checkpoint_lacks_is_named(tmp_path):
    model, _ = _trained()
    path = ckpt.save(tmp_path, 1, model=model, optimizer=None, state={"model_config": ckpt.model_config_dict(model)})
    _, opt = _trained()
    with pytest.raises(ckpt.CheckpointIncomplete, match="optimizer.safetensors is missing"):
        ckpt.load(path, model=model, optimizer=opt)


def test_arrays_travel_with_the_checkpoint_and_count_for_completeness(tmp_path):
    model, opt = _trained()
    arrays = {"dedup": np.array([1, 2**64 - 1], dtype=np.uint64), "pos": np.arange(6, dtype=np.int32).reshape(2, 3),
              "seen": np.array([True, False]), "empty": np.zeros(0, dtype=np.float32)}
    path = ckpt.save(tmp_path, 2, model=model, optimizer=opt, state={}, arrays=arrays)
    back = ckpt.read_arrays(path)
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
    assert ckpt.read_arrays(_save(tmp_path / "b", 1, model, opt)) == {}
    (path / "arrays.safetensors").write_bytes((path / "arrays.safetensors").read_bytes()[:-4])
    with pytest.raises(ckpt.CheckpointIncomplete, match="arrays.safetensors has"):
        ckpt.verify(path)
    with pytest.raises(TypeError, match="numpy arrays"):
        ckpt.save(tmp_path / "c", 1, model=model, optimizer=None, state={}, arrays={"x": [1, 2]})


# ---------------------------------------------------------------- pickled files: refused, never run


class _Planted:
    """Unpickling this runs a shell command (what a crafted checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _legacy(path, planted=None):
    """Turn a checkpoint into pickled .pt parts with a state.json that lists no files (a folder never to unpickle)."""
    state = json.loads((path / "state.json").read_text())
    for name in state.pop("files"):
        if name != "model.safetensors":
            obj = ckpt.parts._read_part(path / name, None)
            (path / name).unlink()
            torch.save(obj, path / name.replace(".safetensors", ".pt"))
    for name, obj in (planted or {}).items():
        torch.save(obj, path / name)
    (path / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("planted_in", ["rng_rank0.pt", "optimizer.pt"])
def test_a_planted_pickle_is_refused_and_never_runs(tmp_path, planted_in):
    marker = tmp_path / "ran"
    model, opt = _trained()
    path = _save(tmp_path / "ckpt", 4, model, opt)
    _legacy(path, {planted_in: {"python": _Planted(marker)}})
    with pytest.raises(ckpt.LegacyCheckpoint, match=r"pickled format .*not loaded: unpickling .*Move it away"):
        ckpt.load(path, model=model, optimizer=opt)
    with pytest.raises(ckpt.LegacyCheckpoint):
        ckpt.load_latest(tmp_path / "ckpt", model=model, optimizer=opt)
    assert not marker.exists()


def test_a_state_json_that_lists_a_pickle_is_refused(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path, 4, model, opt)
    torch.save({"python": _Planted(tmp_path / "ran")}, path / "rng_rank0.pt")
    state = json.loads((path / "state.json").read_text())
    state["files"]["rng_rank0.pt"] = {"bytes": (path / "rng_rank0.pt").stat().st_size, "crc32": "00000000"}
    (path / "state.json").write_text(json.dumps(ckpt.seal_state(state)))  # a CRC is no defence: the listing is
    with pytest.raises(ckpt.UnsafeCheckpoint, match="lists 'rng_rank0.pt'.*never unpickles"):
        ckpt.load_latest(tmp_path, model=model, optimizer=opt)
    assert not (tmp_path / "ran").exists()


# ---------------------------------------------------------------- a full disk during a save


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root and mount needed; skipped otherwise): a real ENOSPC from the kernel."""
    import subprocess

    where = tmp_path / "disk"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected ENOSPC test covers the same path")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def _fill_then_fail(root, monkeypatch=None):
    """Save a tiny model, then a large one that cannot fit; the first must stay whole and loadable."""
    model, opt = _trained()
    good = _save(root, 1, model, opt)
    big, big_opt = _trained(hidden=192)  # ~1.9 MB of weights and optimizer state
    with pytest.raises(ckpt.CheckpointWriteError) as err:
        ckpt.save(root, 2, model=big, optimizer=big_opt, state={}, keep_last=2)
    msg = str(err.value)
    assert "could not write checkpoint step_00000002" in msg and "No space left on device" in msg
    assert f"{good}, is untouched" in msg and "Free space there" in msg
    assert sorted(p.name for p in root.iterdir()) == ["step_00000001"]  # the partial files are gone
    fresh, fresh_opt = _trained(seed=4)
    assert ckpt.load_latest(root, model=fresh, optimizer=fresh_opt)[0] == good


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(small_disk):
    _fill_then_fail(small_disk)


def test_an_injected_enospc_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    real = ckpt.parts.save_file

    def short_write(tensors, path, metadata=None):
        if sum(t.numel() * t.element_size() for t in tensors.values()) > 500_000:
            with open(path, "wb") as fh:
                fh.write(b"\0" * 1000)  # what got written before the disk filled
            # what safetensors raises on a full disk (seen on a real one: not an OSError)
            raise SafetensorError(f"Error while serializing: I/O error: No space left on device (os error {errno.ENOSPC})")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt.parts, "save_file", short_write)
    _fill_then_fail(tmp_path)


# ---------------------------------------------------------------- room before a save (Drive's 15 GB)


def _fake_disk(monkeypatch, root, capacity):
    """Free space = `capacity` less what is under `root` (the quota module's shutil.disk_usage)."""
    import types

    from nbhelpers import quota

    monkeypatch.setattr(quota.shutil, "disk_usage", lambda path: types.SimpleNamespace(
        total=capacity, used=quota.dir_bytes(root), free=capacity - quota.dir_bytes(root)))


def test_a_save_that_cannot_fit_stops_before_writing_names_the_space_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    from nbhelpers import quota

    run = tmp_path / "runs" / "mine"
    root = run / "pretrain" / "checkpoints"
    (tmp_path / "runs" / "old_run").mkdir(parents=True)
    (tmp_path / "runs" / "old_run" / "big.bin").write_bytes(b"\0" * 100_000)
    model, opt = _trained()
    good = _save(root, 4, model, opt, keep_last=1)
    size = quota.dir_bytes(good)
    _fake_disk(monkeypatch, tmp_path, quota.dir_bytes(tmp_path) + size // 2)  # half a checkpoint free
    with pytest.raises(ckpt.CheckpointWriteError) as err:
        _save(root, 8, model, opt, keep_last=1)
    msg = str(err.value)
    assert "no room for the next checkpoint" in msg and f"{size / 2 / 1e9:.2f} GB are free" in msg
    assert f"{good} is whole" in msg and "old_run (0.00 GB)" in msg and "trash" in msg
    assert [p.name for p in root.iterdir()] == ["step_00000004"]  # nothing written, nothing deleted
    fresh, fresh_opt = _trained(seed=3)
    assert ckpt.load_latest(root, model=fresh, optimizer=fresh_opt)[0] == good


def test_room_is_made_by_dropping_an_older_checkpoint_never_the_newest(tmp_path, monkeypatch):
    from nbhelpers import quota

    model, opt = _trained()
    _save(tmp_path, 2, model, opt, keep_last=2)
    newest = _save(tmp_path, 4, model, opt, keep_last=2)
    size = quota.dir_bytes(newest)
    _fake_disk(monkeypatch, tmp_path, 3 * size - size // 2)  # two held, room for a third only without the oldest
    with pytest.warns(quota.OutputQuotaWarning, match="before its turn: the next save would pass the free space"):
        _save(tmp_path, 6, model, opt, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]
