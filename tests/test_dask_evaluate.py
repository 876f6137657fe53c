"""The evaluate stage fanned out on Dask through Prefect (flows/evaluate.py, tasks/evaluate.py): the cells of the
evaluation are the sequential stage's, and on a 2-worker local cluster (workers as threads: two worker processes
each importing torch would swamp a 2-core machine; the flow's default is processes) the metrics equal the sequential
run's exactly; the training flow given an existing cluster's address evaluates there with the same metrics."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from searchr3 import stages
from searchr3.config import load_params, section
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.sets import evaluation_jobs
from searchr3.paths import MODELS, PATHS

ROOT = Path(__file__).resolve().parents[1]
# bm25, a dense model (direct and with reasoning), and the hybrid: every kind of cell; no embedding cache, so the
# Dask run recomputes every vector rather than reading the sequential run's
EVAL = {"evaluate.systems": ["bm25", "base", "base+bm25"], "evaluate.reasoning": ["base"], "evaluate.cache_dir": "",
        "evaluate.max_queries": 6}


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
        yield root, params, sequential
    finally:
        os.chdir(before)


def test_the_cells_are_every_system_on_every_set(workspace):
    root, params, sequential = workspace
    jobs = evaluation_jobs(root / PATHS["data"], section(params, "evaluate", EvaluateConfig), MODELS)
    assert [(j.set_name, j.name) for j in jobs] == [("codesearch-test", s) for s in
                                                    ("bm25", "base", "base+reasoning", "base+bm25")]
    assert set(sequential["codesearch-test"]) == {"bm25", "base", "base+reasoning", "base+bm25"}


@pytest.mark.slow
def test_evaluate_flow_on_a_two_worker_local_cluster_equals_the_sequential_stage(prefect_server, workspace, monkeypatch):
    from flows.evaluate import evaluate_flow

    root, _, sequential = workspace
    monkeypatch.chdir(root)
    state = evaluate_flow(profile="tiny", overrides=EVAL, dask_address="local", dask_workers=2, dask_processes=False,
                          return_state=True)
    assert state.is_completed(), state.message
    written = json.loads((root / PATHS["metrics"] / "eval.json").read_text())
    assert written == sequential
    assert state.result() == sequential
    assert "| codesearch-test | base+reasoning |" in (root / PATHS["report"]).read_text()


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
        assert len(cluster.scheduler_info()["workers"]) == 2
    assert json.loads((root / PATHS["metrics"] / "eval.json").read_text()) == sequential
