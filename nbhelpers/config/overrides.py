"""`section.field=value` overrides (the CLI's --set, a notebook's parameters, config.json): parsed, type-checked, validated."""

from __future__ import annotations

import difflib
import json
import types
import typing
from dataclasses import fields, is_dataclass, replace
from typing import Any

from .rules import ConfigError
from .run import RunConfig, validate


def _parse_value(text: str) -> Any:
    """JSON when it parses, the plain string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _coerce(value, arm, key)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e6 parses as a float
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin is tuple:
        if isinstance(value, str):
            value = [value]  # a single string where a tuple of strings is expected
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        kt, vt = args
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    raise bad


def _all_keys(cfg: RunConfig) -> list[str]:
    keys = []
    for f in fields(cfg):
        sub = getattr(cfg, f.name)
        if is_dataclass(sub):
            keys += [f"{f.name}.{g.name}" for g in fields(sub)]
    return keys



def apply_overrides(cfg: RunConfig, overrides: typing.Iterable[str] | dict[str, Any]) -> RunConfig:
    """Return `cfg` with `section.field=value` overrides applied, type-checked and validated (see `validate`)."""
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    known = _all_keys(cfg)
    for key, value in items:
        if isinstance(value, str) and not isinstance(overrides, dict):
            value = _parse_value(value)
        if key not in known:
            same_field = [k for k in known if k.split(".")[-1] == key.split(".")[-1]]
            close = same_field + [k for k in difflib.get_close_matches(key, known, n=3, cutoff=0.5) if k not in same_field]
            hint = f"; did you mean {', '.join(close)}?" if close else "; keys look like train.lr"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        section, name = key.split(".", 1)
        sub = getattr(cfg, section)
        hints = typing.get_type_hints(type(sub))
        value = _coerce(value, hints[name], key)
        cfg = replace(cfg, **{section: replace(sub, **{name: value})})
    return validate(cfg)


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (for example train.lr=3e-4)")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


