"""The training loop on a tiny GPT-NeoX on the CPU: batches, schedule, training, eval, final model, clear errors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from loop_tiny import VOCAB, StopAfter, blocks, cpu_choice, tiny_model, tiny_tokenizer, train_cfg

from nbhelpers import checkpoint, loop, optim
from nbhelpers.batches import ArrayBlocks, PackedBatches
from nbhelpers.checkpoint import CheckpointMismatch
from nbhelpers.model import ModelError

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(model, out, cfg, source=None, **kw):
    source = source or PackedBatches(ArrayBlocks(blocks()), cfg.micro_batch, seed=3)
    return loop.train(model, source, cfg, out, device_choice=cpu_choice(), peak_flops=1e10, progress=False, **kw)


def _records(out, kind):
    return [r for r in loop.read_metrics(out / loop.METRICS_FILE) if r["kind"] == kind]


# ---------------------------------------------------------------- batches


def test_packed_batches_shape_and_purity():
    src = PackedBatches(ArrayBlocks(blocks(40)), 4, seed=1, rank=0, world_size=1)
    assert len(src) == 10
    b = src.batch(3)
    assert b["input_ids"].shape == (4, 16) and b["input_ids"].dtype == torch.int64
    assert torch.equal(b["input_ids"], b["labels"])
    src.batch(27)  # another pass in between must not change batch 3
    assert torch.equal(src.batch(3)["input_ids"], b["input_ids"])
    again = PackedBatches(ArrayBlocks(blocks(40)), 4, seed=1, rank=0, world_size=1)
    assert torch.equal(again.batch(3)["input_ids"], b["input_ids"])


def test_packed_batches_each_pass_covers_blocks_in_a_new_order():
    src = PackedBatches(ArrayBlocks(blocks(40)), 4, seed=1, rank=0, world_size=1)
    first = np.concatenate([src.block_indices(i) for i in range(10)])
    second = np.concatenate([src.block_indices(i) for i in range(10, 20)])
    assert sorted(first) == list(range(40)) and sorted(second) == list(range(40))
    assert not np.array_equal(first, second)
    ordered = PackedBatches(ArrayBlocks(blocks(40)), 4, shuffle=False, limit=3, rank=0, world_size=1)
    assert len(ordered) == 3 and list(ordered.block_indices(1)) == [4, 5, 6, 7]


def test_ranks_read_disjoint_blocks_that_make_the_doubled_batch():
    reader = ArrayBlocks(blocks(50))
    ranks = [PackedBatches(reader, 3, seed=5, rank=r, world_size=2) for r in range(2)]
    single = PackedBatches(reader, 6, seed=5, rank=0, world_size=1)
    assert len(ranks[0]) == len(single) == 8  # 50 // 6: two blocks left out of each pass
    for i in range(20):  # over two and a half passes
        a, b = ranks[0].block_indices(i), ranks[1].block_indices(i)
        assert not set(a) & set(b)
        assert list(a) + list(b) == list(single.block_indices(i))
    for r in ranks:  # within a pass no block is read twice
        seen = np.concatenate([r.block_indices(i) for i in range(8)])
        assert len(set(seen)) == len(seen)


def test_packed_batches_too_few_blocks():
    with pytest.raises(ValueError, match="cannot fill one micro-batch"):
        PackedBatches(ArrayBlocks(blocks(5)), 4, rank=0, world_size=2)


# ---------------------------------------------------------------- learning rate


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_lr_plan_matches_transformers_cosine_with_min_lr():
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    hf = get_cosine_with_min_lr_schedule_with_warmup(opt, num_warmup_steps=10, num_training_steps=100,
                                                     min_lr_rate=0.1)
    plan = {"peak": 3e-4, "warmup": 10, "total": 100, "min_ratio": 0.1}
    ours = optim.make_scheduler(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), plan)
    for step in range(100):
        assert ours.get_last_lr()[0] == pytest.approx(hf.get_last_lr()[0], rel=1e-12, abs=1e-15), step
        assert ours.get_last_lr()[0] == pytest.approx(optim.lr_at(plan, step), rel=1e-12, abs=1e-15)
        hf.step()
        ours.step()
    # positioned directly at a step, as on resume
    jumped = optim.make_scheduler(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), plan, 37)
    assert jumped.get_last_lr()[0] == optim.lr_at(plan, 37)


def test_replan_rules():
    old = {"peak": 1e-3, "warmup": 10, "total": 100, "min_ratio": 0.1}
    assert optim.replan(old, dict(old), 50) == (old, None)
    longer = dict(old, total=200)
    inside, note = optim.replan(old, longer, 5)  # still warming up: the new plan as is, same LR so far
    assert inside == longer and "warmup" in note
    assert optim.lr_at(inside, 5) == optim.lr_at(old, 5)
    plan, note = optim.replan(old, longer, 60)
    assert optim.lr_at(plan, 60) == pytest.approx(optim.lr_at(old, 60))  # no jump
    assert optim.lr_at(plan, 200) == pytest.approx(1e-4)  # reaches the minimum at the new horizon
    lrs = [optim.lr_at(plan, s) for s in range(60, 201)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert all(optim.lr_at(plan, s) > optim.lr_at(old, s) for s in range(61, 100))  # not the old decay
    flat, note = optim.replan(old, longer, 100)
    assert "fully decayed" in note and optim.lr_at(flat, 150) == pytest.approx(1e-4)


def test_longer_horizon_on_resume_continues_lr_and_decays_to_new_end(tmp_path):
    cfg = train_cfg(warmup_steps=2, save_every=4, min_lr_ratio=0.1, lr=1e-3)
    with pytest.raises(KeyboardInterrupt):  # planned for 16 steps, the session ends after step 12's checkpoint
        _train(tiny_model(), tmp_path, cfg, total_steps=16, hooks=StopAfter(12))
    old_plan = {"peak": 1e-3, "warmup": 2, "total": 16, "min_ratio": 0.1}
    result = _train(tiny_model(), tmp_path, cfg, total_steps=32)
    assert result.resumed_from == 12 and result.status == "done"
    events = [r for r in _records(tmp_path, "event") if r["event"] == "lr_replan"]
    assert len(events) == 1 and events[0]["step"] == 12
    lr = {r["step"]: r["lr"] for r in _records(tmp_path, "train")}  # record of step s: the lr of step index s-1
    assert lr[13] == pytest.approx(optim.lr_at(old_plan, 12), rel=1e-9)  # continues where it was
    assert lr[32] == pytest.approx(1e-4 + (lr[13] - 1e-4) * 0.5 * (1 + math.cos(math.pi * 19 / 20)), rel=1e-9)
    assert all(lr[s] > optim.lr_at(old_plan, s - 1) for s in range(14, 17))  # not the old, nearly decayed curve
    assert all(lr[s] >= lr[s + 1] for s in range(13, 32))


def test_a_horizon_past_the_steps_ends_data_end_and_a_longer_run_continues_on_one_schedule(tmp_path):
    """lr_horizon beyond the steps: the first run stops there without final/, the next continues the same curve."""
    cfg = train_cfg(warmup_steps=2, save_every=4, max_steps=0)  # 8 blocks a step

    def run(out, steps):
        return _train(tiny_model(), out, cfg, PackedBatches(ArrayBlocks(blocks(128)), 4, seed=3), total_steps=steps,
                      lr_horizon=16)

    whole = run(tmp_path / "whole", 16)
    assert whole.status == "done" and whole.step == 16
    first = run(tmp_path / "split", 8)
    assert first.status == "data_end" and first.step == 8 and first.final_dir is None
    assert not (tmp_path / "split" / "final").exists()
    second = run(tmp_path / "split", 16)
    assert second.resumed_from == 8 and second.status == "done" and second.final_dir.exists()
    assert not [r for r in _records(tmp_path / "split", "event") if r["event"] == "lr_replan"]
    a, b = _records(tmp_path / "whole", "train"), _records(tmp_path / "split", "train")
    assert [(r["step"], r["loss"], r["lr"]) for r in a] == [(r["step"], r["loss"], r["lr"]) for r in b]
    with pytest.raises(loop.TrainingError, match="lr_horizon=4 is before the last step 16"):
        _train(tiny_model(), tmp_path / "bad", cfg, PackedBatches(ArrayBlocks(blocks(128)), 4), total_steps=16,
               lr_horizon=4)


# ---------------------------------------------------------------- training


def test_train_learns_logs_evaluates_and_writes_a_loadable_final(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    tok = tiny_tokenizer()
    assert len(tok) == VOCAB
    data = blocks(128)
    train_src = PackedBatches(ArrayBlocks(data[:112]), 4, seed=3)
    val = PackedBatches(ArrayBlocks(data[112:]), 4, shuffle=False)
    cfg = train_cfg(max_steps=40, eval_every=20, log_every=5, save_every=20, lr=1e-2, warmup_steps=4,
                    sample_prompts=("日本の首都は", "1たす2は"), sample_tokens=3)
    result = _train(tiny_model(), tmp_path, cfg, train_src, eval_batches={"val": val}, tokenizer=tok)
    assert result.status == "done" and result.step == 40
    evals = _records(tmp_path, "eval")
    assert [r["step"] for r in evals] == [0, 20, 40]
    assert evals[-1]["loss"] < evals[0]["loss"] - 1.0  # the sequences are learnable
    assert evals[-1]["ppl"] == pytest.approx(math.exp(evals[-1]["loss"]))
    # bits per byte by hand: the char tokenizer's ids stand for one character each (kana and kanji 3 bytes in
    # UTF-8, ASCII 1, specials 0); every token after a block's first is scored
    char_bytes = [0 if i in tok.all_special_ids else len(tok.convert_ids_to_tokens(i).encode()) for i in range(VOCAB)]
    scored = [int(t) for i in range(cfg.eval_batches) for t in val.batch(i)["labels"][:, 1:].flatten()]
    nll = evals[-1]["loss"] * len(scored)
    assert evals[-1]["bpb"] == pytest.approx(nll / math.log(2) / sum(char_bytes[t] for t in scored), rel=1e-6)
    assert result.eval["val"]["bpb"] == evals[-1]["bpb"]
    train = _records(tmp_path, "train")
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["bad_steps"] == 0 for r in train)
    assert train[-1]["tokens"] == 40 * 2 * 4 * 16
    samples = _records(tmp_path, "samples")
    assert [s["step"] for s in samples] == [0, 20, 40]
    assert [x["prompt"] for x in samples[-1]["samples"]] == ["日本の首都は", "1たす2は"]
    assert result.eval["val"]["loss"] == evals[-1]["loss"]

    final = result.final_dir
    assert (final / "model.safetensors").exists() and not list(final.glob("*.bin"))
    loaded = AutoModelForCausalLM.from_pretrained(final)
    ids = torch.tensor(blocks(2, seed=9).astype(np.int64))
    model = tiny_model()

    checkpoint.load_weights(result.checkpoint, model)  # the final weights are the last checkpoint's
    model.eval()
    assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-6)
    gen = pipeline("text-generation", model=str(final), tokenizer=AutoTokenizer.from_pretrained(final))
    out = gen("日本の", max_new_tokens=3, do_sample=False)
    assert out[0]["generated_text"].startswith("日本の")


def test_plot_training_draws_train_and_eval_curves(tmp_path):
    from nbhelpers.plots import plot_training

    val = PackedBatches(ArrayBlocks(blocks(16, seed=4)), 4, shuffle=False)
    _train(tiny_model(), tmp_path, train_cfg(max_steps=6, eval_every=3), eval_batches={"val": val})
    fig = plot_training(tmp_path / loop.METRICS_FILE, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    loss_ax, ppl_ax = fig.axes
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert labels == ["train", "eval: val"]
    assert len(loss_ax.get_lines()[0].get_xdata()) == 6 and list(loss_ax.get_lines()[1].get_xdata()) == [0, 3, 6]
    assert ppl_ax.get_yscale() == "log"


def test_progress_false_prints_nothing_and_true_shows_evals_with_bpb(tmp_path, capsys):
    val = {"val": PackedBatches(ArrayBlocks(blocks(16, seed=4)), 4, shuffle=False)}
    _train(tiny_model(), tmp_path / "quiet", train_cfg(max_steps=2, eval_every=1), eval_batches=val,
           tokenizer=tiny_tokenizer())
    assert capsys.readouterr().out == ""
    loop.train(tiny_model(), PackedBatches(ArrayBlocks(blocks()), 4, seed=3), train_cfg(max_steps=2, eval_every=1),
               tmp_path / "shown", eval_batches=val, tokenizer=tiny_tokenizer(), device_choice=cpu_choice(),
               peak_flops=1e10, progress=True)
    shown = capsys.readouterr()
    assert "step 2: val loss " in shown.out and " bpb " in shown.out


def test_finished_run_resumes_to_nothing_and_keeps_last_k(tmp_path):
    cfg = train_cfg(max_steps=12, save_every=2, keep_last=2)
    first = _train(tiny_model(), tmp_path, cfg)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000010", "step_00000012"] or \
        sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000010", "step_00000012"]
    again = _train(tiny_model(), tmp_path, cfg)
    assert again.resumed_from == 12 and again.step == 12 and again.status == "done"
    assert first.checkpoint == again.checkpoint


def test_interrupted_run_resumes_exactly_with_dropout(tmp_path):
    """In-process version of the kill test, with dropout drawing from the restored generators."""
    def run(out, hooks=None):
        src = PackedBatches(ArrayBlocks(blocks()), 4, seed=3)
        return loop.train(tiny_model(), src, train_cfg(max_steps=12, save_every=4), out, device_choice=cpu_choice(),
                          hooks=hooks, peak_flops=1e10, progress=False)  # dropout 0.1

    run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", StopAfter(6))
    assert run(tmp_path / "b").resumed_from == 4
    assert [r["loss"] for r in _records(tmp_path / "a", "train")] == [r["loss"] for r in _records(tmp_path / "b", "train")]


class _Recorded:
    """A batch source that records the indices it is asked for and keeps a data position, as the corpus stream does."""

    def __init__(self, inner):
        self.inner, self.read, self.loaded = inner, [], None

    def __len__(self):
        return len(self.inner)

    def batch(self, index):
        self.read.append(index)
        return self.inner.batch(index)

    def state_dict(self, index):
        return {"index": index}

    def load_state_dict(self, state):
        self.loaded = state


def test_a_resume_loads_the_checkpoint_before_it_reads_a_batch(tmp_path):
    """A stream resumed with an empty scratch folder must not build part 0 to check a batch: the first batch read is
    the one at the checkpoint's data position, after the position was loaded."""
    def src():
        return _Recorded(PackedBatches(ArrayBlocks(blocks()), 4, seed=3))

    _train(tiny_model(), tmp_path, train_cfg(max_steps=4, save_every=4), src())
    again = src()
    _train(tiny_model(), tmp_path, train_cfg(max_steps=6), again)
    assert again.loaded == {"index": 8} and again.read[0] == 8 and 0 not in again.read  # 4 steps x grad_accum 2


