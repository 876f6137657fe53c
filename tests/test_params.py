"""params.yaml against the dataclasses: every section names its dataclass, sets every field, and its values are the
dataclass defaults (so code that builds a config without params.yaml behaves like the pipeline); every profile
loads into every section."""
from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from pathlib import Path

import pytest
import yaml

from searchr3.config import from_dict, load_params, section

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
# `model:                          # searchr3/model/config.py: ModelConfig`
SECTION = re.compile(r"^(?P<name>\w+):\s+#\s*(?P<file>searchr3/[\w/]+\.py):\s*(?P<cls>\w+)", re.MULTILINE)


def sections() -> dict[str, type]:
    found = {}
    for m in SECTION.finditer(PARAMS.read_text()):
        module = importlib.import_module(m["file"].removesuffix(".py").replace("/", "."))
        found[m["name"]] = getattr(module, m["cls"])
    return found


def raw_params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def test_every_section_names_its_dataclass():
    top = set(raw_params()) - {"profile", "profiles"}
    named = sections()
    assert top == set(named), f"sections without a `# searchr3/...py: Class` comment: {sorted(top - set(named))}"
    assert all(dataclasses.is_dataclass(cls) for cls in named.values())
    assert {"model", "data", "validate", "sft", "rl", "index", "evaluate", "promote"} <= set(named)


def unset_fields(cls: type, values: dict, where: str) -> list[str]:
    """Fields of ``cls`` (and of nested dataclasses) that params.yaml leaves to the code's default."""
    hints = typing.get_type_hints(cls)
    missing = []
    for f in dataclasses.fields(cls):
        if f.name not in values:
            missing.append(f"{where}.{f.name}")
        elif dataclasses.is_dataclass(hints[f.name]) and isinstance(values[f.name], dict):
            missing += unset_fields(hints[f.name], values[f.name], f"{where}.{f.name}")
    return missing


def test_params_yaml_sets_every_field():
    raw = raw_params()
    missing = [m for name, cls in sections().items() for m in unset_fields(cls, raw[name] or {}, name)]
    assert not missing, f"set in the code only, not in params.yaml: {missing}"


def differences(built, default, where: str) -> list[str]:
    out = []
    for f in dataclasses.fields(default):
        a, b = getattr(built, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            out += differences(a, b, f"{where}.{f.name}")
        elif a != b:
            out.append(f"{where}.{f.name}: params.yaml {a!r} != default {b!r}")
    return out


def test_dataclass_defaults_equal_params_yaml():
    params = load_params(PARAMS, profile="default")
    diffs = [d for name, cls in sections().items() for d in differences(section(params, name, cls), cls(), name)]
    assert not diffs, "\n".join(diffs)


def test_the_comparison_catches_a_drift():
    name, cls = next((n, c) for n, c in sections().items() if n == "sft")
    values = dict(raw_params()["sft"], lr=raw_params()["sft"]["lr"] * 2)
    assert differences(from_dict(cls, values, where=name), cls(), name) == [
        f"sft.lr: params.yaml {values['lr']!r} != default {cls().lr!r}"]


@pytest.mark.parametrize("profile", sorted(raw_params()["profiles"]))
def test_every_profile_loads_into_every_section(profile):
    params = load_params(PARAMS, profile=profile)
    assert params["_profile"] == profile
    for name, cls in sections().items():
        assert dataclasses.is_dataclass(section(params, name, cls))
