# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Pre-training
#
# Builds the GPT-NeoX model of the profile (the seed's 776M `seed_1b`, or a smaller preset), plans its memory
# and the sessions its token budget needs, and trains it with one loop for CPU, GPU and TPU on the corpus stream,
# which a background process makes on the host's cores while the device trains. The loop checkpoints as it goes
# (the stream position included) and stops before the session's time runs out; run the notebook again and it
# resumes exactly where it stopped (on Kaggle: save a new version; it reads this version's output), until the
# token budget is trained. A stop by the time budget is a clean end, not an error: the last cell says where it
# stopped. Reads: `tokenizer/`, `corpus/`. Writes: `pretrain/` (checkpoints, `metrics.jsonl`, plots, `final/`
# loadable with `AutoModelForCausalLM`).
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/03_pretrain.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/03_pretrain.ipynb)

# %%
# Setup (Kaggle, Colab or local): install nbhelpers when it is missing (a wheel attached as a Kaggle input,
# else REPO_URL at REPO_REF) and on a CUDA GPU the bitsandbytes its 8-bit AdamW needs, keeping the platform's
# torch / torch_xla (pip gets a constraint pinning them); then show the platform and a short health check.
REPO_URL = "https://github.com/nbhelpers/nbhelpers"
REPO_REF = "v0.1.0"  # the release to install: a tag, branch or commit of REPO_URL
import glob, importlib.metadata as md, importlib.util, os, shutil, subprocess, sys, tempfile
inputs = os.path.join(os.environ.get("NBHELPERS_PLATFORM_ROOT") or "/", "kaggle", "input")
wheels = sorted(w for depth in range(1, 5) for w in glob.glob(os.path.join(inputs, *["*"] * depth, "nbhelpers-*.whl")))
package = wheels[-1] if wheels else f"nbhelpers @ git+{REPO_URL}@{REPO_REF}"
missing = [] if importlib.util.find_spec("nbhelpers") else [package]
if shutil.which("nvidia-smi") and importlib.util.find_spec("bitsandbytes") is None:
    missing.append("bitsandbytes>=0.43")
if missing:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write("\n".join(f"{d}=={md.version(d)}" for d in ("torch", "torch_xla") if importlib.util.find_spec(d)))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", pins.name, *missing], capture_output=True, text=True)
    if pip.returncode:
        raise RuntimeError(f"{pip.stderr[-2000:]}\npip could not install {', '.join(missing)}. If it could not fetch "
                           f"{REPO_URL} at {REPO_REF}, that release is not published there: push the repository and "
                           f"its tag (git push origin {REPO_REF}), or set REPO_REF above to a branch or commit that "
                           "exists, or upload a wheel of nbhelpers as a Kaggle dataset and add it as an input "
                           "(docs/PLATFORMS.md: Installing from a wheel); then run this cell again")
    importlib.invalidate_caches()
import nbhelpers
nbhelpers.platform.setup()
print(nbhelpers.hub.export_hf_token())  # the platform's HF token for hub reads too (never shown): higher rate limits
nbhelpers.doctor.short()

# %% tags=["parameters"]
PROFILE = "auto"  # auto (the platform's, printed below) | smoke | colab_t4 | kaggle_t4x2 | kaggle_tpu_v5e8
# RUN_DIR: the run directory shared by all six notebooks; empty = the platform default (runs/PROFILE locally)
RUN_DIR = ""
# OVERRIDES: config overrides, e.g. ["model.preset=small_160m", "train.lr=3e-4", "train.max_minutes=60"]
OVERRIDES = []
# HUB_REPO: "owner/name" uploads pretrain/final (bf16 weights, tokenizer, model card) to the Hugging Face Hub,
# private; the token comes from the platform's secret HF_TOKEN. "" = no upload
HUB_REPO = ""
# PLAN_MFU: assumed share of what the device sustains (a T4: 20 TFLOP/s; else its peak) for the plan before training
# (0.2 to 0.5); 0 = the profile's stated share (T4: 35%, TPU: 30%); after training the measured throughput is used
PLAN_MFU = 0.0

# %%
PROFILE = nbhelpers.platform.resolve_profile(PROFILE)  # auto: prints the profile it picked and why
cfg = nbhelpers.config.load(PROFILE, OVERRIDES)
run = nbhelpers.rundir.RunDir.open(RUN_DIR, cfg)
run.require("corpus")

