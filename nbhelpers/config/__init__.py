"""Run configuration: one frozen dataclass per section, profiles as functions, `key=value` overrides.

Every field says what it accepts next to its declaration: `setting(default, choices=..., ge=..., check=...)`
(rules.Rule), and rules that tie several fields together are `@cross_rule("section.a", "section.b")`
functions right below their section. `load`, `apply_overrides` and `from_dict` check all of them before
anything runs; a module that receives one section (device.select, model.resolve, the mixer) checks it with
`check_section`, and one value with `check_value`, so each rule lives here once.

rules (setting, Rule, cross_rule) < model, corpus (tokenizer + corpus), train < sft, evaluation < run
(RunConfig, validate, check_*) < overrides (--set) < profiles (PROFILES, load, from_dict). The sections are
imported in this order because it is the order their cross rules are checked and reported in.
"""

# the sections' order is the order their cross rules are checked and reported in
# isort: off
from .rules import CROSS_RULES as CROSS_RULES
from .rules import ConfigError as ConfigError
from .rules import Rule as Rule
from .rules import cross_rule as cross_rule
from .rules import setting as setting
from .model import ATTN_IMPLEMENTATIONS as ATTN_IMPLEMENTATIONS
from .model import DEPTHS as DEPTHS
from .model import PRESETS as PRESETS
from .model import ModelConfig as ModelConfig
from .model import Preset as Preset
from .model import depth_preset as depth_preset
from .model import model_parameters as model_parameters
from .model import model_value as model_value
from .corpus import MAX_VOCAB_SIZE as MAX_VOCAB_SIZE
from .corpus import MIN_VOCAB_SIZE as MIN_VOCAB_SIZE
from .corpus import NORMALIZATIONS as NORMALIZATIONS
from .corpus import ON_BAD_UTF8 as ON_BAD_UTF8
from .corpus import ON_EXHAUSTED as ON_EXHAUSTED
from .corpus import SEED_MIXTURE as SEED_MIXTURE
from .corpus import SMOKE_MIXTURE as SMOKE_MIXTURE
from .corpus import CorpusConfig as CorpusConfig
from .corpus import TokenizerConfig as TokenizerConfig
from .train import BACKENDS as BACKENDS
from .train import OPTIMIZERS as OPTIMIZERS
from .train import PRECISIONS as PRECISIONS
from .train import REPORT_TO as REPORT_TO
from .train import SCHEDULES as SCHEDULES
from .train import TrainConfig as TrainConfig
from .train import nproc_problem as nproc_problem
from .train import precision_problem as precision_problem
from .sft import ON_INVALID as ON_INVALID
from .sft import OVERFLOWS as OVERFLOWS
from .sft import PROMPT_PREFIXES as PROMPT_PREFIXES
from .sft import REAL_SFT_DATA as REAL_SFT_DATA
from .sft import SFTConfig as SFTConfig
from .sft import template_problem as template_problem
from .evaluation import HUB_SOURCES as HUB_SOURCES
from .evaluation import EvalConfig as EvalConfig
from .run import RunConfig as RunConfig
from .run import check_section as check_section
from .run import check_value as check_value
from .run import validate as validate
from .overrides import apply_overrides as apply_overrides
from .profiles import PROFILES as PROFILES
from .profiles import colab_t4 as colab_t4
from .profiles import from_dict as from_dict
from .profiles import kaggle_t4x2 as kaggle_t4x2
from .profiles import kaggle_tpu_v5e8 as kaggle_tpu_v5e8
from .profiles import load as load
from .profiles import smoke as smoke
# isort: on
