"""Instruction tuning (04): the instruction data, its batches with replay of pre-training text, the tuning's
TrainConfig, and the checks of what tuning changed.

`instructions` (data layer: load, validate, dedup, split, encode), `tuning` (batches with replay, TrainConfig),
`responses` (greedy answers to held-out prompts, the headline figures). `nbhelpers.sft.X` names them all.
"""

from __future__ import annotations

from ..registry import InstructionDataError as InstructionDataError  # re-exported: config checks the names below it
from ..registry import data_name_problem as data_name_problem
from .instructions import BUNDLED_FILE as BUNDLED_FILE
from .instructions import Example as Example
from .instructions import InstructionData as InstructionData
from .instructions import attach_chat_template as attach_chat_template
from .instructions import data_table as data_table
from .instructions import dedup as dedup
from .instructions import encode as encode
from .instructions import explain_row as explain_row
from .instructions import interleave as interleave
from .instructions import load_instructions as load_instructions
from .instructions import load_source as load_source
from .instructions import pad_id as pad_id
from .instructions import read_hub as read_hub
from .instructions import read_jsonl as read_jsonl
from .instructions import trained_tokens as trained_tokens
from .instructions import validate as validate
from .instructions import validate_messages as validate_messages
from .responses import extract_answer as extract_answer
from .responses import inference_device as inference_device
from .responses import record_figures as record_figures
from .responses import response_figures as response_figures
from .tuning import MIN_STEPS as MIN_STEPS
from .tuning import SFTBatches as SFTBatches
from .tuning import corpus_eval_batches as corpus_eval_batches
from .tuning import make_batches as make_batches
from .tuning import replay_share as replay_share
from .tuning import train_config as train_config
from .tuning import use_fixed_length as use_fixed_length
