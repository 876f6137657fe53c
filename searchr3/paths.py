"""Where the pipeline reads and writes, relative to the repo root: the one table of standard paths.

``dvc.yaml`` declares the same paths as deps and outs (a test checks that every stage's outs are here).
Stage functions (``searchr3.stages``), promotion, the production record, the CLI defaults and the Prefect
tasks all take their paths from this table; nothing else spells them out.
"""
from __future__ import annotations

from pathlib import PurePath

PATHS = {
    "base": "models/base", "data": "data", "validation": "reports/validation", "traces": "traces/traces.jsonl",
    "sft": "models/sft", "sft_ckpt": "checkpoints/sft", "rl": "models/rl", "rl_ckpt": "checkpoints/rl",
    "rl_index": "indexes/rl", "index": "indexes/production", "metrics": "metrics", "report": "reports/eval.md",
    "plots": "plots", "record": "production/record.json", "releases": "production/releases",
    "sources": "metrics/sources.json",
}

# The trained models by system name (what ``evaluate.systems`` and the promotion gate call them).
MODELS = {"base": PATHS["base"], "sft": PATHS["sft"], "rl": PATHS["rl"]}


def metrics_file(name: str) -> str:
    """``metrics/<name>.json``: what a stage writes for ``dvc metrics show``."""
    return f"{PATHS['metrics']}/{name}.json"


def summary_beside(path: str | PurePath) -> str:
    """``traces/traces.jsonl`` -> ``traces/traces.summary.json``."""
    return str(PurePath(path).with_suffix(".summary.json"))


# What each stage leaves behind that summarises it (the Prefect tasks publish it as an artifact).
STAGE_SUMMARIES = {
    "base_model": f"{PATHS['base']}/manifest.json", "sources": PATHS["sources"], "data": f"{PATHS['data']}/manifest.json",
    "validate": f"{PATHS['validation']}/summary.json", "traces": summary_beside(PATHS["traces"]),
    "sft": metrics_file("sft"), "rl": metrics_file("rl"), "index": f"{PATHS['index']}/manifest.json",
    "evaluate": metrics_file("eval"),
}