def test_a_resume_with_another_micro_batch_reads_on_after_the_same_samples(tmp_path):
    """Saved at 4 steps of 2 x 4 blocks (32 blocks), resumed with micro-batches of 8: the next is micro-batch 4."""
    _train(tiny_model(), tmp_path, train_cfg(max_steps=4, save_every=4))
    again = _Recorded(PackedBatches(ArrayBlocks(blocks()), 8, seed=3))
    again.micro_batch = 8  # the batch-source protocol's optional size: no read needed to find the new layout
    result = _train(tiny_model(), tmp_path, train_cfg(micro_batch=8, grad_accum=1, max_steps=6), again)
    assert result.resumed_from == 4 and again.read == [4, 4, 5]  # the check, then steps 5 and 6


def test_the_loop_measures_no_peak_mfu_needs_the_callers(tmp_path, monkeypatch):
    """MFU divides by the peak the caller passes (the planner's); the loop never benchmarks the CPU itself."""
    from nbhelpers import planner

    def no_benchmark(*args, **kwargs):
        raise AssertionError("the loop ran the CPU matmul benchmark")

    monkeypatch.setattr(planner.flops, "measure_cpu_peak_flops", no_benchmark)
    src = PackedBatches(ArrayBlocks(blocks()), 4, seed=3)
    result = loop.train(tiny_model(), src, train_cfg(max_steps=2), tmp_path, device_choice=cpu_choice(),
                        progress=False)
    assert result.mfu is None and all(r["mfu"] is None for r in _records(tmp_path, "train"))
    given = loop.train(tiny_model(), src, train_cfg(max_steps=2), tmp_path / "b", device_choice=cpu_choice(),
                       peak_flops=1e10, progress=False)
    assert given.mfu == pytest.approx(given.tokens_per_s * loop.flops_per_token(tiny_model(), 16) / 1e10)


