"""The training flow: base model → data → validate → traces → SFT → RL → index snapshot → evaluate.

Each step is a task in ``tasks.stages`` over the same ``searchr3.stages`` function that ``dvc repro`` runs,
so this flow and the DVC pipeline cannot drift apart. This flow calls the stages directly (every stage runs;
use it for ad-hoc runs and variants via ``overrides``); the nightly flow runs them through ``dvc repro`` so
unchanged stages are skipped. Bad data fails the ``validate`` task — its report is attached as an artifact —
and nothing is trained.

    python -m flows.pipeline --profile tiny --set rl.steps=2
"""
from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger

from searchr3 import stages
from searchr3.config import add_overrides_argument, load_params
from flows.on_dask import evaluate_on_dask, index_on_dask
from tasks.logs import route_library_logs
from tasks.stages import STAGE_TASKS


@flow(name="training-pipeline")
def training_pipeline(params_path: str = "params.yaml", profile: str | None = None, overrides: dict | None = None,
                      stop_after: str | None = None, progress: bool = False, dask_address: str | None = None,
                      dask_workers: int = 2, index_shards: int = 4) -> dict:
    """Run the stages in order; ``overrides`` are dotted params keys ({"sft.lr": 1e-4}).

    ``dask_address``: the index and evaluate stages on Dask (``flows.on_dask``: the corpus encoded in
    ``index_shards`` shards, the (set, system) cells of the evaluation as tasks): ``local`` for a LocalCluster of
    ``dask_workers`` workers, or an existing scheduler's address; None (default): both run here, in order.
    ``profile``: the params profile (None: the one params.yaml names), as for ``nightly-retrain``.
    ``stop_after`` names the last stage to run (e.g. ``validate`` to only build and check the data).
    Returns ``metrics/eval.json`` when ``evaluate`` ran, else the last stage's summary.
    """
    if stop_after is not None and stop_after not in stages.STAGES:
        raise ValueError(f"stop_after must be one of {list(stages.STAGES)}, not {stop_after!r}")
    route_library_logs()  # the library's INFO lines (resuming from a checkpoint, what is evaluated) in the run's logs
    params = load_params(params_path, profile, overrides)
    get_run_logger().info("profile %s, overrides %s", params["_profile"], overrides or {})
    result: dict = {}
    for name, stage_task in STAGE_TASKS.items():
        if name == "evaluate" and dask_address:
            result = evaluate_on_dask(params, dask_address, dask_workers)
        elif name == "index" and dask_address:
            result = index_on_dask(params, dask_address, dask_workers, index_shards)
        else:
            result = stage_task(params, progress=progress)
        if name == stop_after:
            break
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--profile", default=None)
    add_overrides_argument(parser)
    parser.add_argument("--stop-after", choices=stages.STAGES, default=None)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--dask", default=None, help="index and evaluate on Dask: local, or tcp://scheduler:8786")
    parser.add_argument("--dask-workers", type=int, default=2)
    args = parser.parse_args(argv)
    state = training_pipeline(args.params, args.profile, args.overrides or None, args.stop_after, args.progress,
                              args.dask, args.dask_workers, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
