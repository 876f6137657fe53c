"""Deployments on a local process work pool; two retrainings never overlap.

- ``training-pipeline/manual``: the training flow, run by hand
  (``prefect deployment run 'training-pipeline/manual' --param profile=tiny``);
- ``nightly-retrain/nightly``: the nightly flow on cron ``0 2 * * *`` (timezone configurable, UTC by default);
  by hand too (``prefect deployment run 'nightly-retrain/nightly' --param profile=tiny``).

Both take the same ``profile`` parameter (default: the profile params.yaml names); the nightly's is recorded
in dvc.lock and in the production record.

Overlap is prevented twice: the work pool admits one flow run at a time (``concurrency_limit=1``; both
deployments use it), and each deployment has its own limit of one (extra runs wait in the queue).
On the local process pool (``--kind process``, the default) the code is not packaged: the deployments point at
this working tree (``set_working_directory``), so the flows run in the repo root with the repo's virtual environment
(the worker's interpreter). On a Docker or Kubernetes work pool (``--kind docker|kubernetes``) the same two
deployments run in the worker image built from the ``Dockerfile`` (``--image``), whose working directory is the
repository root; the pools' base job templates (GPUs, the DVC cache volume, the remote's environment) are
``ops/workpools.py``.

    python -m flows.deploy --timezone Europe/Paris     # needs PREFECT_API_URL (make deploy sets it)
    python -m flows.deploy --kind kubernetes --pool searchr3-k8s --image registry.example.com/searchr3:0.1.0 \
        --gpus 8 --s3-endpoint https://minio.example.com
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import deploy
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from ops.prefect_local import DEFAULT_POOL, api_settings, ensure_work_pool, job_env
from ops.workpools import KINDS, ensure_pool, remote_env

REPO = Path(__file__).resolve().parents[1]
NIGHTLY_CRON = "0 2 * * *"
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


PIPELINE_ENTRYPOINT = "flows/pipeline.py:training_pipeline"
NIGHTLY_ENTRYPOINT = "flows/nightly.py:nightly_retrain"


def build_deployments(source: str | Path = REPO, pool: str = DEFAULT_POOL, timezone: str = "UTC",
                      cron: str = NIGHTLY_CRON, manual_parameters: dict | None = None, kind: str = "process",
                      image: str | None = None, gpus: int | None = None, s3_endpoint: str = "",
                      region: str = "") -> list:
    """The two RunnerDeployments (not yet sent to the server), for a work pool of ``kind``.

    ``process``: from the working tree ``source``. ``docker`` / ``kubernetes``: in ``image`` (required), the
    entrypoints relative to its working directory; ``gpus`` overrides the pool's GPU count (Kubernetes), and
    ``s3_endpoint``/``region`` go to the job's environment for an S3 DVC remote (``ops.workpools.remote_env``)."""
    from flows.nightly import nightly_retrain
    from flows.pipeline import training_pipeline

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    job: dict = {"env": job_env() | remote_env(s3_endpoint, region)}
    if kind == "process":
        source = str(Path(source).resolve())
        pipeline, nightly_flow = (training_pipeline.from_source(source, PIPELINE_ENTRYPOINT),
                                  nightly_retrain.from_source(source, NIGHTLY_ENTRYPOINT))
    else:
        if not image:
            raise ValueError(f"a {kind} work pool runs the worker image: pass image (built from the Dockerfile)")
        job["image"] = image
        if gpus is not None and kind == "kubernetes":
            job["gpu_count"] = gpus
        pipeline, nightly_flow = training_pipeline, nightly_retrain
    manual = pipeline.to_deployment(
        name="manual", work_pool_name=pool, concurrency_limit=ONE_AT_A_TIME, job_variables=job,
        parameters=manual_parameters or {}, tags=["searchr3", "manual"],
        description="The training pipeline (every stage, called directly), run by hand.")
    nightly = nightly_flow.to_deployment(
        name="nightly", work_pool_name=pool, concurrency_limit=ONE_AT_A_TIME, job_variables=job,
        schedule=Cron(cron, timezone=timezone), tags=["searchr3", "nightly"],
        description="Fingerprint the sources, dvc repro (unchanged stages cached), evaluate, promotion gate "
                    "(only a real change is promoted), dvc push.")
    if kind != "process":  # the code is in the image, at the same paths as in the repository
        manual.entrypoint, nightly.entrypoint = PIPELINE_ENTRYPOINT, NIGHTLY_ENTRYPOINT
    return [manual, nightly]


def deploy_all(source: str | Path = REPO, pool: str = DEFAULT_POOL, timezone: str = "UTC", cron: str = NIGHTLY_CRON,
               manual_parameters: dict | None = None, api_url: str | None = None, kind: str = "process",
               image: str | None = None, gpus: int | None = None, s3_endpoint: str = "", region: str = "") -> list:
    """Create the work pool (if needed) and both deployments; returns their ids."""
    if kind == "process":
        ensure_work_pool(pool, api_url=api_url)
    else:
        ensure_pool(pool, kind, api_url=api_url)
    with api_settings(api_url):
        deployments = build_deployments(source, pool, timezone, cron, manual_parameters, kind, image, gpus,
                                        s3_endpoint, region)
        return deploy(*deployments, work_pool_name=pool, build=False, push=False, print_next_steps_message=False,
                      ignore_warnings=True, **({"image": image} if kind != "process" else {}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=DEFAULT_POOL)
    parser.add_argument("--timezone", default="UTC", help="timezone of the nightly cron (IANA name)")
    parser.add_argument("--cron", default=NIGHTLY_CRON)
    parser.add_argument("--source", default=str(REPO), help="the working tree the flows run in")
    parser.add_argument("--api-url", default=None, help="default: PREFECT_API_URL")
    parser.add_argument("--kind", choices=KINDS, default="process", help="the work pool's type (default: process)")
    parser.add_argument("--image", default=None, help="docker/kubernetes: the worker image (built from the Dockerfile)")
    parser.add_argument("--gpus", type=int, default=None, help="kubernetes: GPUs per flow run (pool default: 1)")
    parser.add_argument("--s3-endpoint", default="", help="an S3-compatible DVC remote's endpoint URL (job env)")
    parser.add_argument("--region", default="", help="the S3 region (job env AWS_DEFAULT_REGION)")
    args = parser.parse_args(argv)
    ids = deploy_all(args.source, args.pool, args.timezone, args.cron, api_url=args.api_url, kind=args.kind,
                     image=args.image, gpus=args.gpus, s3_endpoint=args.s3_endpoint, region=args.region)
    print(f"deployed {len(ids)} deployments to work pool {args.pool!r}: training-pipeline/manual, "
          f"nightly-retrain/nightly (cron {args.cron!r}, {args.timezone})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
