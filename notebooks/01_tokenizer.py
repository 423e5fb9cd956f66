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
# # 01 · Tokenizer
#
# Trains a SentencePiece unigram tokenizer (the report's settings: NFKC, byte fallback, no whitespace, number or
# script splitting) on a shuffled sample of the corpus mixture, and saves it with an exactly equivalent Hugging
# Face fast tokenizer so that `AutoTokenizer.from_pretrained(RUN_DIR + "/tokenizer")` loads it. Reads: the
# sources. Writes: `tokenizer/` (`spm.model`, `tokenizer.json`, `tokenizer_config.json`, the token length plot).
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/01_tokenizer.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/01_tokenizer.ipynb)

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
# OVERRIDES: config overrides, e.g. ["tokenizer.vocab_size=16000", "tokenizer.sample_chars=50000000"]
OVERRIDES = []

# %%
PROFILE = nbhelpers.platform.resolve_profile(PROFILE)  # auto: prints the profile it picked and why
cfg = nbhelpers.config.load(PROFILE, OVERRIDES)
run = nbhelpers.rundir.RunDir.open(RUN_DIR, cfg)

# %% [markdown]
# ## Sources and mixture
#
# The registry lists every source a mixture can name (edit weights in `corpus.mixture`). The tokenizer is
# trained on the same cleaned, ratio-mixed document stream the corpus notebook packs.

# %%
import pandas as pd
from IPython.display import display

display(pd.DataFrame(nbhelpers.sources.registry_table()).set_index("name"))
display(pd.Series(cfg.corpus.mixture, name="weight").to_frame())
display(pd.Series(vars(cfg.tokenizer)).to_frame("tokenizer setting"))

# %% [markdown]
# ## Sample the mixture and train
#
# Up to `tokenizer.sample_chars` characters of lines, shuffled in a bounded buffer; about one document in twenty
# is held out (up to `tokenizer.heldout_chars`) for the statistics below and is never trained on.

# %%
import tempfile
import time

start = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    documents = nbhelpers.corpus.mixed_documents(cfg.corpus, seed=cfg.corpus.seed)
    sample = nbhelpers.tokenizer.sample_text(documents, f"{tmp}/sample.txt", cfg.tokenizer.sample_chars,
                                             cfg.tokenizer.heldout_chars, seed=cfg.corpus.seed,
                                             max_sentence_length=cfg.tokenizer.max_sentence_length)
    documents.close()
    hf_tokenizer = nbhelpers.tokenizer.train_tokenizer(sample.path, run.tokenizer, cfg.tokenizer)
seconds = time.perf_counter() - start
print(f"trained on {sample.chars:,} characters ({sample.lines:,} lines from {sample.documents:,} documents) "
      f"in {seconds:.1f}s; held out {len(sample.heldout)} documents ({sample.heldout_chars:,} characters)")

# %% [markdown]
# ## Statistics on held-out text
#
# Characters per token (higher is a denser encoding), the share of tokens that are byte-fallback pieces
# (characters outside the vocabulary) and of unknown tokens (zero with byte fallback).

# %%
sp = nbhelpers.tokenizer.load_sentencepiece(run.tokenizer)
stats = nbhelpers.tokenizer.tokenizer_stats(sp, sample.heldout)
display(pd.Series({k: v for k, v in stats.items() if not isinstance(v, dict)}).to_frame("held-out"))
fig = nbhelpers.plots.plot_token_lengths(stats, run.tokenizer / "token_lengths.png")

# %% [markdown]
# ## Examples: SentencePiece and the Hugging Face tokenizer agree
#
# Each row is encoded by both; `same_ids` and `same_text` compare the ids and the decoded text. Emoji and rare
# kanji fall back to byte pieces (`<0x..>`) and still decode to the original characters (after NFKC).

# %%
from transformers import AutoTokenizer

examples = [
    "吾輩は猫である。名前はまだ無い。",
    "東京都の人口は約1400万人です。",
    "今日はいい天気ですね😊",
    "𠮷野家で鰻重と鱧を食べた。",
    "ｶﾀｶﾅとＡＢＣ１２３は正規化されます。",
    "print('こんにちは')  # コードも  空白も",
]
comparison = pd.DataFrame(nbhelpers.tokenizer.compare(sp, AutoTokenizer.from_pretrained(run.tokenizer), examples))
display(comparison)
assert comparison.same_ids.all() and comparison.same_text.all(), "SentencePiece and the HF tokenizer disagree"

# %%
figures = {
    "chars_per_token": round(stats["chars_per_token"], 4),
    "byte_fallback_rate": round(stats["byte_fallback_rate"], 6),
    "unk_rate": round(stats["unk_rate"], 6),
    "vocab_size": stats["vocab_size"],
    "sample_chars": sample.chars,
    "heldout_chars": sample.heldout_chars,
    "seconds": round(seconds, 1),
    "sha256": nbhelpers.tokenizer.tokenizer_hash(run.tokenizer),
}
run.record("tokenizer", figures)
