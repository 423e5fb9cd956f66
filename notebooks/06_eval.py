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
# # 06 · Evaluation
#
# Scores the pre-trained model and, when 04 has run, the instruction-tuned one: perplexity on held-out texts
# (the corpus's validation shard decoded back into documents, and prose written for this project) and the
# lm-evaluation-harness Japanese tasks JAQKET v2 (1-shot), JCommonsenseQA (3-shot) and JSQuAD (2-shot). The
# smoke profile runs offline copies of those tasks with a few examples each. Ends with the run's report card
# (`eval/report.md`) and refreshes the model cards' evaluation sections.
# Reads: `pretrain/final/`, `sft/final/`, `corpus/`. Writes: `eval/` (results.json, report.md, charts), the
# `final/README.md` model cards.
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/06_eval.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/nbhelpers/nbhelpers/blob/v0.1.0/notebooks/06_eval.ipynb)

# %%
# Setup (Kaggle, Colab or local): install nbhelpers[eval] when it is missing (a wheel attached as a Kaggle input,
# else REPO_URL at REPO_REF) and on a CUDA GPU the bitsandbytes its 8-bit AdamW needs, keeping the platform's
# torch / torch_xla (pip gets a constraint pinning them); then show the platform and a short health check.
REPO_URL = "https://github.com/nbhelpers/nbhelpers"
REPO_REF = "v0.1.0"  # the release to install: a tag, branch or commit of REPO_URL
import glob, importlib.metadata as md, importlib.util, os, shutil, subprocess, sys, tempfile
inputs = os.path.join(os.environ.get("NBHELPERS_PLATFORM_ROOT") or "/", "kaggle", "input")
wheels = sorted(w for depth in range(1, 5) for w in glob.glob(os.path.join(inputs, *["*"] * depth, "nbhelpers-*.whl")))
package = wheels[-1] + "[eval]" if wheels else f"nbhelpers[eval] @ git+{REPO_URL}@{REPO_REF}"
missing = [] if importlib.util.find_spec("nbhelpers") else [package]
if not missing and importlib.util.find_spec("lm_eval") is None:
    missing.append("lm-eval[hf,japanese-leaderboard]>=0.4.13")
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
# OVERRIDES: config overrides, e.g. ["eval.limit=200", "eval.local_tasks=true", "eval.ppl_texts=16"]
OVERRIDES = []

# %%
PROFILE = nbhelpers.platform.resolve_profile(PROFILE)  # auto: prints the profile it picked and why
cfg = nbhelpers.config.load(PROFILE, OVERRIDES)
run = nbhelpers.rundir.RunDir.open(RUN_DIR, cfg)
run.require("pretrain")
run.require_writable("eval")  # before hours of scoring: a read-only run says where 06 would write

# %% [markdown]
# ## The models
#
# `pretrain/final` always; `sft/final` when notebook 04 has written it. Each is loaded the way any user would load
# it (`AutoModelForCausalLM.from_pretrained`), with its tokenizer, and checked to belong to it.

# %%
import pandas as pd
from IPython.display import Markdown, display
from transformers import AutoTokenizer

models = nbhelpers.evaluation.available_models(run)
device, after_batch = nbhelpers.evaluation.eval_device(cfg, run.root)
display(pd.DataFrame([{"model": name, "directory": str(path)} for name, path in models.items()]))
print("device:", device)

# %% [markdown]
# ## Held-out texts
#
# `corpus_val`: documents decoded from the corpus's validation blocks (split at the EOS between documents);
# `heldout_prose`: Japanese paragraphs written for this project, in no training source.

# %%
tokenizer = AutoTokenizer.from_pretrained(run.tokenizer if (run.tokenizer / "tokenizer.json").exists() else models["pretrain"])
texts = nbhelpers.evaluation.validation_texts(run.corpus, tokenizer, cfg.eval.ppl_texts)
display(pd.DataFrame([{"set": name, "text": i, "chars": len(t), "start": t[:50]}
                      for name, ts in texts.items() for i, t in enumerate(ts)]))

# %% [markdown]
# ## Perplexity
#
# Texts longer than the model's context are scored with a sliding window (`eval.ppl_stride`): each window scores
# only its new tokens, so every token sees at least context - stride tokens before it. `mean_ppl` averages the
# texts' perplexities; `token_ppl` weighs every token the same. `bpb` (bits per byte: the summed loss in bits over
# the texts' UTF-8 bytes) does not depend on the tokenizer, so it compares with models that use another one
# (nanochat-japanese reports 0.80).

# %%
ppl = nbhelpers.evaluation.score_perplexity(run, models, texts, cfg.eval, device=device, after_batch=after_batch)
ppl_table = nbhelpers.evaluation.perplexity_table(ppl)
display(ppl_table.round({"mean_ppl": 2, "token_ppl": 2, "bpb": 4}))

# %%
nbhelpers.plots.plot_perplexity(ppl_table, path=run.eval / "perplexity.png")

# %% [markdown]
# ## lm-evaluation-harness
#
# `eval.local_tasks` true (smoke): the offline copies over a few examples bundled with nbhelpers, which say
# nothing about quality but run without a network. Otherwise the leaderboard tasks with their data from the hub,
# read without loading scripts (`eval.hub_source=script_free`: JAQKET v2 from its JSON files, JCommonsenseQA and
# JSQuAD from parquet copies); `leaderboard` runs lm-eval's own tasks, which need `datasets<4`. `eval.limit` caps
# the examples per task.

# %%
lm = nbhelpers.evaluation.score_lm_eval(run, models, cfg.eval, device=device) if cfg.eval.lm_eval else {}
for name, res in lm.items():
    display(Markdown(f"**{name}**\n\n" + nbhelpers.evaluation.results_markdown(res)))

# %%
if lm:
    nbhelpers.plots.plot_lm_eval({m: nbhelpers.evaluation.headline_scores(r) for m, r in lm.items()},
                                 path=run.eval / "lm_eval.png")

# %% [markdown]
# ## Answers before and after tuning
#
# The same prompts (fixed questions and arithmetic word problems) to each model, greedy, in the tuning format.

# %%
samples = nbhelpers.report.sample_answers(models, tokenizer, nbhelpers.generate.demo_prompts(), cfg.sft.template,
                                          cfg.sft.prompt_prefix, cfg.sft.max_new_tokens, device=device)
display(pd.DataFrame(samples))

# %%
nbhelpers.evaluation.save_results(run.eval / "results.json", ppl, lm, texts={k: len(v) for k, v in texts.items()},
                                  local_tasks=cfg.eval.local_tasks, samples=samples)
figures = nbhelpers.evaluation.eval_figures(ppl, lm)
run.record("eval", figures)
display(figures)

# %% [markdown]
# ## The run at a glance
#
# `eval/report.md`: configuration, data and its shares with licences, tokens, hours, losses, bits per byte, the
# lm-eval tables and the sample answers, all from the run's records. The model cards get the same evaluation.

# %%
print(nbhelpers.evaluation.run_summary(run))
report_path = nbhelpers.report.write_report(run.root)
cards = nbhelpers.model_card.write_cards(run.root)
print("report card:", report_path, "\nmodel cards:", *cards)
display(Markdown(report_path.read_text(encoding="utf-8")))