def test_gradient_accumulation_equals_one_big_micro_batch(tmp_path):
    """grad_accum=2 with micro-batch 2 takes the same steps as micro-batch 4 (token-mean loss, same blocks)."""
    reader = ArrayBlocks(blocks())
    a = _train(tiny_model(dropout=0.0), tmp_path / "a", train_cfg(micro_batch=4, grad_accum=1, max_steps=6),
               PackedBatches(reader, 4, seed=3))
    b = _train(tiny_model(dropout=0.0), tmp_path / "b", train_cfg(micro_batch=2, grad_accum=2, max_steps=6),
               PackedBatches(reader, 2, seed=3))
    la = [r["loss"] for r in _records(a.out_dir, "train")]
    lb = [r["loss"] for r in _records(b.out_dir, "train")]
    assert la == pytest.approx(lb, rel=1e-5)


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    plain = _train(tiny_model(dropout=0.0), tmp_path / "a", train_cfg(max_steps=4))
    model = tiny_model(dropout=0.0)
    ckpt = _train(model, tmp_path / "b", train_cfg(max_steps=4, gradient_checkpointing=True))
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    la = [r["loss"] for r in _records(plain.out_dir, "train")]
    lb = [r["loss"] for r in _records(ckpt.out_dir, "train")]
    assert la == pytest.approx(lb, rel=1e-5)


