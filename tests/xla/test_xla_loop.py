"""The training loop on torch_xla's CPU PJRT device: graphs, host transfers, numerics, SPMD, FSDP, resume.

Run in the XLA environment: `PJRT_DEVICE=CPU python -m pytest -m xla tests/xla -q`. The tests in this
process use one PJRT device; the 4-device SPMD runs and the kill run go through subprocesses (the device
count is fixed when the PJRT runtime starts).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xla

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny  # noqa: E402

xla_mod = pytest.importorskip("nbhelpers.xla")
if not xla_mod.available():
    pytest.skip("torch_xla is not installed (run in the XLA environment)", allow_module_level=True)

from nbhelpers import checkpoint, loop, xla  # noqa: E402

# Start the PJRT runtime (SPMD over one CPU device) before any backward in this process: the autograd engine
# sizes its per-device queues at its first backward, and an XLA backward after a CPU-only one fails otherwise.
os.environ.setdefault("PJRT_DEVICE", "CPU")
os.environ["CPU_NUM_DEVICES"] = "1"  # the in-process runs are the one-device reference
xla.XlaBackend(precision="fp32")

REL = 1e-3  # XLA against the eager CPU loop, fp32
SAME = 1e-5  # the same backend against itself (a resumed run, another sharding)
MUON_REL = 2e-2  # Muon's bf16 iteration on XLA against the CPU's (rounded at other places)
MUON_SHARDED = 1e-3  # Muon's bf16 iteration on FSDP-sharded matrices against one device (sums in another order)


def _close(a: dict[int, float], b: dict[int, float], rel: float, steps) -> None:
    for s in steps:
        assert abs(a[s] - b[s]) <= rel * abs(b[s]), f"step {s}: {a[s]} vs {b[s]} (rel tol {rel})"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[int, float]]:
    """10 fp32 steps of the same seed and data on the eager CPU loop and on XLA (one device)."""
    root = tmp_path_factory.mktemp("reference")
    tiny.run(root / "cpu", "cpu")
    tiny.run(root / "xla", "xla")
    return {"cpu": tiny.train_losses(root / "cpu"), "xla": tiny.train_losses(root / "xla")}


@pytest.fixture(scope="module")
def muon_reference(tmp_path_factory) -> dict[str, dict[int, float]]:
    """The same 10 steps with train.optimizer=muon; the CPU side in its own process (see the CPU-to-XLA test)."""
    root = tmp_path_factory.mktemp("muon_reference")
    cpu = tiny.subprocess_run(root / "cpu", "--backend", "cpu", "--optimizer", "muon")
    assert cpu.returncode == 0, cpu.stderr[-2000:]
    tiny.run(root / "xla", "xla", optimizer="muon")
    return {"cpu": tiny.train_losses(root / "cpu"), "xla": tiny.train_losses(root / "xla")}


def test_xla_matches_the_eager_cpu_loop(reference):
    assert sorted(reference["xla"]) == list(range(1, 11))
    _close(reference["xla"], reference["cpu"], REL, range(1, 11))
    assert reference["xla"][10] < reference["xla"][1]  # it learns


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_graphs_stay_compiled_and_steps_never_read_the_device(tmp_path, optimizer):
    """03_pretrain's code path on the kaggle_tpu_v5e8 profile (device.select -> XLA, bf16, FSDP over 4 devices,
    eager attention) with the smoke model, 44 steps: logging every 4, evals with greedy samples every 8,
    checkpoints every 12. After the first logging (4), eval (8) and save (12) steps the graph count must not
    move for the 31 steps 13..44, which hold 4 evaluations, 3 checkpoints and the final/ export. With Muon too:
    its Newton-Schulz iterations compile into the step, and no op of it runs on the host."""
    proc = tiny.subprocess_run(tmp_path / "run", "--counters-suite", "--optimizer", optimizer, devices=4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["optimizer"] == {"adamw": "AdamW", "muon": "MuonAdamW"}[optimizer]
    assert report["fallback_ops"] == ["aten::_local_scalar_dense"]  # only the logging steps' reads of the loss
    o = tiny.PROFILE_OVERRIDES
    log, ev, save, steps = o["train.log_every"], o["train.eval_every"], o["train.save_every"], o["train.max_steps"]
    assert (report["backend"], report["precision"], report["attention"]) == ("xla", "bf16", "eager")
    # FSDP: the embedding (53 x 128) is split over the 4 devices along its hidden dimension (53 does not divide)
    assert report["devices"] == 4 and report["weight_sharding"] == "{devices=[1,4]0,1,2,3}"
    assert report["status"] == "done" and report["step"] == steps
    c = {k + 1: xla.Counters(*v) for k, v in enumerate(report["after"])}  # after step k's graph cut
    end, before = xla.Counters(*report["end"]), xla.Counters(*report["before"])
    settled = 13  # the step after the first save: every kind of graph has been seen once
    assert c[steps].compiles == c[settled].compiles, {k: v.compiles for k, v in c.items()}
    assert end.compiles == c[settled].compiles, "the final eval, checkpoint or final/ compiled a new graph"
    assert c[settled].compiles > before.compiles  # the counter does count compilations
    side_steps = {s for s in range(1, steps) if s % log == 0 or s % ev == 0 or s % save == 0}
    for k in range(2, steps + 1):
        if k - 1 in side_steps:
            continue  # step k-1's logging / eval / save ran in between
        moved = c[k].transfers_from_device - c[k - 1].transfers_from_device
        assert moved == 0, f"step {k} read {moved} tensor(s) from the device (not a logging step)"
        assert c[k].scalar_reads == c[k - 1].scalar_reads
    logged = [c[k + 1].transfers_from_device - c[k].transfers_from_device for k in (4, 20)]
    assert all(n > 0 for n in logged), "logging steps read the loss: the transfer counter must see it"
    records = loop.read_metrics(tmp_path / "run" / loop.METRICS_FILE)
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 8, 16, 24, 32, 40, 44]
    samples = [r for r in records if r["kind"] == "samples"]
    assert len(samples) == 7 and all(isinstance(s["text"], str) for s in samples[-1]["samples"])
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert all(x == x for x in losses) and losses[-1] < losses[0]  # finite, and it learns in bf16


def test_muon_on_xla_follows_the_cpu_loop(muon_reference, reference):
    """10 fp32 steps with train.optimizer=muon: XLA (the iteration as plain ops, bf16) against the eager CPU loop
    (fused addmm, bf16); they round differently, so the tolerance is bf16's, not fp32's."""
    on_xla = muon_reference["xla"]
    _close(on_xla, muon_reference["cpu"], MUON_REL, range(1, 11))
    assert on_xla[10] < on_xla[1] - 0.2  # it learns
    assert all(abs(on_xla[s] - reference["xla"][s]) > 1e-3 for s in range(3, 11))  # and it is not AdamW


def test_gradient_checkpointing_on_xla_gives_the_same_losses(tmp_path, reference):
    """train.gradient_checkpointing on XLA recomputes through torch_xla's checkpoint: same numbers."""
    import torch_xla.utils.checkpoint as xcp

    model = tiny.tiny_model()
    loop.enable_checkpointing(model)  # as the loop does; XLA's checkpoint replaces the function
    model = xla.XlaBackend(precision="fp32").prepare_model(model)
    layers = [m for m in model.modules() if type(m).__name__ == "GPTNeoXLayer"]
    assert layers and all(m._gradient_checkpointing_func.func is xcp.checkpoint for m in layers)
    # losses 1-4 follow only warm-up updates, which do not depend on the horizon (4 here, 10 in the reference)
    tiny.run(tmp_path / "run", "xla", gradient_checkpointing=True, max_steps=4)
    _close(tiny.train_losses(tmp_path / "run"), reference["xla"], SAME, range(1, 5))