# %% [markdown]
# ## Tokenizer and corpus
#
# The model's vocabulary is the tokenizer's; the corpus is read as fixed-length blocks (the training context).

# %%
import statistics
import pandas as pd
from IPython.display import display
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(run.tokenizer)
corpus = nbhelpers.corpus.load_corpus(run.corpus)
vocab_size = len(tokenizer)
budget = nbhelpers.corpus.token_budget(cfg, vocab_size)
display(pd.DataFrame([{"vocab": vocab_size, "block_len": corpus.block_len, "budget tokens": budget.total,
                       "budget blocks": budget.blocks, "val blocks": len(corpus.val)}]))

# %% [markdown]
# ## Device and precision
#
# Chosen in one place (`nbhelpers.device.select`): bf16 where the accelerator runs it natively (TPU, Ampere and
# later GPUs), fp16 with loss scaling on a T4, fp32 on a CPU. With more than one GPU (Kaggle's T4 x2) training runs
# in one torchrun process per GPU (DDP); `train.nproc` overrides the count. On Kaggle and Colab the time budget
# defaults to what is left of the session, less a margin for the last checkpoint.

# %%
choice = nbhelpers.device.select(cfg.train)
train_cfg = nbhelpers.platform.apply_session_limit(cfg.train)
nproc = nbhelpers.launch.resolve_nproc(cfg.train, choice)
display(pd.Series({**choice.summary(), "training processes": nproc,
                   "time budget (min)": train_cfg.max_minutes or "none"}).to_frame("choice"))

# %% [markdown]
# ## The corpus stream
#
# One producer process on this host cleans, mixes, tokenizes and packs the stream while the device trains, in
# parts of `corpus.part_tokens`, with at most `corpus.parts_ahead` parts ready ahead and one behind on local
# scratch disk (deleted once read). Every training process reads its share of each micro-batch from them. A
# resumed run starts the producer at the checkpoint's stream position.

# %%
stream, _, _, _ = nbhelpers.corpus.open_stream(cfg, run.root, trainers=nproc)
display(pd.Series({"parts folder": stream.root, "tokens per part": stream.part_blocks * stream.block_len,
                   "parts in the budget": budget.parts, "parts ahead (at most)": stream.ahead,
                   "producer processes": stream.workers,
                   "parts ready now": len(nbhelpers.corpus.producer.ready_parts(cfg, run.root))}).to_frame("stream"))

# %% [markdown]
# ## The plan
#
# Parameters, FLOPs per token (6N + 12·L·H·T, N without the input embedding), memory by part on one device and
# whether it fits, and the sessions the token budget (Chinchilla: 20 tokens per parameter, unless
# `corpus.token_budget` says otherwise) needs at an assumed MFU, and the weeks of the platform's free quota.
# Redrawn with the measured throughput after training. `python -m nbhelpers plan --profile PROFILE` prints the
# same plan on any machine; `--hours H` picks the model that finishes in H training hours.

# %%
plan = nbhelpers.planner.plan_profile(cfg, vocab_size, PLAN_MFU or None, choice=choice, processes=nproc,
                                      session_minutes=train_cfg.max_minutes or None)
display(plan.to_frame())
if not plan.fits:
    print("warning: the plan says this will not fit; " + plan.verdict)
if plan.quota_advice:
    print(plan.quota_advice)

# %% [markdown]
# Memory per device for every precision and optimizer, with and without gradient checkpointing (GiB):

# %%
display(plan.grid())

# %% [markdown]
# ## The model
#
# A `GPTNeoXForCausalLM` of this shape is initialised where it trains (here, or in each GPU's process); when a
# checkpoint exists the loop loads it over those weights.

# %%
nbhelpers.model.check_compatible(cfg.model, seq_len=corpus.block_len, vocab_size=vocab_size,
                                 tokenizer_vocab=len(tokenizer))
display(pd.Series(nbhelpers.model.describe(cfg.model, vocab_size)).to_frame(cfg.model.preset))

