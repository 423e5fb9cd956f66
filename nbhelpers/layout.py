"""The names of the run directory's files and folders: one home for each, read by every stage that touches them.

runs/<name>/ holds config.json, metrics.json, tokenizer/ (spm.model), corpus/ (manifest.json), pretrain/ and sft/
(checkpoints/step_*/state.json, metrics.jsonl, sessions.jsonl, final/), eval/ and xla_cache/; docs/ARCHITECTURE.md
draws the tree.
"""

from __future__ import annotations

import numpy as np

CONFIG_FILE = "config.json"  # the run's resolved configuration (and, in final/, the model's HF configuration)
RUN_METRICS = "metrics.json"  # one object: each stage's headline figures
STAGE_METRICS = "metrics.jsonl"  # a training stage's history: one record per log, eval and event
SESSIONS_FILE = "sessions.jsonl"  # a training stage's sessions: each one's start and end (steps, tokens)
FINAL = "final"  # a stage's finished model: AutoModelForCausalLM.from_pretrained(this)
CHECKPOINTS = "checkpoints"  # a training stage's resumable states, one step_NNNNNNNN/ folder each
STEP_PREFIX = "step_"
STATE_FILE = "state.json"  # in a checkpoint: step, data position, RNG; written last, so its presence means complete
MANIFEST = "manifest.json"  # the corpus: its settings, files and checksums
SPM_FILE = "spm.model"  # the tokenizer's SentencePiece model
EVAL_DIR = "eval"  # 06's results.json, lm-eval outputs and report.md (the run's report card)
XLA_CACHE = "xla_cache"  # torch_xla's compiled programs, reused by the next session (carried on Kaggle)
TOKEN_DTYPE = np.uint16  # token ids on disk: the vocabulary (32,000 at most by the rules) fits 16 bits


def step_dir(step: int) -> str:
    """A checkpoint folder's name: zero-padded, so names sort by step."""
    return f"{STEP_PREFIX}{step:08d}"
