"""The production record: which model and index snapshot users search, and the metrics that promoted them.

``production/record.json`` = {"model", "index", "metrics", "gate": {...}, "git_rev", "promoted_at", "run"}.
Written only by promotion (``searchr3.promote``); absent until the first promotion, in which case
the pipeline's own outputs (``models/rl``, ``indexes/production``) are used.
"""
from __future__ import annotations

import json
from pathlib import Path

RECORD = Path("production/record.json")


def read_record(path: str | Path = RECORD) -> dict | None:
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else None


def production_model(path: str | Path = RECORD) -> str:
    record = read_record(path)
    return record["model"] if record else "models/rl"


def production_index(path: str | Path = RECORD) -> str:
    record = read_record(path)
    return record["index"] if record else "indexes/production"
