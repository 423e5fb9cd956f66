"""What a field accepts (`setting`, `Rule`), rules over several fields (`cross_rule`), and how problems are reported.

Every field says what it accepts next to its declaration: `setting(default, choices=..., ge=..., check=...)`,
and rules that tie several fields together are `@cross_rule("section.a", "section.b")` functions right below
their section. The checks that need the whole RunConfig (validate, check_section, check_value) are in run.py.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A profile name, override key or value that does not fit the configuration."""


@dataclass(frozen=True)
class Rule:
    """What a field accepts beyond its type. Choices and bounds apply to a scalar, to each item of a tuple
    and to each value of a dict; `check` sees the whole value and returns what was expected, or None."""

    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None  # a callable: names known elsewhere
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    check: Callable[[Any], str | None] | None = None
    note: str = ""  # why, appended to the error

    def bounds(self) -> str:
        """The range in words: '>= 1', 'in [0, 1)'."""
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f"{'>=' if self.ge is not None else '>'} {low[1:]}"
        if high:
            return f"{'<=' if self.le is not None else '<'} {high[:-1]}"
        return ""

    def problems(self, key: str, value: Any) -> list[str]:
        """Every way `value` breaks this rule, each naming the key, the value and what was expected."""
        out = []
        if isinstance(value, dict):
            items = [(f"{key}[{k!r}]", v) for k, v in value.items()]
        elif isinstance(value, tuple):
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(key, value)]
        note = f" ({self.note})" if self.note else ""
        for where, item in items:
            if isinstance(item, float) and not math.isfinite(item):
                out.append(f"{where}: expected a finite number, got {item!r}")
                continue
            if self.choices is not None and isinstance(item, str):
                allowed = tuple(self.choices() if callable(self.choices) else self.choices)
                if item not in allowed:
                    close = difflib.get_close_matches(item, allowed, n=2, cutoff=0.5)
                    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                    out.append(f"{where}: expected {' | '.join(allowed)}, got {item!r}{hint}{note}")
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not (
                    (self.ge is None or item >= self.ge) and (self.gt is None or item > self.gt)
                    and (self.le is None or item <= self.le) and (self.lt is None or item < self.lt)):
                out.append(f"{where}: expected {self.bounds()}, got {item!r}{note}")
        if self.check is not None and not out:
            expected = self.check(value)
            if expected:
                out.append(f"{key}: expected {expected}, got {value!r}{note}")
        return out


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def setting(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **rule: Any) -> Any:
    """A dataclass field with its Rule (keywords of Rule): `micro_batch: int = setting(8, ge=1)`."""
    meta = {"rule": Rule(**rule)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# (keys it reads, function of the RunConfig returning what is wrong or None), in declaration order
CROSS_RULES: list[tuple[tuple[str, ...], Callable[[Any], str | None]]] = []


def cross_rule(*keys: str) -> Callable[[Callable[[Any], str | None]], Callable[[Any], str | None]]:
    """Register a rule over several fields: the function takes the RunConfig and returns what is wrong, or None."""
    def register(fn: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        CROSS_RULES.append((keys, fn))
        return fn
    return register



def field_problems(section_name: str, section: Any) -> list[str]:
    """Every field of one section that breaks its own Rule, keyed `section.field`."""
    out = []
    for f in fields(section):
        rule = f.metadata.get("rule")
        if rule is not None:
            out += rule.problems(f"{section_name}.{f.name}", getattr(section, f.name))
    return out


def cross_problems(cfg: Any, sections: Iterable[str] | None = None) -> list[str]:
    """Cross rules whose keys all lie in `sections` (all when None); skipped when a key they read already failed."""
    out = []
    for keys, rule in CROSS_RULES:
        if sections is None or all(k.split(".")[0] in sections for k in keys):
            problem = rule(cfg)
            if problem:
                out.append(problem)
    return out


def raise_problems(problems: list[str], error: type[Exception]) -> None:
    """Raise `error` with the one problem, or with all of them counted; nothing when there are none."""
    if len(problems) == 1:
        raise error(problems[0])
    if problems:
        raise error(f"{len(problems)} configuration problems:\n  " + "\n  ".join(problems))
