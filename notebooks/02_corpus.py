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
# # 02 · Corpus
#
# Cleans every source (NFKC, symbols thinned in prose, whitespace, short documents and exact duplicates
# removed), mixes the sources by their share of tokens, and packs the documents, joined with EOS, into
# fixed-length uint16 blocks: a validation shard and session-sized train parts. Reads: the sources,
# `tokenizer/`. Writes: `corpus/` (shards and `manifest.json`).
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/02_corpus.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/02_corpus.ipynb)

# %%
# Setup (Kaggle, Colab or local): install nbhelpers at the pinned ref when it is missing (and on a CUDA GPU the
# bitsandbytes its 8-bit AdamW needs), keeping the platform's torch / torch_xla (pip gets a constraint pinning
# them), then show the platform and check the torch / torch_xla pair.
import importlib.metadata as md, importlib.util, shutil, subprocess, sys, tempfile
missing = [] if importlib.util.find_spec("nbhelpers") else ["nbhelpers @ git+https://github.com/nbhelpers/nbhelpers@v0.1.0"]
if shutil.which("nvidia-smi") and importlib.util.find_spec("bitsandbytes") is None:
    missing.append("bitsandbytes>=0.43")
if missing:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write("\n".join(f"{d}=={md.version(d)}" for d in ("torch", "torch_xla") if importlib.util.find_spec(d)))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", pins.name, *missing], check=True)
    importlib.invalidate_caches()
import nbhelpers
nbhelpers.platform.setup()

# %% tags=["parameters"]
PROFILE = "smoke"  # smoke | colab_t4 | kaggle_t4x2 | kaggle_tpu_v5e8
# RUN_DIR: the run directory shared by all six notebooks; empty = the platform default (runs/PROFILE locally)
RUN_DIR = ""
# OVERRIDES: config overrides, e.g. ["corpus.mixture={\"wikipedia_ja\": 0.6, \"arithmetic\": 0.4}", "corpus.symbol_level=0.75"]
OVERRIDES = []
# PARTS: train parts that should exist when this notebook ends: 0 = from corpus.build_tokens (one session part); N = build up to part N (a later session takes the next part)
PARTS = 0

# %%
cfg = nbhelpers.config.load(PROFILE, OVERRIDES)
run = nbhelpers.rundir.RunDir.open(RUN_DIR, cfg)
run.require("tokenizer")

# %% [markdown]
# ## Sources and weights
#
# Weights are shares of *tokens*: the next document always comes from the source furthest below its share,
# so every share holds within one document at every point of the corpus. A finite source that runs out
# starts again (`corpus.on_exhausted="repeat"`) or ends the corpus (`"stop"`).

# %%
import pandas as pd
from IPython.display import display

weights = nbhelpers.corpus.validate_mixture(cfg.corpus.mixture)
registry = {row["name"]: row for row in nbhelpers.sources.registry_table()}
display(pd.DataFrame([{"source": name, "weight": w, "math (no thinning)": nbhelpers.sources.resolve(name).math,
                       "description": registry.get(name, {}).get("description", name)} for name, w in weights.items()]))

# %% [markdown]
# ## Token budget
#
# Chinchilla: 20 tokens per model parameter (the profile's model with this tokenizer's vocabulary) unless
# `corpus.token_budget` gives a number. The corpus is written in parts of `corpus.session_tokens` so that
# each notebook session can build and train on the next part.

# %%
sp = nbhelpers.tokenizer.load_sentencepiece(run.tokenizer)
budget = nbhelpers.corpus.token_budget(cfg, vocab_size=sp.get_piece_size())
display(pd.Series({"rule": budget.rule, "model parameters": budget.model_params, "tokens per parameter": budget.tokens_per_param,
                   "full budget (tokens)": budget.total, "per session (tokens)": budget.per_session,
                   "parts in all": budget.parts, "block length": cfg.corpus.block_len}).to_frame("budget"))

# %% [markdown]
# ## Build
#
# Cleaning and tokenizing run on every core. Parts already built are kept; an interrupted build leaves the
# previous complete corpus, and running this cell again finishes the job.

# %%
manifest = nbhelpers.corpus.build_corpus(cfg, run.tokenizer, run.corpus, parts=PARTS or None)
corpus = nbhelpers.corpus.load_corpus(run.corpus)  # train = every built part, in order (what 03 reads)
display(pd.DataFrame([{"shard": "val", "blocks": manifest["val"]["blocks"], "tokens": manifest["val"]["tokens"],
                       "documents": manifest["val"]["documents"]}]
                     + [{"shard": f"train part {p['index']}", "blocks": p["blocks"], "tokens": p["tokens"],
                         "documents": p["documents"]} for p in manifest["parts"]]))

# %% [markdown]
# ## What cleaning removed
#
# Per source: documents and characters read, what each step removed, and what was kept.

# %%
cleaning = pd.DataFrame({name: {k: v for k, v in s["cleaning"].items() if k != "samples"}
                         for name, s in manifest["sources"].items()}).T
display(cleaning)
nbhelpers.plots.plot_cleaning(manifest["sources"], path=run.corpus / "cleaning.png")

# %%
for name, s in manifest["sources"].items():
    for sample in s["cleaning"]["samples"][:1]:
        print(f"── {name} ── before:\n{sample['before'][:300]}\n── after:\n{sample['after'][:300]}\n")

# %% [markdown]
# ## Mixture: requested and realised

# %%
mix = manifest["mixture"]
display(pd.DataFrame({name: {"requested": mix["requested"][name], "realised": mix["realised"][name],
                             "documents": s["documents"], "characters": s["characters"], "tokens": s["tokens"],
                             "train tokens": s["train_tokens"], "epochs": s["epochs"]}
                      for name, s in manifest["sources"].items()}).T)
nbhelpers.plots.plot_mixture(mix["requested"], mix["realised"], path=run.corpus / "mixture.png")

# %% [markdown]
# ## A sample block, decoded
#
# Documents are joined with EOS (shown as ⏎EOS⏎); a block starts and ends wherever the stream is cut.

# %%
block = corpus.train[0]
texts = nbhelpers.corpus.decode_block(sp, block, manifest["eos_id"])
print(f"block 0 of {len(corpus.train)}: {len(block)} tokens, {len(texts) - 1} EOS\n")
print("\n⏎EOS⏎\n".join(texts)[:1500])

# %%
figures = {
    "train_blocks": len(corpus.train), "train_tokens": manifest["train_tokens"], "val_blocks": len(corpus.val),
    "block_len": corpus.block_len, "parts_built": len(manifest["parts"]), "parts_total": budget.parts,
    "budget_tokens": budget.total, "budget_rule": budget.rule,
    "realised_shares": {k: round(v, 4) for k, v in mix["realised"].items()},
    "documents": {k: s["documents"] for k, s in manifest["sources"].items()},
    "tokenizer_hash": manifest["tokenizer_hash"][:16], "build_seconds": manifest.get("last_build_seconds"),
}
run.record("corpus", figures)
