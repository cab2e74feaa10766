"""Dataclass configs: paper defaults in code, then per-family defaults, a YAML file, and `--set key=value`.

Every override is checked against the dataclass: an unknown key is an error naming the valid keys, and a
value is coerced to the field's type (so `--set hidden=[512,512]` and `--set actor_lr=1e-4` both work; a
`Literal[...]` field accepts only its choices).
A value is also checked against its meaning, declared in the field's annotation next to its default:
`tau: Fraction = 0.005` (in (0, 1]), `batch_size: PositiveInt = 256`. The aliases below are
`typing.Annotated` types carrying a `Rule`; a broken rule is one error naming the key, the value and the rule.
Defaults are not checked when a config is built in code; everything that comes from a user (YAML, `--set`,
a run folder's run.yaml) goes through `apply`, and `validate` checks a whole config.
The resolved config is saved in the run folder and hashed into the results row.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import yaml

from offrl.errors import OfflineRLError
from offrl.rng import SEED_LIMIT


@dataclass(frozen=True)
class Rule:
    """What a value must be, attached to a field's type: `Annotated[float, Rule(lambda v: v > 0, "> 0")]`."""
    holds: Callable[[Any], bool]
    says: str  # completes "must be ...", e.g. "> 0" or "in (0, 1]"


class RuleBroken(OfflineRLError):
    """A value of the right type that breaks its field's Rule (kept apart so a union reports the rule)."""


PositiveInt = Annotated[int, Rule(lambda v: v > 0, "> 0")]  # sizes, widths, batch sizes, step counts
NonNegativeInt = Annotated[int, Rule(lambda v: v >= 0, ">= 0")]  # counts where 0 means "none" or "off"
Seed = Annotated[int, Rule(lambda v: 0 <= v < SEED_LIMIT, f"in [0, {SEED_LIMIT - 1}]")]
PositiveFloat = Annotated[float, Rule(lambda v: v > 0, "> 0")]  # learning rates, scales that divide
NonNegativeFloat = Annotated[float, Rule(lambda v: v >= 0, ">= 0")]  # loss weights, noise scales
UnitFloat = Annotated[float, Rule(lambda v: 0 <= v <= 1, "in [0, 1]")]  # discounts, probabilities
Fraction = Annotated[float, Rule(lambda v: 0 < v <= 1, "in (0, 1]")]  # Polyak τ: 0 would never update
OpenUnitFloat = Annotated[float, Rule(lambda v: 0 < v < 1, "in (0, 1)")]  # expectiles, held-out shares
Widths = Annotated[tuple[PositiveInt, ...], Rule(lambda v: len(v) > 0, "non-empty")]  # hidden layers


def _coerce(value, annotation, key: str):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        value = _coerce(value, args[0], key)
        for rule in args[1:]:
            if isinstance(rule, Rule) and not rule.holds(value):
                raise RuleBroken(f"config key {key}: {value!r} is not allowed: it must be {rule.says}")
        return value
    if annotation in (float, "float"):
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OfflineRLError(f"config key {key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise OfflineRLError(f"config key {key}: expected a finite number, got {value!r}")
        return float(value)
    if annotation in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise OfflineRLError(f"config key {key}: expected an integer, got {value!r}")
        return value
    if annotation in (bool, "bool"):
        if not isinstance(value, bool):
            raise OfflineRLError(f"config key {key}: expected true or false, got {value!r}")
        return value
    if annotation in (str, "str"):
        return str(value)
    if origin is typing.Literal:  # a closed set of choices, e.g. Literal["auto", "kdtree", "brute"]
        if value not in args:
            raise OfflineRLError(f"config key {key}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise OfflineRLError(f"config key {key}: expected a list, got {value!r}")
        inner = args[0] if args else None
        items = [_coerce(v, inner, key) if inner not in (None, Ellipsis) else v for v in value]
        return tuple(items) if (origin or annotation) is tuple else items
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except RuleBroken:
                raise  # the value has the right type: say which rule it breaks
            except OfflineRLError:
                continue
        raise OfflineRLError(f"config key {key}: expected {' or '.join(map(_describe, args))}, got {value!r}")
    return value


def _describe(annotation) -> str:
    """A field type in words, for errors: "an integer > 0", "null"."""
    if typing.get_origin(annotation) is Annotated:
        inner, *rules = typing.get_args(annotation)
        return " ".join([_describe(inner)] + [f"({r.says})" for r in rules if isinstance(r, Rule)])
    words = {float: "a number", int: "an integer", bool: "true or false", str: "a string", type(None): "null"}
    if annotation in words:
        return words[annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(annotation)))
    if typing.get_origin(annotation) in (tuple, list):
        return "a list"
    return str(annotation)


def apply(config, overrides: dict):
    """A copy of `config` with `overrides` applied, each checked and coerced."""
    if not isinstance(overrides, dict):
        raise OfflineRLError(f"config overrides must be a mapping of key: value, got {type(overrides).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config), include_extras=True)
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise OfflineRLError(f"unknown config key {key!r} for {type(config).__module__.split('.')[-1]}{hint}; "
                                 f"valid keys: {', '.join(fields)}")
        changes[key] = _coerce(value, hints[key], key)
    return dataclasses.replace(config, **changes)


def validate(config) -> None:
    """Check every field of `config` against its type and rules (e.g. a config built in code or a test)."""
    apply(config, dataclasses.asdict(config))


def parse_set(items) -> dict:
    """['a=1', 'b=[1,2]'] -> {'a': 1, 'b': [1, 2]} (values parsed as YAML)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise OfflineRLError(f"--set takes key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise OfflineRLError(f"--set {item}: the value is not valid YAML ({' '.join(str(exc).split())})") from None
    return out


def load_yaml(path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OfflineRLError(f"cannot read config file {path}: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError:
        raise OfflineRLError(f"config file {path} is not a text file") from None
    if data is None:  # an empty file
        return {}
    if not isinstance(data, dict):
        raise OfflineRLError(f"config file {path} must hold a mapping of key: value, not a {type(data).__name__}")
    return data


def to_dict(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def config_hash(config, digits: int = 12) -> str:
    """SHA-256 (hex) of a config, a dataclass or the dict run.yaml stores, as canonical JSON (tuples as
    lists); its first `digits` digits: results rows keep 12, the artefact cache all 64."""
    values = to_dict(config) if dataclasses.is_dataclass(config) else config
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:digits]


def dict_hash(values: dict) -> str:
    """The config hash of a config already turned into a dict (as run.yaml stores it)."""
    return config_hash(values)


def resolve_config(info, family: str, file: str | None = None, overrides: dict | None = None):
    """Paper defaults -> the agent's per-family defaults -> YAML file -> --set overrides."""
    config = info.config_cls()
    config = apply(config, info.family_defaults.get(family, {}))
    if file:
        config = apply(config, load_yaml(file))
    return apply(config, overrides or {})
