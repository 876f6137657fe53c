"""The evaluate and index stages fanned out on Dask through Prefect (flows/on_dask.py, tasks/on_dask.py): the cells
of the evaluation are the sequential stage's, and on a 2-worker local cluster (workers as threads: two worker
processes each importing torch would swamp a 2-core machine; the flow's default is processes) the metrics equal the
sequential run's exactly; the training flow given an existing cluster's address evaluates there with the same
metrics; the index built from corpus shards encoded by the workers is the sequential one (same ids, vectors within
1e-5, same search results)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from searchr3 import stages
from searchr3.config import load_params, section
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.sets import evaluation_jobs
from searchr3.index.shards import Shard, index_from_shards, shards_of
from searchr3.index.snapshot import load_snapshot
from searchr3.index.store import DocumentIndex
from searchr3.paths import MODELS, PATHS

ROOT = Path(__file__).resolve().parents[1]
# bm25, a dense model (direct and with reasoning), and the hybrid: every kind of cell; no embedding cache, so the
# Dask run recomputes every vector rather than reading the sequential run's
EVAL = {"evaluate.systems": ["bm25", "base", "base+bm25"], "evaluate.reasoning": ["base"], "evaluate.cache_dir": "",
        "evaluate.max_queries": 6, "evaluate.sets": ["codesearch-test"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A repository root with the tiny profile's base model and data (no training: the cells need a model folder)."""
    import os

    root = tmp_path_factory.mktemp("dask-eval")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    before = os.getcwd()
    os.chdir(root)
    try:
        params = load_params("params.yaml", "tiny", EVAL)
        for stage in ("base_model", "sources", "data"):
            getattr(stages, stage)(params, progress=False)
        stages.evaluate(params, progress=False)
        sequential = json.loads(Path(PATHS["metrics"], "eval.json").read_text())
        Path(PATHS["metrics"], "eval.json").unlink()
        shutil.copytree(PATHS["base"], PATHS["rl"])  # the index stage indexes with the RL model: any model will do
        yield root, params, sequential
    finally:
        os.chdir(before)


@pytest.mark.slow
def test_the_cells_are_every_system_on_every_set(workspace):
    root, params, sequential = workspace
    jobs = evaluation_jobs(root / PATHS["data"], section(params, "evaluate", EvaluateConfig), MODELS)
    assert [(j.set_name, j.name) for j in jobs] == [("codesearch-test", s) for s in
                                                    ("bm25", "base", "base+reasoning", "base+bm25")]
    assert set(sequential["codesearch-test"]) == {"bm25", "base", "base+reasoning", "base+bm25"}


@pytest.mark.slow
def test_evaluate_flow_on_a_two_worker_local_cluster_equals_the_sequential_stage(prefect_server, workspace, monkeypatch):
    from flows.on_dask import evaluate_flow

    root, _, sequential = workspace
    monkeypatch.chdir(root)
    state = evaluate_flow(profile="tiny", overrides=EVAL, dask_address="local", dask_workers=2, dask_processes=False,
                          return_state=True)
    assert state.is_completed(), state.message
    written = json.loads((root / PATHS["metrics"] / "eval.json").read_text())
    assert written == sequential
    assert state.result() == sequential
    assert re.search(r"^\| codesearch-test +\| test +\| base\+reasoning +\|", (root / PATHS["report"]).read_text(), re.M)


@pytest.mark.slow
def test_training_flow_evaluates_on_an_existing_cluster_by_address(prefect_server, workspace, monkeypatch):
    from distributed import LocalCluster

    import flows.pipeline as pipeline

    root, _, sequential = workspace
    monkeypatch.chdir(root)
    (root / PATHS["metrics"] / "eval.json").unlink(missing_ok=True)
    # the earlier stages already ran (the workspace): the flow's evaluate step is what is under test
    monkeypatch.setattr(pipeline, "STAGE_TASKS", {"evaluate": pipeline.STAGE_TASKS["evaluate"]})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        state = pipeline.training_pipeline(profile="tiny", overrides=EVAL, dask_address=cluster.scheduler_address,
                                           return_state=True)
        assert state.is_completed(), state.message
        assert len(cluster.scheduler_info["workers"]) == 2
    assert json.loads((root / PATHS["metrics"] / "eval.json").read_text()) == sequential


def test_shards_cover_the_corpus_in_order():
    assert [(s.start, s.end) for s in shards_of(10, 3)] == [(0, 3), (3, 7), (7, 10)]
    assert len(shards_of(2, 5)) == 2 and shards_of(0, 3) == [Shard(0, 0, 0)]
    with pytest.raises(ValueError):
        shards_of(10, 0)


def test_an_index_from_shards_in_any_order_is_the_corpus_order_and_gaps_are_refused():
    import numpy as np

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(10)]
    parts = [(s, vectors[s.start:s.end]) for s in shards_of(10, 3)]
    index = index_from_shards(DocumentIndex(), ids, parts[::-1])
    np.testing.assert_array_equal(index.vectors(ids), vectors)
    with pytest.raises(ValueError, match="missing or overlaps"):
        index_from_shards(DocumentIndex(), ids, [parts[0], parts[2]])
    with pytest.raises(ValueError, match="cover"):
        index_from_shards(DocumentIndex(), ids, parts[:2])


@pytest.mark.slow
def test_index_from_shards_encoded_on_dask_workers_is_the_sequential_index(prefect_server, workspace, monkeypatch):
    import numpy as np

    from flows.on_dask import index_on_dask

    root, params, _ = workspace
    monkeypatch.chdir(root)
    stages.index(params, progress=False)
    sequential = load_snapshot(root / PATHS["index"])
    summary = index_on_dask(params, "local", dask_workers=2, shards=3, dask_processes=False)
    sharded = load_snapshot(root / PATHS["index"])
    assert summary["documents"] == len(sequential) == len(sharded) > 3
    assert sharded.doc_ids == sequential.doc_ids
    np.testing.assert_allclose(sharded.vectors(sharded.doc_ids), sequential.vectors(sequential.doc_ids), atol=1e-5)
    queries = sequential.vectors(sequential.doc_ids[:5])
    assert sharded.search(queries, 10)[1] == sequential.search(queries, 10)[1]
