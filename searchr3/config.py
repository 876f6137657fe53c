"""params.yaml is the single source of truth; each section maps onto a dataclass.

The dataclass for a section lives beside the code it configures (``searchr3.data.config``,
``searchr3.train.sft_config`` ...), TRL style. This module only reads the YAML, applies a
profile and turns a section into its dataclass, refusing unknown keys.

Profiles: ``params.yaml`` may hold ``profiles: {name: {section: {key: value}}}``; the active
profile is ``profile:`` at the top level (or the ``SEARCHR3_PROFILE`` environment variable)
and its values are deep-merged over the sections.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from searchr3.errors import ConfigError

__all__ = ["ConfigError", "from_dict", "load_params", "section"]

T = TypeVar("T")
DEFAULT_PARAMS = Path("params.yaml")
PROFILE_ENV = "SEARCHR3_PROFILE"
# Sections that were renamed or merged: a file (or profile) still using one is refused, not silently ignored.
MOVED_SECTIONS = {"eval": "its keys top_k, cache_dir and minilm_batch_size belong in `evaluate:`, "
                          "and its `bm25:` block is the top-level `bm25:` section"}


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


def parse_override(item: str) -> tuple[str, Any]:
    """``SECTION.KEY=VALUE`` (``--set`` on the command lines) → (dotted key, value); the value is read as JSON
    when it can be (``2``, ``1e-4``, ``true``, ``[1, 2]``), else kept as text. An argparse ``type=``: a bad item
    raises ArgumentTypeError, which the parser reports as a one-line usage error."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE (e.g. sft.temperature=0.05), got {item!r}")
    try:
        return key.strip(), json.loads(text)
    except json.JSONDecodeError:
        return key.strip(), text


class _Overrides(argparse.Action):
    """Each ``--set SECTION.KEY=VALUE`` into one dict (a key given twice: the last wins)."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, {**getattr(namespace, self.dest), value[0]: value[1]})


def add_overrides_argument(parser: argparse.ArgumentParser, note: str = "") -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable) on a command line, collected into ``args.overrides`` (a dict)."""
    parser.add_argument("--set", dest="overrides", action=_Overrides, type=parse_override, default={},
                        metavar="SECTION.KEY=VALUE",
                        help="override one parameter after the profile, e.g. --set sft.temperature=0.05 (repeatable; "
                             "the value is read as JSON when it can be)" + note)


def _read_yaml(path: Path) -> dict:
    """The top-level mapping of a YAML file; every failure is a ConfigError naming the file."""
    if not path.exists():
        raise ConfigError("parameters file not found (pass --params FILE, or run from the project folder)", path)
    if not path.is_file():
        raise ConfigError("is not a regular file (a parameters file is YAML text)", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})", path) from None
    except OSError as err:
        raise ConfigError(f"cannot be read: {err.strerror}", path) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: broken YAML: {problem}", path) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping of sections at the top level, got {type(raw).__name__}", path)
    return raw


def load_params(path: str | Path = DEFAULT_PARAMS, profile: str | None = None,
                overrides: dict[str, Any] | None = None) -> dict:
    """Read params.yaml, merge the active profile, then dotted ``overrides`` ({"sft.lr": 1e-4}).

    The result also holds ``_profile`` (the active profile's name) and ``_file`` (the path read), so
    that :func:`section` can name the file in its errors.
    """
    path = Path(path)
    raw = _read_yaml(path)
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"[profiles]: expected a mapping of profile names, got {type(profiles).__name__}", path)
    name, origin = profile, "--profile"
    if not name and os.environ.get(PROFILE_ENV):
        name, origin = os.environ[PROFILE_ENV], f"the {PROFILE_ENV} environment variable"
    if not name and raw.get("profile"):
        name, origin = raw["profile"], "`profile:` in the file"
    raw.pop("profile", None)
    if name and name != "default":
        if name not in profiles:
            raise ConfigError(f"unknown profile {name!r} (from {origin}); known: {['default', *sorted(profiles)]}",
                              path)
        if not isinstance(profiles[name], dict):
            raise ConfigError(f"[profiles.{name}]: expected a mapping of sections", path)
        raw = _deep_merge(raw, profiles[name])
    for k, v in (overrides or {}).items():
        section_name = k.split(".")[0]
        if not isinstance(raw.get(section_name), dict):
            known = sorted(name for name, value in raw.items() if isinstance(value, dict))
            raise ConfigError(f"override {k}={v!r}: no section `{section_name}:` to set it in; known: {known}", path)
        _set_dotted(raw, k, v)
    for old, new in MOVED_SECTIONS.items():
        if old in raw:
            raise ConfigError(f"the `{old}:` section is gone; {new}", path)
    raw["_profile"] = name or "default"
    raw["_file"] = str(path)
    return raw


def written_profile(path: str | Path = DEFAULT_PARAMS) -> str:
    """The ``profile:`` params.yaml itself names ("default" when it names none): the one DVC records."""
    return (yaml.safe_load(Path(path).read_text()) or {}).get("profile") or "default"


