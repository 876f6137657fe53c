"""The promotion gate as Prefect tasks over ``searchr3.promote`` (decide, then copy + record)."""
from __future__ import annotations

import dataclasses

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from searchr3.config import section
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.sets import gate_set
from searchr3.files import read_json_if_exists
from searchr3.model.config import ModelConfig
from searchr3.paths import STAGE_SUMMARIES
from searchr3.production import read_record
from searchr3.promote import Decision, PromoteConfig, decide_workspace, promote
from tasks.artifacts import publish_decision
from tasks.retry import RETRIES


@task(name="promotion-gate", cache_policy=NO_CACHE, persist_result=False, **RETRIES)
def gate(params: dict, force: bool = False) -> dict:
    """The gate of ``searchr3.promote`` over metrics/eval.json, production/record.json and the workspace's model
    and sources; publishes the decision when it does not promote (a rejection, or a no-op: nothing changed).

    ``force`` promotes an evaluated candidate whatever the comparison says (the reason records that it was forced).
    """
    cfg = section(params, "promote", PromoteConfig)
    metrics = read_json_if_exists(STAGE_SUMMARIES["evaluate"])
    if metrics is None:
        raise FileNotFoundError("metrics/eval.json is missing: the evaluate stage did not run")
    gate_name = gate_set(section(params, "evaluate", EvaluateConfig))
    decision = decide_workspace(metrics, read_record(cfg.record), cfg, gate_name)
    if force and not decision.promote and decision.candidate is not None:
        decision = dataclasses.replace(decision, promote=True, outcome="forced",
                                       reason=f"forced by hand over: {decision.reason}")
    get_run_logger().info("promotion gate: %s", decision.reason)
    if not decision.promote:
        publish_decision(decision.as_dict(), cfg.record, promoted=False)
    return decision.as_dict()


@task(name="promote", cache_policy=NO_CACHE, persist_result=False, **RETRIES)
def promote_release(params: dict, decision: dict, dvc_remote: str | None = None) -> dict:
    """Copy the candidate into production/releases/ and write production/record.json (last, atomically)."""
    cfg = section(params, "promote", PromoteConfig)
    metrics = read_json_if_exists(STAGE_SUMMARIES["evaluate"])
    record = promote(Decision(**decision), metrics, cfg, run_id=flow_run.id, dvc_remote=dvc_remote,
                     model_config=section(params, "model", ModelConfig), profile=params.get("_profile"))
    get_run_logger().info("promoted %s (release %s): %s", record["system"], record["release"], record["model"])
    publish_decision(decision, cfg.record, promoted=True)
    return record
