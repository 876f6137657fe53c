"""One Prefect task per pipeline stage; each only calls the matching ``searchr3.stages`` function.

The stage functions read and write the standard paths relative to the working directory (the repo root).
A task adds what orchestration needs and nothing else: retries on transient errors (``tasks.retry``),
log lines through Prefect's run logger, and artifacts (``tasks.artifacts``). Every task has the stage
functions' signature, ``task(params, progress=False)``, so the flow calls them all alike.
``searchr3.stages`` is looked up at call time (``stages.data(...)``), so tests may monkeypatch it.
"""
from __future__ import annotations

import json

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from searchr3 import stages
from searchr3.config import section
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.sets import gate_set
from searchr3.launch import run_stage
from searchr3.paths import PATHS
from tasks.artifacts import publish_eval, publish_stage_summary, publish_validation
from tasks.retry import RETRIES

STAGE_TASK = {"cache_policy": NO_CACHE, "persist_result": False, **RETRIES}


def _done(stage: str, summary: dict) -> dict:
    brief = {k: v for k, v in summary.items() if isinstance(v, str | int | float | bool)}
    get_run_logger().info("%s done: %s", stage, json.dumps(brief, indent=2)[:2000])
    publish_stage_summary(stage, summary, f"searchr3 stage {stage}")
    return summary


@task(name="materialise-base-model", **STAGE_TASK)
def base_model(params: dict, progress: bool = False) -> dict:
    return _done("base_model", stages.base_model(params, progress=progress))


@task(name="fingerprint-sources", **STAGE_TASK)
def sources(params: dict, progress: bool = False) -> dict:
    return _done("sources", stages.sources(params, progress=progress))


@task(name="build-data", **STAGE_TASK)
def data(params: dict, progress: bool = False) -> dict:
    return _done("data", stages.data(params, progress=progress))


@task(name="validate-data", **STAGE_TASK)
def validate(params: dict, progress: bool = False) -> dict:
    """Fails (not retried) with ``ValidationFailed`` when a rule is broken; the report is an artifact either way."""
    from searchr3.validate.runner import ValidationFailed

    try:
        summary = stages.validate(params, progress=progress)
    except ValidationFailed as err:
        get_run_logger().error("%s", err)
        publish_validation(err.summary, PATHS["validation"], str(err))
        raise
    publish_validation(summary, PATHS["validation"])
    get_run_logger().info("validation passed: %d tables (%s)", len(summary["tables"]), summary["data_docs"])
    return summary


@task(name="sample-traces", **STAGE_TASK)
def traces(params: dict, progress: bool = False) -> dict:
    return _done("traces", stages.traces(params, progress=progress))


@task(name="train-sft", **STAGE_TASK)
def sft(params: dict, progress: bool = False) -> dict:
    """On ``train.processes`` processes (accelerate launch) when it is above 1."""
    return _done("sft", run_stage("sft", params, progress=progress))


@task(name="train-rl", **STAGE_TASK)
def rl(params: dict, progress: bool = False) -> dict:
    """GRPO; the trainer refreshes its own incremental index (indexes/rl) as it goes. On ``train.processes``
    processes when it is above 1."""
    return _done("rl", run_stage("rl", params, progress=progress))


@task(name="snapshot-index", **STAGE_TASK)
def index(params: dict, progress: bool = False) -> dict:
    return _done("index", stages.index(params, progress=progress))


@task(name="evaluate", **STAGE_TASK)
def evaluate(params: dict, progress: bool = False) -> dict:
    results = stages.evaluate(params, progress=progress)
    publish_eval(results, gate_set(section(params, "evaluate", EvaluateConfig)))
    for ds, by_system in results.items():
        for system, m in by_system.items():
            get_run_logger().info("%s %-16s nDCG@10=%.4f", ds, system, m.get("ndcg@10", float("nan")))
    return results


# In pipeline order; keys are the names of searchr3.stages.STAGES and of the dvc.yaml stages.
STAGE_TASKS = {"base_model": base_model, "sources": sources, "data": data, "validate": validate, "traces": traces,
               "sft": sft, "rl": rl, "index": index, "evaluate": evaluate}
