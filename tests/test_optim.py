"""optim.py: which parameters each optimizer updates, Muon + AdamW as one optimizer, its state and schedule."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from loop_tiny import StopAfter, blocks, cpu_choice, tiny_model, train_cfg

from nbhelpers import checkpoint, device, loop, optim
from nbhelpers.batches import ArrayBlocks, PackedBatches
from nbhelpers.muon import Muon

pytestmark = pytest.mark.usefixtures("one_thread")


def _grads(model: torch.nn.Module, seed: int) -> None:
    """A backward pass on a fixed batch, so every parameter has a gradient."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (2, 16), generator=gen)
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids).loss.backward()


def _names(model: torch.nn.Module, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = tiny_model(dropout=0.0)
    opt = optim.build_optimizer(model, train_cfg(optimizer="muon", lr=1e-3, muon_lr=4e-3, weight_decay=0.1), "cpu")
    muon = [g for g in opt.param_groups if g["muon"]]
    adamw = [g for g in opt.param_groups if not g["muon"]]
    per_layer = {"attention.query_key_value.weight", "attention.dense.weight", "mlp.dense_h_to_4h.weight",
                 "mlp.dense_4h_to_h.weight"}
    want = {f"gpt_neox.layers.{i}.{n}" for i in range(2) for n in per_layer}
    assert _names(model, [p for g in muon for p in g["params"]]) == want
    rest = _names(model, [p for g in adamw for p in g["params"]])
    embeddings = _names(model, [model.get_input_embeddings().weight, model.get_output_embeddings().weight])
    assert embeddings and embeddings <= rest  # the embedding and the head (tied here): AdamW
    assert rest | want == {n for n, _ in model.named_parameters()} and not rest & want
    assert [(g["lr"], g["weight_decay"], g["momentum"], g["qkv_heads"]) for g in muon] == [
        (4e-3, 0.1, 0.95, 4), (4e-3, 0.1, 0.95, 0)]  # the fused QKV weights per q / k / v block (4 heads)
    assert _names(model, muon[0]["params"]) == {f"gpt_neox.layers.{i}.attention.query_key_value.weight"
                                                for i in range(2)}
    decay = {g["weight_decay"]: _names(model, g["params"]) for g in adamw}
    assert decay[0.1] == embeddings  # norms and biases are not decayed
    assert all(g["lr"] == 1e-3 and g.get("fused") for g in adamw)
    from nbhelpers import planner
    from nbhelpers.config import ModelConfig
    from nbhelpers.model import build_model

    tiny = build_model(ModelConfig(preset="tiny"), 300)  # the planner counts what Muon gets on a real preset
    assert sum(p.numel() for p in optim.hidden_matrices(tiny)) == planner.hidden_matrix_parameters(ModelConfig("tiny"))
    default = optim.build_optimizer(model, train_cfg(optimizer="muon", lr=1e-3), "cpu")  # muon_lr 0: train.lr
    assert [g["lr"] for g in default.param_groups if g["muon"]] == [1e-3, 1e-3]
    whole = optim.build_optimizer(model, train_cfg(optimizer="muon", muon_qkv="whole"), "cpu")
    assert [g["qkv_heads"] for g in whole.param_groups if g["muon"]] == [0, 0]
    fp16 = optim.build_optimizer(model, train_cfg(optimizer="muon", precision="fp16"), "cuda")
    bf16 = optim.build_optimizer(model, train_cfg(optimizer="muon", precision="bf16"), "cuda")
    assert (bf16._muon.ns_dtype, fp16._muon.ns_dtype) == (torch.bfloat16, torch.float16)  # T4: fp16 cores
    assert default._muon.ns_dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[device.cpu_matmul_probe().dtype]


@pytest.mark.parametrize(("bf16_s", "want"), [(30.0, torch.float32), (0.25, torch.bfloat16)])
def test_muons_iteration_on_a_cpu_runs_in_the_type_it_multiplies_fastest(monkeypatch, bf16_s, want):
    """A CPU without bf16 hardware (an emulated bf16 matmul, 30x slower) iterates in fp32; one with it, in bf16."""
    monkeypatch.setattr(device, "_PROBE", [])
    monkeypatch.setattr(device, "matmul_seconds", lambda dtype: bf16_s if dtype == torch.bfloat16 else 1.0)
    model = tiny_model()
    opt = optim.build_optimizer(model, train_cfg(optimizer="muon", lr=1e-3), "cpu")
    assert opt._muon.ns_dtype == want
    assert device.cpu_matmul_probe().dtype == {torch.float32: "fp32", torch.bfloat16: "bf16"}[want]
    assert "ns_dtype" not in opt.state_dict()["param_groups"][0]  # a checkpoint resumes on any hardware
    _grads(model, 0)
    opt.step()  # the iteration runs in that type
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_one_step_is_a_muon_step_and_an_adamw_step():
    model = tiny_model(dropout=0.0)
    twin = copy.deepcopy(model)
    cfg = train_cfg(optimizer="muon", lr=2e-3, muon_lr=5e-3, weight_decay=0.1)
    ours = optim.build_optimizer(model, cfg, "cpu")
    matrices = optim.hidden_matrices(twin)
    ids = {id(p) for p in matrices}
    qkv = [p for n, p in twin.named_parameters() if n.endswith("query_key_value.weight")]
    rest = [p for p in twin.parameters() if id(p) not in ids]
    muon = Muon([{"params": qkv, "qkv_heads": 4}, {"params": [p for p in matrices if p not in set(qkv)]}],
                lr=5e-3, weight_decay=0.1, momentum=0.95)
    adamw = torch.optim.AdamW([{"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1},
                               {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}],
                              lr=2e-3, betas=cfg.betas, fused=True)
    for seed in range(3):
        _grads(model, seed)
        _grads(twin, seed)
        ours.step()
        muon.step()
        adamw.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name


def test_state_is_plain_tensors_and_numbers_and_reloads_exactly():
    """The checkpoint loads with weights_only=True (nothing unpickled) and the next steps match bit for bit."""
    cfg = train_cfg(optimizer="muon", lr=1e-3, muon_lr=3e-3)
    model = tiny_model(dropout=0.0)
    opt = optim.build_optimizer(model, cfg, "cpu")
    for seed in range(2):
        _grads(model, seed)
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    kinds = {k for per in saved["state"].values() for k in per}
    assert kinds == {"momentum_buffer", "step", "exp_avg", "exp_avg_sq"}
    resumed_model = copy.deepcopy(model)
    resumed = optim.build_optimizer(resumed_model, cfg, "cpu")
    resumed.load_state_dict(saved)
    assert resumed._muon.state is resumed.state and resumed._adamw.param_groups[0] is resumed.param_groups[2]
    for seed in (5, 6):
        for m, o in ((model, opt), (resumed_model, resumed)):
            _grads(m, seed)
            o.step()
    for (name, a), b in zip(model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(a, b), name


def test_the_schedule_scales_each_groups_own_peak():
    model = tiny_model(dropout=0.0)
    opt = optim.build_optimizer(model, train_cfg(optimizer="muon", lr=1e-3, muon_lr=8e-3), "cpu")
    plan = {"peak": 1e-3, "warmup": 4, "total": 20, "min_ratio": 0.1}
    peaks = [g["lr"] for g in opt.param_groups]
    sched = optim.make_scheduler(opt, plan, 10, peaks)
    factor = optim.lr_factor(10, plan)
    assert [g["lr"] for g in opt.param_groups] == [p * factor for p in peaks]
    assert sched.get_last_lr() == [8e-3 * factor] * 2 + [1e-3 * factor] * 2  # Muon's QKV, Muon's rest, AdamW x2


def test_muon_needs_no_torch_optim_muon(monkeypatch, tmp_path):
    """Kaggle's TPU image has torch 2.8, without torch.optim.Muon: ours trains there all the same."""
    monkeypatch.delattr(torch.optim, "Muon", raising=False)
    src = PackedBatches(ArrayBlocks(blocks()), 4, seed=3)
    result = loop.train(tiny_model(), src, train_cfg(optimizer="muon", max_steps=3), tmp_path,
                        device_choice=cpu_choice(), progress=False)
    assert result.status == "done" and result.step == 3


def test_an_unknown_optimizer_lists_the_known_ones():
    with pytest.raises(optim.OptimizerError, match="expected adamw | adamw8bit | muon, got 'sgd'"):
        optim.build_optimizer(tiny_model(), train_cfg(optimizer="sgd"), "cpu")




def test_an_interrupted_muon_run_resumes_exactly(tmp_path):
    def run(out, hooks=None):
        src = PackedBatches(ArrayBlocks(blocks()), 4, seed=3)
        cfg = train_cfg(optimizer="muon", max_steps=12, save_every=4, muon_lr=6e-3)
        return loop.train(tiny_model(), src, cfg, out, device_choice=cpu_choice(), hooks=hooks, peak_flops=1e10,
                          progress=False)  # dropout 0.1: the generators are restored too

    full = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", StopAfter(6))
    assert run(tmp_path / "b").resumed_from == 4

    def losses(out):
        return [r["loss"] for r in loop.read_metrics(out / loop.METRICS_FILE) if r["kind"] == "train"]

    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a")[-1] < losses(tmp_path / "a")[0]
    saved = checkpoint.read_part(full.checkpoint, "optimizer")
    assert sum("momentum_buffer" in s for s in saved["state"].values()) == 8  # 4 matrices x 2 layers


def test_config_checks_muons_fields():
    from nbhelpers import config

    assert config.load("smoke", ["train.optimizer=muon", "train.muon_lr=0.01"]).train.muon_lr == 0.01
    with pytest.raises(config.ConfigError, match=r"train.muon_lr: expected >= 0, got -0.1"):
        config.load("smoke", ["train.muon_lr=-0.1"])
    with pytest.raises(config.ConfigError, match=r"train.muon_momentum: expected in \[0, 1\), got 1.5"):
        config.load("smoke", ["train.muon_momentum=1.5"])
    with pytest.raises(config.ConfigError, match=r"train.muon_qkv: expected blocks \| whole, got 'split'"):
        config.load("smoke", ["train.muon_qkv=split"])
    assert config.load("kaggle_tpu_v5e8", ["train.optimizer=muon"]).train.optimizer == "muon"  # XLA too


# ---------------------------------------------------------------- wsd and finish


def test_wsd_is_warmup_constant_then_a_one_minus_sqrt_decay_over_the_last_fraction():
    cfg = train_cfg(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.2)
    plan = optim.wanted_plan(cfg, 100)
    assert plan["schedule"] == "wsd" and plan["decay_start"] == 80
    assert [optim.lr_at(plan, s) for s in (0, 5)] == [0.0, 5e-4]  # the same warmup as cosine
    assert all(optim.lr_at(plan, s) == 1e-3 for s in range(10, 81))  # constant at the peak until the decay
    for s in range(81, 101):
        assert optim.lr_at(plan, s) == pytest.approx(1e-4 + 9e-4 * (1 - ((s - 80) / 20) ** 0.5), rel=1e-12)
    assert optim.lr_at(plan, 100) == pytest.approx(1e-4)
    # the scheduler follows it, positioned directly at a step as on resume
    sched = optim.make_scheduler(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), plan, 90)
    assert sched.get_last_lr()[0] == optim.lr_at(plan, 90)


def test_a_longer_wsd_horizon_before_the_decay_moves_only_the_decay():
    cfg = train_cfg(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, schedule="wsd")
    old, longer = optim.wanted_plan(cfg, 100), optim.wanted_plan(cfg, 200)
    plan, note = optim.replan(old, longer, 50)  # constant: no restart, the peak is kept until step 160
    assert plan == longer and "restart" not in plan and "160" in note
    # inside the decay a longer horizon continues from the current lr, constant, then 1-sqrt to the new end
    plan, note = optim.replan(old, longer, 90)
    assert optim.lr_at(plan, 90) == pytest.approx(optim.lr_at(old, 90))
    assert optim.lr_at(plan, 159) == pytest.approx(optim.lr_at(old, 90)) and optim.lr_at(plan, 200) == pytest.approx(1e-4)
    # a checkpoint from before `schedule` existed is a cosine plan: switching to wsd there is a re-plan
    cosine = {"peak": 1e-3, "warmup": 10, "total": 100, "min_ratio": 0.1}
    assert optim.replan(cosine, optim.wanted_plan(train_cfg(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1), 100), 50) \
        == (cosine, None)
    plan, note = optim.replan(cosine, old, 50)
    assert plan["restart"]["lr"] == pytest.approx(optim.lr_at(cosine, 50)) and "1-sqrt" in note


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_finish_decays_from_the_current_lr_over_a_fraction_of_the_steps_so_far(schedule):
    cfg = train_cfg(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, schedule=schedule, decay_fraction=0.2)
    saved = optim.wanted_plan(cfg, 1000)
    plan, note = optim.finish_plan(saved, optim.wanted_plan(cfg, 1000), 300, 0.2)
    assert plan["total"] == 360 and plan["finish"] == 300 and "60 steps" in note
    assert optim.lr_at(plan, 300) == pytest.approx(optim.lr_at(saved, 300))  # no jump
    lrs = [optim.lr_at(plan, s) for s in range(300, 361)]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == pytest.approx(1e-4)
    # the data left caps the decay
    assert optim.finish_plan(saved, saved, 300, 0.2, available=320)[0]["total"] == 320
    # a resumed finish keeps its plan whatever is asked now
    assert optim.replan(plan, optim.wanted_plan(cfg, 5000), 330) == (plan, None)


def test_config_checks_the_schedule_fields():
    from nbhelpers import config

    assert config.load("smoke", ["train.schedule=wsd", "train.decay_fraction=0.3"]).train.decay_fraction == 0.3
    with pytest.raises(config.ConfigError, match="train.schedule: expected cosine | wsd"):
        config.load("smoke", ["train.schedule=linear"])
    with pytest.raises(config.ConfigError, match="train.decay_fraction"):
        config.load("smoke", ["train.decay_fraction=0"])
    for profile in ("colab_t4", "kaggle_t4x2", "kaggle_tpu_v5e8"):  # the multi-session profiles anneal at any stop
        assert config.load(profile).train.schedule == "wsd"


def test_tuning_has_its_own_schedule_and_keeps_finish():
    from nbhelpers import config, sft

    cfg = config.load("smoke", ["sft.schedule=wsd", "train.schedule=cosine", "train.finish=true"])
    tuned = sft.train_config(cfg, 200)
    assert tuned.schedule == "wsd" and tuned.finish and tuned.decay_fraction == cfg.train.decay_fraction
    assert sft.train_config(config.load("smoke"), 200).schedule == "cosine"