# ---------------------------------------------------------------- clear errors


def test_checkpoint_of_another_model_names_the_field(tmp_path):
    _train(tiny_model(hidden=32), tmp_path, train_cfg(max_steps=4, save_every=2))
    with pytest.raises(CheckpointMismatch, match=r"hidden_size=32 in the checkpoint but 48 in this model"):
        _train(tiny_model(hidden=48), tmp_path, train_cfg(max_steps=8, save_every=2))


def test_sequence_longer_than_max_positions(tmp_path):
    long = np.tile(blocks(16), (1, 5))  # (16, 80) > max_position_embeddings=64
    with pytest.raises(ModelError, match="max_position_embeddings=64"):
        _train(tiny_model(), tmp_path, train_cfg(), PackedBatches(ArrayBlocks(long), 4))


def test_token_ids_outside_the_vocabulary(tmp_path):
    data = blocks(16)
    data[0, 0] = VOCAB + 5
    with pytest.raises(loop.TrainingError, match=f"outside the model's vocab_size={VOCAB}"):
        _train(tiny_model(), tmp_path, train_cfg(), PackedBatches(ArrayBlocks(data), 16, shuffle=False))


def test_tokenizer_larger_than_the_model_vocabulary(tmp_path):
    tok = tiny_tokenizer()
    tok.add_tokens(["extra-a", "extra-b"])
    with pytest.raises(ModelError, match="tokenizer has 63 tokens"):
        _train(tiny_model(), tmp_path, train_cfg(), tokenizer=tok)


