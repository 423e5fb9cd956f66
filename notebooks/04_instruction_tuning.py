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
# # 04 · Instruction tuning
#
# Tunes the pre-trained model to answer instructions: each example is the prompt in a fixed template followed by
# the response and one EOS, and only the response and that EOS are trained. Batches mix in pre-training blocks
# (replay) so the model does not forget its language; held-out instruction loss and held-out corpus loss are
# plotted together. Reads: `tokenizer/`, `corpus/`, `pretrain/final/`. Writes: `sft/` (checkpoints, metrics,
# `final/` loadable with `AutoModelForCausalLM`).
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/04_instruction_tuning.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/04_instruction_tuning.ipynb)

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
# OVERRIDES: config overrides, e.g. ["sft.lr=1e-5", "sft.replay_ratio=0.3", "sft.data=[\"files:my.jsonl\"]"]
OVERRIDES = []
# HUB_REPO: "owner/name" uploads sft/final (bf16 weights, tokenizer, chat template, model card) to the Hugging Face
# Hub, private; the token comes from the platform's secret HF_TOKEN. "" = no upload
HUB_REPO = ""

# %%
PROFILE = nbhelpers.platform.resolve_profile(PROFILE)  # auto: prints the profile it picked and why
cfg = nbhelpers.config.load(PROFILE, OVERRIDES)
run = nbhelpers.rundir.RunDir.open(RUN_DIR, cfg)
run.require("pretrain")

# %% [markdown]
# ## The instruction data
#
# Every line is validated (a JSON object with string `prompt` and non-empty `target`); a bad line stops here with
# its file and line, so nothing is trained on it. A slice of each source is held out for evaluation.

# %%
import pandas as pd
from IPython.display import display
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(run.tokenizer)
data = nbhelpers.sft.load_instructions(cfg.sft)
train_rows, train_overflow = nbhelpers.sft.encode(tokenizer, data.train, cfg.sft)
heldout_rows, heldout_overflow = nbhelpers.sft.encode(tokenizer, data.heldout, cfg.sft)
overflow = {"train": train_overflow, "heldout": heldout_overflow}
print(*(["left out (sft.on_invalid=skip):"] + data.errors[:5] if data.errors else []), sep="\n  ")
display(pd.DataFrame(nbhelpers.sft.data_table(data, overflow)))

# %% [markdown]
# One encoded example: the model reads the whole row but learns only the `trained` part (the response and EOS).

# %%
print(nbhelpers.collator.format_prompt(data.train[0].prompt, cfg.sft.template) + data.train[0].target)
display(pd.DataFrame([nbhelpers.sft.explain_row(tokenizer, train_rows[0])]))

# %% [markdown]
# ## Batches with replay
#
# Each micro-batch holds instruction rows and, at `sft.replay_ratio`, rows of pre-training text.

# %%
choice = nbhelpers.device.select(cfg.train)
corpus = nbhelpers.corpus.load_corpus(run.corpus)
replay = nbhelpers.corpus.stream.replay_blocks(cfg, run.root) if cfg.sft.replay_ratio > 0 else None  # the stream's first part
train_batches, eval_batches = nbhelpers.sft.make_batches(
    cfg.sft, tokenizer, train_rows, heldout_rows, corpus.val, replay, nbhelpers.sft.use_fixed_length(cfg, choice.backend))
nproc = nbhelpers.launch.resolve_nproc(cfg.train, choice)  # one process per GPU; each reads 1/nproc of an epoch
train_cfg = nbhelpers.platform.apply_session_limit(nbhelpers.sft.train_config(cfg, len(train_batches) // nproc))
realised = nbhelpers.sft.replay_share(train_batches, n=min(200, len(train_batches)))
display(pd.DataFrame([{"device": choice.name, "processes": nproc, "micro-batches per epoch": len(train_batches),
               "epochs": cfg.sft.epochs, "steps": train_cfg.max_steps, "lr": train_cfg.lr,
               "replay rows": round(realised["replay_rows"], 3),
               "replay trained tokens": round(realised["replay_tokens"], 3),
               "replay tokens per row": train_batches.replay_len, "time budget (min)": train_cfg.max_minutes or "none"}]))

# %% [markdown]
# ## Before tuning
#
# The pre-trained model answers held-out prompts (greedy). Does it stop (emit EOS) before the token budget, and
# does it get the arithmetic right?

# %%
device = nbhelpers.sft.inference_device(choice, run.root)
model = AutoModelForCausalLM.from_pretrained(run.pretrain / "final").to(device)
before = nbhelpers.sft.response_figures(model, tokenizer, data.heldout, cfg.sft)
display(before["figures"])

# %% [markdown]
# ## Tuning
#
# The pre-training loop with SFT's learning rate and schedule, here or in one process per GPU (the pre-trained
# model is loaded again where it trains); checkpoints in `sft/checkpoints/`, rerun to resume.

# %%
model = None  # its memory goes to the training (here, or the GPU processes)
result = nbhelpers.launch.train_stage(run, "sft", live=True)  # the loss curve redraws at each evaluation
if result.status not in ("done", "time_budget"):  # a stop by the time budget ends this notebook cleanly (last cell)
    raise RuntimeError(f"tuning stopped at step {result.step} of {result.total_steps} ({result.status})")
display(result.eval)

# %%
nbhelpers.plots.plot_sft_eval(result.metrics_path, path=run.sft / "eval_loss.png")

# %% [markdown]
# ## After tuning
#
# The tuned model is loaded back from `sft/final/` the way any user would load it. After a stop by the time
# budget there is no `sft/final/` yet: these cells wait for the session that finishes.

# %%
finished = result.status == "done"
if finished:
    tuned = AutoModelForCausalLM.from_pretrained(run.sft / "final").to(device)
    after = nbhelpers.sft.response_figures(tuned, tokenizer, data.heldout, cfg.sft)
    display(pd.DataFrame({"pre-trained": before["figures"], "tuned": after["figures"]}))

# %%
if finished:
    display(pd.DataFrame([{"prompt": b["prompt"][:60], "pre-trained": b["response"][:80],
                           "tuned": a["response"][:80], "tuned ended with EOS": a["ended_with_eos"]}
                          for b, a in zip(before["samples"], after["samples"])][:8]))

# %%
if finished:
    figures = nbhelpers.sft.record_figures(data, overflow, train_batches, result, before["figures"], after["figures"])
    run.record("sft", figures)
    display(figures)

# %% [markdown]
# The model card (`sft/final/README.md`) is written from the run's records; with `HUB_REPO` set the tuned model
# is uploaded with it (private, bf16 safetensors, tokenizer and chat template). The token comes from Kaggle's
# secrets, Colab's userdata or `HF_TOKEN`, and is never printed. After a stop by the time budget this cell says
# where tuning stopped and how to continue.

# %%
if not finished:  # the session's time is up and the checkpoint saved: a clean end, not an error
    print(run.stop("sft", result.step, result.total_steps))
else:
    print("model card:", nbhelpers.model_card.write_card(run.root, "sft"))
    if HUB_REPO:
        print(nbhelpers.hub.push_stage(run.root, "sft", HUB_REPO))
