"""The production record: which model and index snapshot users search, and the metrics that promoted them.

``production/record.json`` = {"model", "index", "metrics", "gate": {...}, "git_rev", "promoted_at", "run"}.
Written only by promotion (``searchr3.promote``); absent until the first promotion, in which case
the pipeline's own outputs (``models/rl``, ``indexes/production``) are used.
"""
from __future__ import annotations

from pathlib import Path

from searchr3.files import read_json_if_exists
from searchr3.paths import PATHS

RECORD = Path(PATHS["record"])


def read_record(path: str | Path = RECORD) -> dict | None:
    return read_json_if_exists(path)


def production_model(path: str | Path = RECORD) -> str:
    record = read_record(path)
    return record["model"] if record else PATHS["rl"]


def production_index(path: str | Path = RECORD) -> str:
    record = read_record(path)
    return record["index"] if record else PATHS["index"]
