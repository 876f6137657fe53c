"""The nightly retraining: fingerprint the sources, rebuild what changed, retrain, evaluate, then the promotion gate.

Every stage runs through ``dvc repro`` (one task per stage, in order), so stages whose inputs did not
change are skipped and their outputs come from DVC's cache. The ``sources`` stage hashes every data source
(they usually live outside the repo), so rows added to a source rebuild the data and retrain; unchanged
sources leave the whole pipeline cached. Then ``searchr3.promote`` decides (better, worse, a tie, or the
very weights production already serves: a no-op). On promotion the pipeline's outputs are pushed to the DVC
remote first, then the release is copied and ``production/record.json`` written; otherwise production is
left as it was and the decision is an artifact.

``profile`` (as for ``training-pipeline``): the params profile to run; None = the one params.yaml names.
``dvc repro`` reads the profile from params.yaml only, so for the run's duration params.yaml says it (and
dvc.lock records it), then says what it said before (``searchr3.config.profile_for_run``).

    python -m flows.nightly --profile tiny     # in the repo root
"""
from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger

from searchr3 import stages
from searchr3.config import load_params, profile_for_run, profile_mismatch, section
from searchr3.errors import ConfigError
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.sets import gate_set
from searchr3.promote import PromoteConfig
from tasks.dvc import push, repro_stage
from tasks.logs import route_library_logs
from tasks.promote import gate, promote_release

PARAMS = "params.yaml"


@flow(name="nightly-retrain")
def nightly_retrain(profile: str | None = None, rebuild_data: bool = False, push_outputs: bool = True,
                    force_promote: bool = False, stage_timeout_s: float | None = None) -> dict:
    """Returns ``{"profile", "stages": {stage: ran|skipped|restored}, "decision": {...}, "record": {...} | None}``.

    ``rebuild_data`` forces the data stage even when the sources' fingerprint is unchanged."""
    route_library_logs()
    logger = get_run_logger()
    why = profile_mismatch(PARAMS, profile)
    if why:
        raise ConfigError(why)
    with profile_for_run(profile, PARAMS) as used:
        params = load_params(PARAMS, profile=used)
        logger.info("profile %s (params.yaml says it for this run; dvc.lock records it)", used)
        outcomes: dict[str, str] = {}
        for stage in stages.STAGES:
            gate_name = gate_set(section(params, "evaluate", EvaluateConfig)) if stage == "evaluate" else None
            done = repro_stage(stage, force=rebuild_data and stage == "data", gate_set=gate_name,
                               timeout_s=stage_timeout_s)
            outcomes[stage] = done["outcome"]
        logger.info("stages: %s", outcomes)
        cfg = section(params, "promote", PromoteConfig)
        decision = gate(params, force=force_promote)
        if not decision["promote"]:
            logger.info("production unchanged: %s", decision["reason"])
            return {"profile": used, "stages": outcomes, "decision": decision, "record": None}
        remote = push(cfg.dvc_remote, cfg.dvc_remote_url) if push_outputs and cfg.dvc_remote else None
        record = promote_release(params, decision, remote)
    return {"profile": used, "stages": outcomes, "decision": decision, "record": record}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="params profile (default: the one params.yaml names)")
    parser.add_argument("--rebuild-data", action="store_true", help="force the data stage (default: DVC decides)")
    parser.add_argument("--no-push", action="store_true", help="do not `dvc push` on promotion")
    parser.add_argument("--force-promote", action="store_true", help="promote even if the gate rejects")
    args = parser.parse_args(argv)
    state = nightly_retrain(args.profile, args.rebuild_data, not args.no_push, args.force_promote, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
