"""The names of the run directory's files and folders: one home for each, read by every stage that touches them.

runs/<name>/ holds config.json, metrics.json, tokenizer/ (spm.model), corpus/ (manifest.json), pretrain/ and sft/
(checkpoints/step_*/state.json, metrics.jsonl, sessions.jsonl, final/), eval/ and xla_cache/; docs/ARCHITECTURE.md
draws the tree.
"""

from __future__ import annotations

import numpy as np

CONFIG_FILE = "config.json"  # the run's resolved configuration (and, in final/, the model's HF configuration)
CONFIG_SUM = "config.json.sha256"  # `sha256sum -c` format: what nbhelpers last wrote to config.json (a hand edit shows)
LOCK_FILE = "run.lock"  # the run holding this run directory: pid, host, since (one run per run directory)
RUN_METRICS = "metrics.json"  # one object: each stage's headline figures
STAGE_METRICS = "metrics.jsonl"  # a training stage's history: one record per log, eval and event
STOP_FILE = "stopped.json"  # in a training stage's folder: the stage stopped by its time budget, to continue
INPUTS_FILE = "inputs.json"  # in a training stage's folder: what its checkpoints were trained from
SESSIONS_FILE = "sessions.jsonl"  # a training stage's sessions: each one's start and end (steps, tokens)
FINAL = "final"  # a stage's finished model: AutoModelForCausalLM.from_pretrained(this)
CHECKPOINTS = "checkpoints"  # a training stage's resumable states, one step_NNNNNNNN/ folder each
STEP_PREFIX = "step_"
STATE_FILE = "state.json"  # in a checkpoint: step, data position, RNG; written last, so its presence means complete
MANIFEST = "manifest.json"  # the corpus: its settings, files and checksums
SPM_FILE = "spm.model"  # the tokenizer's SentencePiece model
TOKENIZER = "tokenizer"  # stage 01's folder: spm.model and the HF tokenizer files
CORPUS = "corpus"  # stage 02's folder: the validation shard, manifest.json, the stream's start
PRETRAIN = "pretrain"  # stage 03's folder (a training stage: checkpoints/, metrics.jsonl, final/)
SFT = "sft"  # stage 04's folder, shaped like pretrain/
EVAL = "eval"  # stage 06's folder: results.json, report.md
TRAINING_STAGES = (PRETRAIN, SFT)  # the stages that train: checkpoints/, metrics.jsonl, sessions.jsonl, final/
REPORT_FILE = "report.md"  # in eval/: the run's report card
RESULTS_FILE = "results.json"  # in eval/: the evaluation's figures
RUN_NOTEBOOKS = "notebooks"  # the run's executed notebooks
XLA_CACHE = "xla_cache"  # torch_xla's compiled programs, reused by the next session (carried on Kaggle)
TOKEN_DTYPE = np.uint16  # token ids on disk, half the bytes of int32
MAX_VOCAB = int(np.iinfo(TOKEN_DTYPE).max) + 1  # 65,536: the largest vocabulary whose ids fit TOKEN_DTYPE (config's bound)


def step_dir(step: int) -> str:
    """A checkpoint folder's name: zero-padded, so names sort by step."""
    return f"{STEP_PREFIX}{step:08d}"
