"""Errors for bad input: always name the file, the line (1-based) and the rule broken."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Raised when an input file breaks a rule. ``str(err)`` reads ``FILE:LINE: RULE: detail``."""

    def __init__(self, path: str | Path, line: int | None, rule: str, detail: str = ""):
        self.path = str(path)
        self.line = line
        self.rule = rule
        self.detail = detail
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {rule}" + (f": {detail}" if detail else ""))
