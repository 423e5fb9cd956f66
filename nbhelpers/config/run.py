"""RunConfig (every section of one run, its dict and fingerprint) and the checks that need all of it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .corpus import CorpusConfig, TokenizerConfig
from .evaluation import EvalConfig
from .model import ModelConfig
from .rules import ConfigError, cross_problems, field_problems, raise_problems
from .sft import SFTConfig
from .train import TrainConfig


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs."""

    profile: str = "colab_t4"  # the profile it started from (a PROFILES name, or "custom")
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """Short hash of the named sections (all when none are named)."""
        data = self.to_dict()
        picked = {k: data[k] for k in (sections or tuple(data))}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]



def _sections() -> dict[type, str]:
    """Section dataclass -> its name in RunConfig."""
    return {typing.get_type_hints(RunConfig)[f.name]: f.name for f in fields(RunConfig) if f.name != "profile"}


def validate(cfg: RunConfig, error: type[Exception] = ConfigError) -> RunConfig:
    """`cfg` when every field and cross-field rule holds; otherwise `error` naming every key, value and what was expected."""
    problems = [p for section, name in ((getattr(cfg, n), n) for n in _sections().values())
                for p in field_problems(name, section)]
    # a cross rule reads resolved values (the preset's numbers): only once every single field is sound
    raise_problems(problems or cross_problems(cfg), error)
    return cfg


def check_section(section: Any, error: type[Exception] = ConfigError) -> None:
    """Check one section (a TrainConfig given to device.select, a ModelConfig to model.resolve) by the same rules."""
    name = _sections()[type(section)]
    problems = field_problems(name, section)
    raise_problems(problems or cross_problems(replace(RunConfig(), **{name: section}), [name]), error)


def check_value(key: str, value: Any, error: type[Exception] = ConfigError) -> None:
    """Check one value against the rule declared for `key` ("corpus.workers"), for functions that take it alone."""
    section, name = key.split(".", 1)
    rule = next(f for f in fields(getattr(RunConfig(), section)) if f.name == name).metadata.get("rule")
    raise_problems(rule.problems(key, value) if rule else [], error)