def test_adamw8bit_without_bitsandbytes_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # importing it fails, as where it is not installed
    with pytest.raises(loop.TrainingError, match="pip install bitsandbytes"):
        _train(tiny_model(), tmp_path, train_cfg(optimizer="adamw8bit"))


def test_nothing_to_train(tmp_path):
    with pytest.raises(loop.TrainingError, match="train.grad_accum=50"):
        _train(tiny_model(), tmp_path, train_cfg(max_steps=0, grad_accum=50))


# ---------------------------------------------------------------- CUDA (run where a GPU is lent: pytest -m gpu)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_cuda_trains_saves_cpu_tensors_and_resumes(tmp_path, precision):
    """bf16 (auto on 8.0+) or fp16 with a GradScaler: learns, checkpoints hold CPU tensors, resume continues."""
    from nbhelpers.device import select

    cfg = train_cfg(backend="cuda", precision=precision, max_steps=16, save_every=4, lr=1e-2)
    choice = select(cfg)
    assert choice.backend == "cuda" and choice.use_grad_scaler == (choice.precision == "fp16")

    def run(out, **kw):
        src = PackedBatches(ArrayBlocks(blocks()), cfg.micro_batch, seed=3)
        return loop.train(tiny_model(dropout=0.0), src, cfg, out, device_choice=choice, peak_flops=1e12,
                          progress=False, **kw)

    full = run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", hooks=StopAfter(9))  # checkpoint of step 8 written, then the session ends
    resumed = run(tmp_path / "cut")
    assert resumed.resumed_from == 8 and resumed.status == "done"
    a = {r["step"]: r["loss"] for r in _records(full.out_dir, "train")}
    b = {r["step"]: r["loss"] for r in _records(resumed.out_dir, "train")}
    assert a[16] < a[1]
    assert [b[s] for s in range(9, 17)] == pytest.approx([a[s] for s in range(9, 17)], rel=1e-3)
    opt = checkpoint.read_part(full.checkpoint, "optimizer")
    assert all(t.device.type == "cpu" for st in opt["state"].values() for t in st.values() if torch.is_tensor(t))
    assert (full.checkpoint / "scaler.safetensors").exists() == choice.use_grad_scaler