def profile_mismatch(path: str | Path = DEFAULT_PARAMS, profile: str | None = None) -> str | None:
    """Why SEARCHR3_PROFILE must not apply to a DVC-run stage, or None when it agrees with the run's profile.

    The run's profile is ``profile`` (a flow's parameter, which :func:`profile_for_run` writes into
    params.yaml for the run) or else the one params.yaml names. DVC records params.yaml, not the
    environment: a stage run under another profile would be cached and locked as if it were that profile."""
    env = os.environ.get("SEARCHR3_PROFILE")
    written = written_profile(path)
    if not env or env == (profile or written):
        return None
    if profile:
        return (f"SEARCHR3_PROFILE={env} but this run's profile parameter is {profile}, and dvc records only "
                f"{path}; unset SEARCHR3_PROFILE and pass the profile as the flow's parameter "
                f"(--param profile={env})")
    return (f"SEARCHR3_PROFILE={env} but {path} says profile: {written}, and dvc records only {path}; "
            f"unset SEARCHR3_PROFILE and run `make run PROFILE={env}` (or `dvc exp run -S profile={env}`; "
            f"a flow takes --param profile={env})")


def section(params: dict, name: str, cls: type[T]) -> T:
    """Build dataclass ``cls`` from ``params[name]``; unknown keys and wrong types are errors naming them."""
    values = params.get(name, {}) or {}
    try:
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}]: expected a mapping of keys, got {type(values).__name__}")
        return from_dict(cls, values, where=name)
    except ConfigError as err:
        if err.file is None and params.get("_file"):
            err.file = params["_file"]
            profile = params.get("_profile")
            if profile and profile != "default":
                err.message += f" (profile {profile})"
        raise


def _type_name(hint) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _accepts(hint, value) -> bool:
    """Whether ``value`` (as YAML gave it) fits the annotation ``hint``; unknown annotations accept anything."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        return isinstance(value, list) and all(_accepts(args[0], v) for v in value) if args else isinstance(value, list)
    if origin is tuple or hint is tuple:
        return isinstance(value, list | tuple)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict) or isinstance(value, hint)
    return True


def _why(hint, value) -> str:
    if isinstance(value, str) and _accepts(hint, 0.5) and not _accepts(hint, value):
        try:
            float(value)
            return " (YAML reads a number such as 1e-4 as text; write it with a dot: 1.0e-4)"
        except ValueError:
            pass
    return ""


def from_dict(cls: type[T], values: dict, where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"[{where or cls.__name__}]: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for k, v in values.items():
        sub = hints.get(k)
        if sub is not None and not _accepts(sub, v):
            raise ConfigError(f"[{where}.{k}]: expected {_type_name(sub)}, got {v!r} ({type(v).__name__})"
                              f"{_why(sub, v)}")
        if dataclasses.is_dataclass(sub) and isinstance(v, dict):
            v = from_dict(sub, v, where=f"{where}.{k}")
        kwargs[k] = v
    return cls(**kwargs)


# --- the profile written in params.yaml (what `dvc repro` sees) -------------------------------------------------

_PROFILE_LINE = re.compile(r"^profile:[ \t]*(?P<name>[^\s#]*)[ \t]*(?P<note>#.*)?$", re.MULTILINE)
_OVERRIDE_NOTE = re.compile(r"# set for one run \(was: (?P<was>[^)\s]+)\)")


def _write_profile_line(path: Path, name: str, note: str = "", line: str | None = None) -> None:
    from searchr3.files import write_text_atomic

    text = path.read_text()
    line = line or f"profile: {name}" + (f"  {note}" if note else "")
    if _PROFILE_LINE.search(text):
        text = _PROFILE_LINE.sub(lambda _: line, text, count=1)
    else:
        text = line + "\n" + text
    write_text_atomic(path, text)


def restore_interrupted_profile(path: str | Path = DEFAULT_PARAMS) -> str | None:
    """Undo the ``profile:`` a killed run of :func:`profile_for_run` left in params.yaml; returns what was restored."""
    path = Path(path)
    found = _PROFILE_LINE.search(path.read_text())
    was = _OVERRIDE_NOTE.search(found.group("note") or "") if found else None
    if was is None:
        return None
    _write_profile_line(path, was.group("was"))
    return was.group("was")


@contextlib.contextmanager
def profile_for_run(profile: str | None, path: str | Path = DEFAULT_PARAMS):
    """params.yaml says ``profile:`` ``profile`` for the duration of the block, then what it said before.

    ``dvc repro`` reads the profile only from params.yaml (every stage lists it as a param, so dvc.lock records
    it); this is how a run with another profile is recorded as that profile, as ``dvc exp run -S profile=NAME``
    would, without leaving the file changed. The line carries a note naming the profile to restore, so a run
    killed before its end is undone by the next one (:func:`restore_interrupted_profile`). Yields the profile
    in effect; ``None`` or the written profile changes nothing."""
    path = Path(path)
    restore_interrupted_profile(path)
    written = written_profile(path)
    if profile is None or profile == written:
        yield written
        return
    known = sorted((yaml.safe_load(path.read_text()) or {}).get("profiles") or {})
    if profile != "default" and profile not in known:
        raise ConfigError(f"{path}: unknown profile {profile!r}; known: {['default', *known]}")
    found = _PROFILE_LINE.search(path.read_text())
    _write_profile_line(path, profile, f"# set for one run (was: {written})")
    try:
        yield profile
    finally:
        _write_profile_line(path, written, line=found.group(0) if found else None)
