"""Dataclass configs: paper defaults in code, then per-family defaults, a YAML file, and `--set key=value`.

Every override is checked against the dataclass: an unknown key is an error naming the valid keys, and a
value is coerced to the field's type (so `--set hidden=[512,512]` and `--set actor_lr=1e-4` both work; a
`Literal[...]` field accepts only its choices).
The resolved config is saved in the run folder and hashed into the results row.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from pathlib import Path

import yaml

from offrl.errors import OfflineRLError


def _coerce(value, annotation, key: str):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in (float, "float"):
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OfflineRLError(f"config key {key}: expected a number, got {value!r}")
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
            except OfflineRLError:
                continue
        raise OfflineRLError(f"config key {key}: {value!r} does not fit {annotation}")
    return value


def apply(config, overrides: dict):
    """A copy of `config` with `overrides` applied, each checked and coerced."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise OfflineRLError(f"unknown config key {key!r} for {type(config).__module__.split('.')[-1]}{hint}; "
                                 f"valid keys: {', '.join(fields)}")
        changes[key] = _coerce(value, hints[key], key)
    return dataclasses.replace(config, **changes)


def parse_set(items) -> dict:
    """['a=1', 'b=[1,2]'] -> {'a': 1, 'b': [1, 2]} (values parsed as YAML)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise OfflineRLError(f"--set takes key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def load_yaml(path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise OfflineRLError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise OfflineRLError(f"config file {path} must hold a mapping of key: value")
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
