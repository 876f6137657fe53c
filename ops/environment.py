"""The environment of the processes this project starts: offline variables, and tools beside the interpreter.

``offline.env`` (beside this module) is the one list of offline/no-telemetry variables; the Makefile
``include``s the same file. Commands (``dvc``, ``prefect``) are looked up in the virtual environment of the
running interpreter first, and that environment's ``bin/`` goes first on the ``PATH`` of what we start, so
a stage command (``searchr3 stage NAME``) resolves to this interpreter's package.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

OFFLINE_ENV_FILE = Path(__file__).with_name("offline.env")


def read_env_file(path: str | Path) -> dict[str, str]:
    """``NAME=value`` lines (``#`` comments and blank lines skipped); anything else is refused with its line."""
    env: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.isidentifier() or name != name.strip() or value != value.strip():
            raise ValueError(f"{path}:{number}: expected NAME=value, got {line!r}")
        env[name] = value
    return env


def offline_env() -> dict[str, str]:
    """The variables of ``ops/offline.env``."""
    return read_env_file(OFFLINE_ENV_FILE)


def apply_offline_env(environ=os.environ) -> None:
    """Set every offline variable in ``environ`` (overriding what is there: offline is not optional)."""
    environ.update(offline_env())


def find_tool(name: str) -> str:
    """The ``name`` command beside this interpreter (its virtual environment), else the one on ``PATH``."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"the {name} command is not installed in this environment")
    return found


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` plus the offline variables plus ``extra``, with this interpreter's ``bin/`` first on PATH."""
    env = {**os.environ, **offline_env(), **(extra or {})}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
