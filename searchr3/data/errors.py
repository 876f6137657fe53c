"""Errors for bad input: always name the file, the line (1-based) and the rule broken.

The classes live in :mod:`searchr3.errors` (with their exit codes); this module keeps the import
path the data layer has always used.
"""
from __future__ import annotations

from searchr3.errors import ArtifactError, DataError

__all__ = ["ArtifactError", "DataError"]
