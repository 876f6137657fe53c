"""The evaluate and index stages on a Dask cluster, through Prefect's ``DaskTaskRunner``.

- evaluate: every (set, system) cell is a task; the scores are then written exactly as ``searchr3 stage evaluate``
  writes them (metrics/eval.json, plots, reports/eval.md), and they are the same numbers (each cell is a pure
  function of its inputs);
- index: the corpus is encoded in ``index_shards`` contiguous shards, a task each, and the vectors feed one index
  written as ``searchr3 stage index`` writes it (``searchr3.index.shards``).

    python -m flows.on_dask --profile tiny --dask local --workers 2      # a local cluster for this run
    python -m flows.on_dask --dask tcp://scheduler:8786                   # an existing cluster

The training flow takes the same ``dask_address`` parameter (``flows.pipeline``): its evaluate step then runs here.
"""
from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger

from searchr3.config import load_params, section
from searchr3.data.beir import read_corpus
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.sets import collect, evaluation_jobs, search_dir, selected_sets
from searchr3.index.shards import shards_of
from searchr3.paths import MODELS, PATHS
from tasks.on_dask import dask_task_runner, encode_corpus_shard, evaluate_cell, write_evaluation, write_index
from tasks.logs import route_library_logs


@flow(name="evaluate-cells")
def _score_cells(params: dict) -> dict:
    """Submit every cell to this flow's task runner, wait for all, write the stage's outputs."""
    config = section(params, "evaluate", EvaluateConfig)
    sets, jobs = selected_sets(PATHS["data"], config), evaluation_jobs(PATHS["data"], config, MODELS)
    get_run_logger().info("%d cells (%d sets) on %s", len(jobs), len(sets), type(_score_cells.task_runner).__name__)
    futures = [evaluate_cell.submit(job, params) for job in jobs]
    return write_evaluation(params, collect(sets, jobs, [f.result() for f in futures]))


def evaluate_on_dask(params: dict, dask_address: str = "local", dask_workers: int = 2, dask_processes: bool = True) -> dict:
    """The cells of ``params``' evaluation on the Dask cluster ``dask_address`` (``local``: a LocalCluster of
    ``dask_workers`` workers for this run); a subflow when called inside a flow."""
    runner = dask_task_runner(dask_address, dask_workers, dask_processes)
    return _score_cells.with_options(task_runner=runner)(params)


@flow(name="index-shards")
def _encode_shards(params: dict, shards: int) -> dict:
    """Encode the index stage's corpus (the gate set's) in ``shards`` tasks; one index from all of them."""
    corpus = read_corpus(search_dir(section(params, "evaluate", EvaluateConfig)))
    ids = list(corpus)
    futures = [encode_corpus_shard.submit(PATHS["rl"], [corpus[d] for d in ids[s.start:s.end]], s, params)
               for s in shards_of(len(ids), shards)]
    return write_index(params, [f.result() for f in futures])


def index_on_dask(params: dict, dask_address: str = "local", dask_workers: int = 2, shards: int = 4,
                  dask_processes: bool = True) -> dict:
    """The index stage with its corpus encoded in ``shards`` shards on the Dask cluster ``dask_address``."""
    runner = dask_task_runner(dask_address, dask_workers, dask_processes)
    return _encode_shards.with_options(task_runner=runner)(params, shards)


@flow(name="evaluate")
def evaluate_flow(params_path: str = "params.yaml", profile: str | None = None, overrides: dict | None = None,
                  dask_address: str = "local", dask_workers: int = 2, dask_processes: bool = True) -> dict:
    """Evaluate every configured system on every set on Dask; returns metrics/eval.json's content.

    ``dask_address``: ``local`` (a LocalCluster of ``dask_workers`` workers, processes unless ``dask_processes`` is
    false) or an existing scheduler's address. The models and data are read from the working directory's
    ``models/`` and ``data/`` (an existing cluster's workers must see them at the same paths)."""
    route_library_logs()
    return evaluate_on_dask(load_params(params_path, profile, overrides), dask_address, dask_workers, dask_processes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--dask", default="local", help="local (a LocalCluster for this run) or tcp://scheduler:8786")
    parser.add_argument("--workers", type=int, default=2, help="workers of the local cluster")
    parser.add_argument("--threads", action="store_true", help="local cluster: workers as threads, not processes")
    args = parser.parse_args(argv)
    state = evaluate_flow(args.params, args.profile, None, args.dask, args.workers, not args.threads, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
