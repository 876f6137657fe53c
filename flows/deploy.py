"""Deployments on a local process work pool; two retrainings never overlap.

- ``training-pipeline/manual``: the training flow, run by hand
  (``prefect deployment run 'training-pipeline/manual' --param profile=tiny``);
- ``nightly-retrain/nightly``: the nightly flow on cron ``0 2 * * *`` (timezone configurable, UTC by default);
  by hand too (``prefect deployment run 'nightly-retrain/nightly' --param profile=tiny``).

Both take the same ``profile`` parameter (default: the profile params.yaml names); the nightly's is recorded
in dvc.lock and in the production record.

Overlap is prevented twice: the work pool admits one flow run at a time (``concurrency_limit=1``; both
deployments use it), and each deployment has its own limit of one (extra runs wait in the queue).
The code is not packaged: the deployments point at this working tree (``set_working_directory``), so
the flows run in the repo root with the repo's virtual environment (the worker's interpreter).

    python -m flows.deploy --timezone Europe/Paris     # needs PREFECT_API_URL (make deploy sets it)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import deploy
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from ops.prefect_local import DEFAULT_POOL, api_settings, ensure_work_pool, job_env

REPO = Path(__file__).resolve().parents[1]
NIGHTLY_CRON = "0 2 * * *"
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def build_deployments(source: str | Path = REPO, pool: str = DEFAULT_POOL, timezone: str = "UTC",
                      cron: str = NIGHTLY_CRON, manual_parameters: dict | None = None) -> list:
    """The two RunnerDeployments (not yet sent to the server)."""
    from flows.nightly import nightly_retrain
    from flows.pipeline import training_pipeline

    source = str(Path(source).resolve())
    job = {"env": job_env()}
    manual = training_pipeline.from_source(source, "flows/pipeline.py:training_pipeline").to_deployment(
        name="manual", work_pool_name=pool, concurrency_limit=ONE_AT_A_TIME, job_variables=job,
        parameters=manual_parameters or {}, tags=["searchr3", "manual"],
        description="The training pipeline (every stage, called directly), run by hand.")
    nightly = nightly_retrain.from_source(source, "flows/nightly.py:nightly_retrain").to_deployment(
        name="nightly", work_pool_name=pool, concurrency_limit=ONE_AT_A_TIME, job_variables=job,
        schedule=Cron(cron, timezone=timezone), tags=["searchr3", "nightly"],
        description="Fingerprint the sources, dvc repro (unchanged stages cached), evaluate, promotion gate "
                    "(only a real change is promoted), dvc push.")
    return [manual, nightly]


def deploy_all(source: str | Path = REPO, pool: str = DEFAULT_POOL, timezone: str = "UTC", cron: str = NIGHTLY_CRON,
               manual_parameters: dict | None = None, api_url: str | None = None) -> list:
    """Create the work pool (if needed) and both deployments; returns their ids."""
    ensure_work_pool(pool, api_url=api_url)
    with api_settings(api_url):
        deployments = build_deployments(source, pool, timezone, cron, manual_parameters)
        return deploy(*deployments, work_pool_name=pool, build=False, push=False, print_next_steps_message=False,
                      ignore_warnings=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=DEFAULT_POOL)
    parser.add_argument("--timezone", default="UTC", help="timezone of the nightly cron (IANA name)")
    parser.add_argument("--cron", default=NIGHTLY_CRON)
    parser.add_argument("--source", default=str(REPO), help="the working tree the flows run in")
    parser.add_argument("--api-url", default=None, help="default: PREFECT_API_URL")
    args = parser.parse_args(argv)
    ids = deploy_all(args.source, args.pool, args.timezone, args.cron, api_url=args.api_url)
    print(f"deployed {len(ids)} deployments to work pool {args.pool!r}: training-pipeline/manual, "
          f"nightly-retrain/nightly (cron {args.cron!r}, {args.timezone})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
