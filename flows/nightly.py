"""The nightly retraining: rebuild and validate the data, retrain what changed, evaluate, then the promotion gate.

Every stage runs through ``dvc repro`` (one task per stage, in order), so stages whose inputs did not
change are skipped and their outputs come from DVC's cache. The data stage is forced (sources outside
the repo may have changed); whatever it rebuilds identically leaves the rest of the pipeline cached.
Then ``searchr3.promote`` decides: promote only if nDCG@10 on the gate set is not below production's
minus ``promote.tolerance``. On promotion the pipeline's outputs are pushed to the DVC remote first,
then the release is copied and ``production/record.json`` written; on rejection production is left as it
was and the decision is an artifact.

    python -m flows.nightly            # in the repo root; params.yaml's `profile:` applies
"""
from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger

from searchr3 import stages
from searchr3.config import load_params, profile_mismatch, section, written_profile
from searchr3.errors import ConfigError
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.sets import gate_set
from searchr3.promote import PromoteConfig
from tasks.dvc import push, repro_stage
from tasks.promote import gate, promote_release


def _params(params_path: str) -> dict:
    """params.yaml as DVC sees it: with its own ``profile:``. A different SEARCHR3_PROFILE is refused."""
    why = profile_mismatch(params_path)
    if why:
        raise ConfigError(why)
    return load_params(params_path, profile=written_profile(params_path))


@flow(name="nightly-retrain")
def nightly_retrain(rebuild_data: bool = True, push_outputs: bool = True, force_promote: bool = False,
                    stage_timeout_s: float | None = None) -> dict:
    """Returns ``{"stages": {stage: ran|skipped|restored}, "decision": {...}, "record": {...} | None}``."""
    params = _params("params.yaml")
    cfg = section(params, "promote", PromoteConfig)
    outcomes: dict[str, str] = {}
    for stage in stages.STAGES:
        gate_name = gate_set(section(params, "evaluate", EvaluateConfig)) if stage == "evaluate" else None
        done = repro_stage(stage, force=rebuild_data and stage == "data", gate_set=gate_name,
                           timeout_s=stage_timeout_s)
        outcomes[stage] = done["outcome"]
    logger = get_run_logger()
    logger.info("stages: %s", outcomes)
    decision = gate(params, force=force_promote)
    if not decision["promote"]:
        logger.info("production unchanged: %s", decision["reason"])
        return {"stages": outcomes, "decision": decision, "record": None}
    remote = push(cfg.dvc_remote, cfg.dvc_remote_url) if push_outputs and cfg.dvc_remote else None
    record = promote_release(params, decision, remote)
    return {"stages": outcomes, "decision": decision, "record": record}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-rebuild-data", action="store_true", help="let DVC decide whether data is stale")
    parser.add_argument("--no-push", action="store_true", help="do not `dvc push` on promotion")
    parser.add_argument("--force-promote", action="store_true", help="promote even if the gate rejects")
    args = parser.parse_args(argv)
    state = nightly_retrain(not args.no_rebuild_data, not args.no_push, args.force_promote, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