# ---------------------------------------------------------------- anneal at any stop, saves by time


def test_finish_anneals_a_stopped_run_writes_final_and_resumes_exactly_mid_decay(tmp_path):
    import shutil

    cfg = train_cfg(schedule="wsd", warmup_steps=2, save_every=2, decay_fraction=0.5, max_steps=24, min_lr_ratio=0.1)
    finish = train_cfg(**{**cfg.__dict__, "finish": True})
    with pytest.raises(loop.TrainingError, match="holds no checkpoint"):
        _train(tiny_model(), tmp_path / "none", finish)
    with pytest.raises(KeyboardInterrupt):  # the user stops at step 12 of 24, still at the peak lr
        _train(tiny_model(), tmp_path / "stopped", cfg, hooks=StopAfter(12))
    for name in ("whole", "cut", "cut_plain"):
        shutil.copytree(tmp_path / "stopped", tmp_path / name)
    whole = _train(tiny_model(), tmp_path / "whole", finish)
    assert whole.status == "done" and whole.step == 18 and whole.final_dir.is_dir()  # 12 + 0.5 x 12 steps of decay
    lr = {r["step"]: r["lr"] for r in _records(tmp_path / "whole", "train")}
    assert lr[12] == 3e-3 and lr[13] == pytest.approx(3e-3)  # from the lr it had
    assert all(lr[s] > lr[s + 1] for s in range(13, 18)) and lr[18] == pytest.approx(3e-4 + 2.7e-3 * (1 - (5 / 6) ** 0.5))
    assert [r["event"] for r in _records(tmp_path / "whole", "event")][-3:] == ["resume", "lr_replan", "done"]
    with pytest.raises(KeyboardInterrupt):  # stopped again inside the decay (checkpoint at 14)...
        _train(tiny_model(), tmp_path / "cut", finish, hooks=StopAfter(3))
    for out, again in ((tmp_path / "cut", finish), (tmp_path / "cut_plain", cfg)):
        if out.name == "cut_plain":  # ...or resumed without train.finish: the saved decay is kept all the same
            with pytest.raises(KeyboardInterrupt):
                _train(tiny_model(), out, finish, hooks=StopAfter(3))
        result = _train(tiny_model(), out, again)
        assert result.resumed_from == 14 and result.status == "done" and result.step == 18
        a, b = _records(tmp_path / "whole", "train"), _records(out, "train")
        assert [(r["step"], r["loss"], r["lr"]) for r in a] == [(r["step"], r["loss"], r["lr"]) for r in b]


