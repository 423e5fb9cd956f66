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
# # 05 · Chat
#
# Talks to the tuned model: the prompt goes into the same template as in tuning, the model answers until it
# emits EOS, and only the answer comes back. A few fixed prompts are answered by the pre-trained and the tuned
# model side by side, then a scripted conversation of several turns (`CHAT_TURNS`: it runs in a saved Kaggle
# version, where nobody can type); set `INTERACTIVE = True` to type your own, or `WEB_CHAT = True` for a chat page
# (gradio; a public share link on Kaggle and Colab). The same chat runs anywhere with
# `python -m nbhelpers chat --run-dir RUN_DIR`, and `sft/final/` carries the chat template, so
# `pipeline("text-generation", model="sft/final")` given messages prompts it as it was tuned. Reads: `tokenizer/`,
# `pretrain/final/`, `sft/final/`. Writes: the chat figures in `metrics.json`.
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/05_chat.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/05_chat.ipynb)

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
# OVERRIDES: config overrides, e.g. ["sft.max_new_tokens=128"]
OVERRIDES = []
INTERACTIVE = False  # True: a cell asks for your messages (/reset, /exit) (papermill runs keep False)
# CHAT_TURNS: the user's turns of the scripted conversation, answered in one conversation (history kept)
CHAT_TURNS = ["日本の首都はどこですか？", "その都市で有名な場所を一つ挙げてください。", "ありがとう。"]
WEB_CHAT = False  # True: serve a chat page with gradio (installed on first use; share link on Kaggle and Colab)
TEMPERATURE = 0.7  # > 0: sampling temperature for the sampled answers and the interactive chat
# TOP_P: 0 < TOP_P <= 1: nucleus sampling
TOP_P = 0.9

# %%
PROFILE = nbhelpers.platform.resolve_profile(PROFILE)  # auto: prints the profile it picked and why
cfg = nbhelpers.config.load(PROFILE, OVERRIDES)
run = nbhelpers.rundir.RunDir.open(RUN_DIR, cfg)
run.require("sft")

# %%
import pandas as pd
from IPython.display import display
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(run.sft / "final")
device = nbhelpers.sft.inference_device(nbhelpers.device.select(cfg.train), run.root)
models = {"pre-trained": AutoModelForCausalLM.from_pretrained(run.pretrain / "final").to(device),
          "tuned": AutoModelForCausalLM.from_pretrained(run.sft / "final").to(device)}
chat = {"template": cfg.sft.template, "prefix": cfg.sft.prompt_prefix, "max_new_tokens": cfg.sft.max_new_tokens}

# %% [markdown]
# ## Pre-trained vs tuned (greedy)
#
# The pre-trained model only continues text; the tuned one should answer and stop.

# %%
prompts = nbhelpers.generate.demo_prompts(cfg.sft.seed)
table = nbhelpers.generate.compare(models, tokenizer, prompts, **chat)
display(pd.DataFrame(table))

# %% [markdown]
# ## Sampled answers from the tuned model
#
# `do_sample=True` with a temperature and top-p: each seed gives a different answer.

# %%
sampled = [nbhelpers.generate.generate(models["tuned"], tokenizer, prompts[0], do_sample=True, temperature=TEMPERATURE,
                                       top_p=TOP_P, seed=seed, **chat) for seed in range(3)]
display(pd.DataFrame({"seed": range(3), "answer": sampled}))

# %% [markdown]
# ## A conversation of several turns
#
# Each answer sees the turns before it, in the tuning format (the chat template); the oldest exchanges are
# forgotten, with a notice, when the conversation outgrows the model's context.

# %%
session = nbhelpers.chat.Session(models["tuned"], tokenizer, cfg.sft.template, cfg.sft.prompt_prefix,
                                 cfg.sft.max_new_tokens, sampling={"do_sample": True, "temperature": TEMPERATURE,
                                                                   "top_p": TOP_P, "seed": cfg.sft.seed})
conversation = nbhelpers.chat.scripted(session, CHAT_TURNS)
display(pd.DataFrame(conversation))

# %% [markdown]
# ## Your turn
#
# Set `INTERACTIVE = True` in the parameters cell and run this cell: type a message and Enter; `/reset` starts over,
# `/exit` ends the chat. `WEB_CHAT = True` serves the same conversation as a web page instead.

# %%
if INTERACTIVE:
    session.reset()
    nbhelpers.chat.repl(session)
if WEB_CHAT:
    session.reset()
    web = nbhelpers.chat.web_chat(session)

# %%
figures = nbhelpers.generate.chat_figures(models["tuned"], tokenizer, prompts, table, **chat)
figures["conversation"] = conversation
run.record("chat", figures)
display(figures)