def test_kill_on_xla_and_resume_continues_the_curve(tmp_path, reference):
    out = tmp_path / "run"
    killed = tiny.subprocess_run(out, "--backend", "xla", "--save-every", "5", "--kill-after", "7")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [p.name for p in checkpoint.list_checkpoints(out / "checkpoints")] == ["step_00000005"]
    result = tiny.run(out, "xla", save_every=5)
    assert result.resumed_from == 5 and result.step == 10
    losses = tiny.train_losses(out)
    _close(losses, reference["xla"], SAME, range(1, 11))  # steps 1-5 kept, 6-10 trained again
    _close(losses, reference["cpu"], REL, range(6, 11))  # as the CPU loop continues


def test_checkpoint_from_the_cpu_resumes_on_xla(tmp_path, reference):
    out = tmp_path / "run"
    # the CPU side in its own process: torch's fused CPU AdamW refuses to run once XLA graphs ran in a process
    stopped = tiny.subprocess_run(out, "--backend", "cpu", "--save-every", "5", "--stop-after", "6")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr[-2000:]
    result = tiny.run(out, "xla", save_every=5)
    assert result.resumed_from == 5
    _close(tiny.train_losses(out), reference["cpu"], REL, range(6, 11))


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_spmd_and_fsdp_on_four_devices_match_one_device(tmp_path, request, optimizer):
    """Data-parallel and FSDPv2 over 4 CPU PJRT devices (with an FSDP kill-free stop and resume), then the
    FSDP checkpoint (saved from sharded weights) resumes on the CPU. Muon: its momentum is sharded like its
    matrix, and the orthogonalised update of a sharded matrix is the unsharded one's."""
    ref = request.getfixturevalue("muon_reference" if optimizer == "muon" else "reference")
    proc = tiny.subprocess_run(tmp_path, "--spmd-suite", "--optimizer", optimizer, devices=4, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    assert report["fsdp_weight_sharding"].startswith("{devices=[4"), report
    assert report["fsdp_moment_sharding"] == report["fsdp_weight_sharding"], report
    dp, fsdp = tiny.train_losses(tmp_path / "dp"), tiny.train_losses(tmp_path / "fsdp")
    _close(dp, ref["xla"], SAME * 10, range(1, 11))
    _close(fsdp, ref["xla"], MUON_SHARDED if optimizer == "muon" else SAME * 10, range(1, 11))
    if optimizer == "muon":  # a (64, 32) matrix sharded by rows over 4 devices is orthogonalised whole, not by shard
        assert report["ns_sharded_error"] < 1e-4 and report["ns_per_shard_error"] > 0.1, report
        assert report["ns_sharded_bf16_error"] < 0.05, report  # bf16 as close as the CPU's (1-3%)
    # the FSDP run's step-5 checkpoint, gathered from 4 shards, continues on the CPU
    cpu = tmp_path / "cpu_from_fsdp"
    shutil.copytree(tmp_path / "fsdp" / "checkpoints" / "step_00000005", cpu / "checkpoints" / "step_00000005")
    resumed = tiny.subprocess_run(cpu, "--backend", "cpu", "--save-every", "5", "--optimizer", optimizer)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["resumed_from"] == 5
    _close(tiny.train_losses(cpu), ref["cpu"], MUON_REL if optimizer == "muon" else REL, range(6, 11))


def test_loader_moves_batches_in_order_and_surfaces_data_errors():
    """The parallel loader keeps batch order and shapes; an error in a batch source reaches the caller."""
    import torch

    class Source:
        def __len__(self) -> int:
            return 4

        def batch(self, i: int) -> dict[str, torch.Tensor]:
            if i == 3:
                raise ValueError("block 3 is broken")
            ids = torch.full((8, 4), i, dtype=torch.long)  # (B, T)
            return {"input_ids": ids, "labels": ids}

    backend = xla.XlaBackend(precision="fp32")
    got = []
    with pytest.raises(ValueError, match="block 3 is broken"):
        for b in backend.loader(Source(), 0, 4):
            assert b["input_ids"].device.type == "xla" and tuple(b["input_ids"].shape) == (8, 4)
            got.append(int(b["input_ids"][0, 0].cpu()))
    assert got == [0, 1, 2]


def _cache_run(run_dir: Path, stage: str) -> dict:
    proc = tiny.subprocess_run(run_dir, "--cache-suite", stage)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_resumed_session_finds_every_compiled_program_in_the_run_dir(tmp_path):
    """The loop keeps torch_xla's persistent compilation cache in RUN_DIR/xla_cache: a second process (the next
    session) looks up every program the first one compiled and compiles nothing new. A TPU loads them (hits, no
    compile); the CPU PJRT client cannot deserialize executables (UNIMPLEMENTED in torch_xla 2.8), so here the
    lookups count as deserialize failures and compile again: the keys still match, which is what this checks."""
    first = _cache_run(tmp_path, "pretrain")
    second = _cache_run(tmp_path, "pretrain_again")
    assert first["compiles"] == first["misses"] > 0 and first["hits"] == first["deserialize_failures"] == 0
    assert len(first["entries"]) == first["misses"]  # one file per compiled program, under the run directory
    assert second["misses"] == 0 and second["entries"] == first["entries"]  # nothing new to write
    assert second["hits"] + second["deserialize_failures"] == first["misses"]  # every program found on disk
    assert second["compiles"] == second["deserialize_failures"]  # a loaded program is not compiled again


def test_the_cache_cannot_be_switched_on_after_a_compilation(tmp_path):
    import torch

    x = torch.ones(3, device=xla.XlaBackend(precision="fp32").device)
    (x * 2).cpu()  # compiles: the computation cache now exists without a persistent path
    with pytest.warns(RuntimeWarning, match="used from the next session"):
        assert xla.enable_persistent_cache(tmp_path / "xla_cache") is None