def test_save_minutes_and_eval_minutes_checkpoint_and_evaluate_by_wall_time(tmp_path):
    from loop_tiny import SleepHooks

    cfg = train_cfg(save_every=0, eval_every=0, keep_last=0, max_steps=12, save_minutes=0.25 / 60,
                    eval_minutes=0.25 / 60)
    evals = {"val": PackedBatches(ArrayBlocks(blocks(16, seed=5)), 4, shuffle=False)}
    result = _train(tiny_model(), tmp_path, cfg, eval_batches=evals, hooks=SleepHooks(0.06))
    saved = [int(p.name[5:]) for p in checkpoint.list_checkpoints(tmp_path / "checkpoints")]
    assert result.status == "done" and saved[-1] == 12 and len(saved) >= 3, saved  # ~every 4 steps of 0.06 s
    assert len({r["step"] for r in _records(tmp_path, "eval")} - {0, 12}) >= 2


def test_the_live_curve_redraws_in_place_at_each_evaluation_and_only_then(tmp_path, monkeypatch):
    display_mod = pytest.importorskip("IPython.display")
    from nbhelpers import plots

    shown = []

    class Handle:
        def update(self, fig):
            shown.append("update")

    monkeypatch.setattr(display_mod, "display", lambda fig, display_id: shown.append("display") or Handle())
    monkeypatch.setattr(plots, "_notebook_shell", lambda: object())  # as in a notebook's kernel
    curve = plots.LiveCurve(tmp_path / loop.METRICS_FILE, png=tmp_path / "live.png")
    drew = []
    evals = {"val": PackedBatches(ArrayBlocks(blocks(16, seed=5)), 4, shuffle=False)}
    _train(tiny_model(), tmp_path, train_cfg(max_steps=12, eval_every=4, log_every=2), eval_batches=evals,
           on_eval=lambda path: drew.append(curve(path)))
    assert drew == [True] * 4 and shown == ["display", "update", "update", "update"]  # steps 0, 4, 8, 12
    assert (tmp_path / "live.png").is_file() and len(curve.draw_s) == 4
    assert not curve.update()  # no new evaluation: nothing drawn
    monkeypatch.setattr(plots, "_notebook_shell", lambda: None)
    quiet = plots.LiveCurve(tmp_path / loop.METRICS_FILE)  # a script without a PNG path: nothing at all
    assert not quiet.update() and quiet.draw_s == []
