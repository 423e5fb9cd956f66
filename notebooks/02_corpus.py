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
# fixed-length uint16 blocks. This notebook builds the validation shard (the stream's first blocks, kept with
# the run) and records where the training stream starts; 03 produces the training blocks while it trains, so no
# session waits for a corpus build and no disk fills up. Reads: the sources, `tokenizer/`. Writes: `corpus/`
# (`manifest.json`, the validation shard, the duplicate memory at the stream's start).
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/02_corpus.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/02_corpus.ipynb)

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
# OVERRIDES: config overrides, e.g. ["corpus.mixture={\"wikipedia_ja\": 0.6, \"arithmetic\": 0.4}", "corpus.symbol_level=0.75"]
OVERRIDES = []
# PARTS: training parts to build ahead now: 0 = none (03 makes them while it trains); N = the first N parts, into the
# run's parts folder (locally the run's corpus/ folder, where 03 finds them; on Kaggle and Colab local scratch, which
# only this session sees): for offline or CPU runs
PARTS = 0

# %%
PROFILE = nbhelpers.platform.resolve_profile(PROFILE)  # auto: prints the profile it picked and why
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
# `corpus.token_budget` gives a number. The budget's blocks give 03's steps. 03 reads the stream in parts of
# `corpus.part_tokens`, made by a background process on the host's cores while the device trains: at most
# `corpus.parts_ahead` parts ready ahead and one behind are on disk, on local scratch (never Kaggle's output or
# Colab's Drive). A checkpoint holds the stream position, so the next session continues it exactly.

# %%
sp = nbhelpers.tokenizer.load_sentencepiece(run.tokenizer)
budget = nbhelpers.corpus.token_budget(cfg, vocab_size=sp.get_piece_size())
display(pd.Series({"rule": budget.rule, "model parameters": budget.model_params, "tokens per parameter": budget.tokens_per_param,
                   "full budget (tokens)": budget.total, "blocks": budget.blocks, "block length": cfg.corpus.block_len,
                   "tokens per part": budget.part_blocks * cfg.corpus.block_len, "parts in the budget": budget.parts,
                   "parts ahead (at most)": cfg.corpus.parts_ahead}).to_frame("budget"))

# %% [markdown]
# ## Build
#
# The validation shard is the stream's first `corpus.val_blocks` blocks: cleaning and tokenizing run on every
# core. A corpus already built with these settings is kept; an interrupted build leaves the previous complete
# corpus, and running this cell again finishes the job. With `PARTS`, the first training parts are built now.

# %%
manifest = nbhelpers.corpus.build_corpus(cfg, run.tokenizer, run.corpus)
corpus = nbhelpers.corpus.load_corpus(run.corpus)
ahead = nbhelpers.corpus.build_parts(cfg, run.root, PARTS)
display(pd.DataFrame([{"shard": "val", "blocks": manifest["val"]["blocks"], "tokens": manifest["val"]["tokens"],
                       "documents": manifest["val"]["documents"], "where": str(run.corpus)}]
                     + [{"shard": f"train part {p['index']}", "blocks": p["blocks"], "tokens": p["tokens"],
                         "documents": p["documents"], "where": str(nbhelpers.corpus.parts_dir(run.root, manifest["fingerprint"]))}
                        for p in ahead]))

# %% [markdown]
# ## What cleaning removed
#
# Per source, over the stream so far (the validation shard, and the parts built ahead): documents and characters
# read, what each step removed, and what was kept.

# %%
sources_now = nbhelpers.corpus.build.source_report(ahead[-1]["end"]["sources"], manifest["mixture"]["requested"]) if ahead else manifest["sources"]
cleaning = pd.DataFrame({name: {k: v for k, v in s["cleaning"].items() if k != "samples"} for name, s in sources_now.items()}).T
display(cleaning)
nbhelpers.plots.plot_cleaning(sources_now, path=run.corpus / "cleaning.png")

# %%
for name, s in sources_now.items():
    for sample in s["cleaning"]["samples"][:1]:
        print(f"── {name} ── before:\n{sample['before'][:300]}\n── after:\n{sample['after'][:300]}\n")

# %% [markdown]
# ## Mixture: requested and realised
#
# On a sample of the stream: the validation shard, and the parts built ahead. Every share holds within one
# document at every point of the stream, so a sample of a few hundred documents already shows it.

# %%
mix = nbhelpers.corpus.build.realised_shares([manifest["val"], *ahead], manifest["mixture"]["requested"])
display(pd.DataFrame({name: {"requested": manifest["mixture"]["requested"][name], "realised": mix[name],
                             "documents": s["documents"], "characters": s["characters"], "tokens": s["tokens"],
                             "epochs": s["epochs"]}
                      for name, s in sources_now.items()}).T)
nbhelpers.plots.plot_mixture(manifest["mixture"]["requested"], mix, path=run.corpus / "mixture.png")

# %% [markdown]
# ## A sample block, decoded
#
# Documents are joined with EOS (shown as ⏎EOS⏎); a block starts and ends wherever the stream is cut.

# %%
block = corpus.val[0]
texts = nbhelpers.corpus.decode_block(sp, block, manifest["eos_id"])
print(f"validation block 0 of {len(corpus.val)}: {len(block)} tokens, {len(texts) - 1} EOS\n")
print("\n⏎EOS⏎\n".join(texts)[:1500])

# %%
figures = {
    "val_blocks": len(corpus.val), "block_len": corpus.block_len, "budget_tokens": budget.total,
    "budget_rule": budget.rule, "budget_blocks": budget.blocks, "part_tokens": budget.part_blocks * corpus.block_len,
    "parts_total": budget.parts, "parts_built_ahead": len(ahead),
    "realised_shares": {k: round(v, 4) for k, v in mix.items()},
    "documents": {k: s["documents"] for k, s in sources_now.items()},
    "tokenizer_hash": manifest["tokenizer_hash"][:16], "build_seconds": manifest.get("build_seconds"),
}
run.record("corpus", figures)
