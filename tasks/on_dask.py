"""The evaluate and index stages fanned out, on whatever task runner the flow runs (``flows.on_dask``: a Dask
cluster): one task per (set, system) cell of the evaluation, one per shard of the corpus the index holds; then one
task that writes what the stage writes.

Each task only calls the library (``searchr3.eval.sets.run_job``, ``searchr3.index.shards.encode_shard``,
``searchr3.stages``); a cell or a shard is a pure function of its inputs and the files they name, so a Dask worker
can run it anywhere the repository (data/, models/) is visible at the same relative paths.
"""
from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from searchr3 import stages
from searchr3.config import section
from searchr3.data.bm25 import Bm25Config
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.sets import EvalJob, JobResult, gate_set, run_job
from searchr3.index.config import IndexConfig
from searchr3.index.shards import Shard, encode_shard
from searchr3.model.config import ModelConfig
from tasks.artifacts import publish_eval, publish_stage_summary
from tasks.retry import RETRIES

CELL_TASK = {"cache_policy": NO_CACHE, "persist_result": False, **RETRIES}


@task(name="evaluate-cell", task_run_name="evaluate {job.name} on {job.set_dir}", **CELL_TASK)
def evaluate_cell(job: EvalJob, params: dict) -> JobResult:
    return run_job(job, section(params, "evaluate", EvaluateConfig), model_config=section(params, "model", ModelConfig),
                   bm25=section(params, "bm25", Bm25Config))


@task(name="write-evaluation", **CELL_TASK)
def write_evaluation(params: dict, done) -> dict:
    """metrics/eval.json, the plots data and reports/eval.md from the cells' scores (``searchr3.stages.evaluate``)."""
    results = stages.evaluate(params, progress=False, done=done)
    publish_eval(results, gate_set(section(params, "evaluate", EvaluateConfig)), "flows.on_dask (Dask)")
    for ds, by_system in results.items():
        for system, m in by_system.items():
            get_run_logger().info("%s %-16s nDCG@10=%.4f", ds, system, m.get("ndcg@10", float("nan")))
    return results


@task(name="encode-shard", task_run_name="encode documents {shard.start}-{shard.end}", **CELL_TASK)
def encode_corpus_shard(model_dir: str, texts: list[str], shard: Shard, params: dict):
    """One shard's document vectors (float32 (n, d)) and the shard they belong to."""
    vectors = encode_shard(model_dir, texts, section(params, "model", ModelConfig),
                           batch_size=section(params, "index", IndexConfig).encode_batch)
    return shard, vectors


@task(name="write-index", **CELL_TASK)
def write_index(params: dict, parts: list) -> dict:
    """The index snapshot from the shards' vectors (``searchr3.stages.index``)."""
    summary = stages.index(params, progress=False, shards=parts)
    publish_stage_summary("index", summary, "flows.on_dask (Dask)")
    return summary


def dask_task_runner(address: str, workers: int = 2, processes: bool = True):
    """A ``prefect_dask.DaskTaskRunner``: ``address`` ``local`` starts a ``distributed.LocalCluster`` of ``workers``
    single-threaded workers (``processes=False``: threads of this process, lighter on a small machine) for the flow
    run; any other value is the scheduler address of an existing cluster (``tcp://scheduler:8786``)."""
    from prefect_dask import DaskTaskRunner

    if address == "local":
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": processes,
                                              "dashboard_address": None})
    return DaskTaskRunner(address=address)
