"""params.yaml is the single source of truth; each section maps onto a dataclass.

The dataclass for a section lives beside the code it configures (``searchr3.data.config``,
``searchr3.train.sft_config`` ...), TRL style. This module only reads the YAML, applies a
profile and turns a section into its dataclass, refusing unknown keys.

Profiles: ``params.yaml`` may hold ``profiles: {name: {section: {key: value}}}``; the active
profile is ``profile:`` at the top level (or the ``SEARCHR3_PROFILE`` environment variable)
and its values are deep-merged over the sections.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
DEFAULT_PARAMS = Path("params.yaml")
# Sections that were renamed or merged: a file (or profile) still using one is refused, not silently ignored.
MOVED_SECTIONS = {"eval": "its keys top_k, cache_dir and minilm_batch_size belong in `evaluate:`, "
                          "and its `bm25:` block is the top-level `bm25:` section"}


class ConfigError(ValueError):
    pass


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def load_params(path: str | Path = DEFAULT_PARAMS, profile: str | None = None,
                overrides: dict[str, Any] | None = None) -> dict:
    """Read params.yaml, merge the active profile, then dotted ``overrides`` ({"sft.lr": 1e-4})."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: parameters file not found")
    raw = yaml.safe_load(path.read_text()) or {}
    profiles = raw.pop("profiles", {}) or {}
    name = profile or os.environ.get("SEARCHR3_PROFILE") or raw.pop("profile", None)
    raw.pop("profile", None)
    if name and name != "default":
        if name not in profiles:
            raise ConfigError(f"{path}: unknown profile {name!r}; known: {sorted(profiles)}")
        raw = _deep_merge(raw, profiles[name])
    for k, v in (overrides or {}).items():
        _set_dotted(raw, k, v)
    for old, new in MOVED_SECTIONS.items():
        if old in raw:
            raise ConfigError(f"{path}: the `{old}:` section is gone; {new}")
    raw["_profile"] = name or "default"
    return raw


def section(params: dict, name: str, cls: type[T]) -> T:
    """Build dataclass ``cls`` from ``params[name]``; unknown keys are an error naming them."""
    values = params.get(name, {}) or {}
    return from_dict(cls, values, where=name)


def from_dict(cls: type[T], values: dict, where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"params.yaml [{where or cls.__name__}]: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for k, v in values.items():
        sub = hints.get(k)
        if dataclasses.is_dataclass(sub) and isinstance(v, dict):
            v = from_dict(sub, v, where=f"{where}.{k}")
        kwargs[k] = v
    return cls(**kwargs)