# %% [markdown]
# ## Training
#
# Progress shows loss, tokens/s and MFU; every `train.eval_every` steps the validation loss, its bits per byte
# (nats over the UTF-8 bytes of the scored text, in bits: comparable across tokenizers) and greedy samples
# for fixed prompts are logged, and the loss curve below redraws itself in place at each evaluation (nothing is drawn
# between them, so the steps do not wait for it). The steps and the schedule span the whole token budget: cosine, or
# on the T4 and TPU profiles `train.schedule=wsd` (constant, then a decay over the last 20%), which lets a run
# stopped anywhere be annealed: run this notebook again with `OVERRIDES = ["train.finish=true"]`. With several GPUs
# the workers' (rank 0's) progress shows here. A rerun resumes from the newest complete checkpoint in
# `pretrain/checkpoints/`, with one process or several. If a hub source keeps failing (after retries with
# backoff), the loop checkpoints and stops naming it: run again later and it resumes.

# %%
result = nbhelpers.launch.train_stage(run, "pretrain", live=True)
print(f"{result.status}: step {result.step} of {result.total_steps}"
      + (f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""))
data = nbhelpers.files.read_json(run.pretrain / nbhelpers.launch.DATA_FILE)
display(pd.Series(data).to_frame("reading the stream"))  # waits: parts the loop waited for after the first

# %%
nbhelpers.plots.plot_training(result.metrics_path, path=run.pretrain / "training.png")

# %% [markdown]
# Greedy continuations of the fixed prompts at each evaluation: from noise towards Japanese.

# %%
records = nbhelpers.loop.read_metrics(result.metrics_path)
samples = [{"step": r["step"], "prompt": s["prompt"], "text": s["text"]}
           for r in records if r.get("kind") == "samples" for s in r["samples"]]
display(pd.DataFrame(samples).pivot_table(index="step", columns="prompt", values="text", aggfunc="first")
        if samples else "no samples logged (no tokenizer or no sample_prompts)")

# %% [markdown]
# ## The plan at the measured throughput
#
# Tokens per session and sessions for the whole budget, from the tokens/s this run measured (median of the
# logging windows after the first, which includes compilation and warm-up).

# %%
windows = [r["tokens_per_s"] for r in records if r.get("kind") == "train" and r.get("tokens_per_s")]
measured_tps = statistics.median(windows[1:] or windows) if windows else None
after = nbhelpers.planner.make_plan(cfg, vocab_size, choice, processes=nproc, tokens_per_s=measured_tps,
                                    session_minutes=train_cfg.max_minutes or None)
display(after.to_frame().loc[["throughput", "per session", "sessions for the budget"]]
        if measured_tps else "no throughput measured")

# %%
if result.status == "time_budget":  # the session's time is up and the checkpoint saved: a clean end, not an error
    print(run.stop("pretrain", result.step, result.total_steps))
    print('To stop here with an annealed model instead: run 03 again with OVERRIDES = ["train.finish=true"] '
          f"(it decays the lr over the next {cfg.train.decay_fraction:.0%} x {result.step} steps and writes final/).")
elif result.status != "done":
    raise RuntimeError(f"training stopped at step {result.step} of {result.total_steps} ({result.status})")
else:
    evals = [r for r in records if r.get("kind") == "eval" and r.get("split") == "val"]
    mfus = [r["mfu"] for r in records if r.get("kind") == "train" and r.get("mfu")]
    figures = {
        "preset": cfg.model.preset, "parameters": plan.parameters, "steps": result.step,
        "tokens_seen": max(r["tokens"] for r in records if r.get("kind") == "train"),
        "final_train_loss": result.train_loss, "first_eval_loss": evals[0]["loss"],
        "final_eval_loss": evals[-1]["loss"], "eval_ppl": evals[-1]["ppl"], "eval_bpb": evals[-1].get("bpb"),
        "tokens_per_s": measured_tps,
        "mfu": statistics.median(mfus[1:] or mfus) if mfus else None,
        "device": choice.name, "precision": choice.precision, "sessions_for_budget": after.sessions,
    }
    run.record("pretrain", figures)
    display(pd.Series(figures).to_frame("pretrain"))

# %% [markdown]
# The model card (`pretrain/final/README.md`: Hub metadata, architecture, tokens and hours, the data with each
# source's licence, how to prompt it, limitations) is written from the run's records; 06 adds the evaluation.
# With `HUB_REPO` set the model is uploaded (private) with it: `python -m nbhelpers push` does the same later.

# %%
if result.status == "done":
    print("model card:", nbhelpers.model_card.write_card(run.root, "pretrain"))
    if HUB_REPO:
        print(nbhelpers.hub.push_stage(run.root, "pretrain", HUB_REPO))
