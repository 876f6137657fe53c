"""Prefect orchestration. Fast: the retry policy, the training flow over stubbed stages (order, stop_after, a retried
transient error, a validation failure that trains nothing, the artifacts), the deployments as built. Slow: the flow
end to end on the tiny profile, a real validation failure, and the two deployments run by a worker."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from searchr3 import stages
from searchr3.paths import PATHS
from tasks.retry import is_transient

ROOT = Path(__file__).resolve().parents[1]
# The tiny profile with a shorter RL run: the point here is orchestration, not learning.
FAST = {"rl.steps": 2, "rl.queries_per_step": 2, "rl.group_size": 2,
        "rl.checkpoint_every": 2, "rl.max_corpus_docs": 100, "evaluate.systems": ["bm25", "base", "sft", "rl"],
        "evaluate.reasoning": ["rl"]}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty repo root holding params.yaml and dvc.yaml; the stages write under it."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEARCHR3_PROFILE", raising=False)
    return tmp_path


def artifacts_of(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a.data for a in found if a.key}


# --- the retry policy (no server needed) ---------------------------------------------------------------------


def test_only_transient_errors_are_retried():
    from searchr3.data.errors import DataError
    from searchr3.validate.runner import ValidationFailed

    assert is_transient(OSError(5, "I/O error")) and is_transient(TimeoutError("slow disk"))
    assert is_transient(ConnectionResetError())
    for permanent in (ValidationFailed("bad rows", {}), ValueError("bad param"), DataError("f", 1, "rule", "x"),
                      FileNotFoundError("models/base"), PermissionError("read-only"), RuntimeError("bug")):
        assert not is_transient(permanent), permanent


def test_stage_tasks_cover_the_stages_in_order():
    from tasks.stages import STAGE_TASKS

    assert tuple(STAGE_TASKS) == stages.STAGES


def test_stop_after_must_name_a_stage(workdir):
    from flows.pipeline import training_pipeline

    with pytest.raises(ValueError, match="stop_after"):
        training_pipeline.fn(profile="tiny", stop_after="deploy")  # refused before any stage (no server needed)


# --- the training flow over stubbed stages (fast) --------------------------------------------------------------

EVAL = {"codesearch-test": {"bm25": {"ndcg@10": 0.5, "recall@100": 0.9, "mrr@10": 0.4, "queries": 10},
                            "rl": {"ndcg@10": 0.25, "recall@100": 0.8, "mrr@10": 0.2, "queries": 10}}}


def _table(dataset: str, failed: list[str]) -> dict:
    return {"dataset": dataset, "rows": 40, "expectations": 6, "failed": [{"rule": r} for r in failed]}


@pytest.fixture
def stubbed(workdir, monkeypatch):
    """Every ``searchr3.stages`` function replaced by a stub that records its call (name and profile), writes a
    marker where the real stage writes, and returns a summary shaped like the real one."""
    calls: list[tuple[str, str]] = []

    def stub(name, result):
        def run(params=None, **kwargs):
            calls.append((name, params["_profile"]))
            marker = Path("stub-outputs") / name
            marker.parent.mkdir(exist_ok=True)
            marker.write_text(json.dumps(kwargs))
            return result() if callable(result) else result
        return run

    def evaluate():
        Path("metrics").mkdir(exist_ok=True)
        Path("metrics/eval.json").write_text(json.dumps(EVAL))
        return EVAL

    summaries = {"base_model": {"source": "tiny-random"}, "sources": {"fingerprint": "f0", "sources": {}},
                 "data": {"train_rows": 40}, "traces": {"kept": 3},
                 "sft": {"steps": 2}, "rl": {"steps": 2}, "index": {"documents": 60}, "evaluate": evaluate,
                 "validate": {"success": True, "tables": [_table("train", [])], "data_docs": "docs/index.html"}}
    for name in stages.STAGES:
        monkeypatch.setattr(stages, name, stub(name, summaries[name]))
    return calls


def test_flow_runs_every_stage_in_order_and_publishes_what_they_return(prefect_server, stubbed):
    from flows.pipeline import training_pipeline

    state = training_pipeline(profile="tiny", return_state=True)
    assert state.is_completed(), state.message
    assert stubbed == [(name, "tiny") for name in stages.STAGES]
    assert state.result() == EVAL
    assert json.loads(Path("stub-outputs/sft").read_text()) == {"progress": False}  # the flow's progress flag
    arts = artifacts_of(state.state_details.flow_run_id)
    assert {f"stage-{s.replace('_', '-')}" for s in ("base_model", "data", "traces", "sft", "rl", "index")} <= set(arts)
    assert "| codesearch-test | rl | 0.2500 |" in arts["eval-report"]
    assert "Data validation: passed" in arts["validation-report"]


def test_stop_after_runs_the_stages_up_to_it(prefect_server, stubbed):
    from flows.pipeline import training_pipeline

    assert training_pipeline(profile="tiny", stop_after="validate")["success"] is True
    assert [name for name, _ in stubbed] == ["base_model", "sources", "data", "validate"]


def test_validation_failure_fails_the_flow_before_anything_trains(prefect_server, stubbed, monkeypatch):
    from flows.pipeline import training_pipeline
    from searchr3.validate.runner import ValidationFailed

    summary = {"success": False, "tables": [_table("train", ["negative_not_positive"])], "data_docs": "d/index.html"}

    def broken(params=None, **kwargs):
        stubbed.append(("validate", params["_profile"]))
        raise ValidationFailed("train: rule negative_not_positive: row 3", summary)

    monkeypatch.setattr(stages, "validate", broken)
    state = training_pipeline(profile="tiny", return_state=True)
    assert state.is_failed() and "negative_not_positive" in state.message
    assert stubbed == [("base_model", "tiny"), ("sources", "tiny"), ("data", "tiny"),
                       ("validate", "tiny")]  # failed once: not retried
    report = artifacts_of(state.state_details.flow_run_id)["validation-report"]
    assert "Data validation: FAILED" in report and "negative_not_positive" in report


def test_transient_error_is_retried_then_the_stage_succeeds(prefect_server, stubbed, monkeypatch):
    from prefect import flow

    from searchr3.config import load_params
    from tasks.stages import base_model

    calls = []
    real = stages.base_model

    def flaky(params=None, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("network file system hiccup")
        return real(params, **kwargs)

    monkeypatch.setattr(stages, "base_model", flaky)

    @flow
    def only_base_model():
        return base_model.with_options(retry_delay_seconds=0)(load_params("params.yaml", "tiny"))

    assert only_base_model() == {"source": "tiny-random"}
    assert len(calls) == 2


# --- the training flow ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_flow_end_to_end_on_tiny_profile(prefect_server, workdir):
    from flows.pipeline import training_pipeline
    from searchr3.data.build import load_eval_set
    from searchr3.eval.evaluate import evaluate

    state = training_pipeline(profile="tiny", overrides=FAST, return_state=True)
    assert state.is_completed(), state.message
    results = json.loads((workdir / "metrics" / "eval.json").read_text())
    assert state.result() == results
    assert list(results) == ["codesearch-dev", "codesearch-test"]  # dev gates promotion, test is reported
    for by_system in results.values():
        assert set(by_system) == {"bm25", "base", "sft", "rl", "rl+reasoning"}
    systems = results["codesearch-test"]
    assert all(m["queries"] == 10 for m in systems.values()), systems
    # the flow's number is the library's: BM25 on the same 10 queries, computed here without the flow
    direct = evaluate("bm25", load_eval_set(workdir / "data" / "eval" / "codesearch-test"), max_queries=10)
    assert systems["bm25"]["ndcg@10"] == direct["ndcg@10"]
    for out in ("models/base", "models/sft", "models/rl", "indexes/rl", "indexes/production", "reports/eval.md"):
        assert (workdir / out).exists(), out
    arts = artifacts_of(state.state_details.flow_run_id)
    assert {"stage-sft", "stage-rl", "eval-metrics", "eval-report", "validation-report"} <= set(arts)
    assert "Data validation: passed" in arts["validation-report"]
    assert "| codesearch-test | rl |" in arts["eval-report"]


def _poison_train_row(data_dir: str) -> None:
    """Make the first training row with a negative list its own positive as a negative."""
    import datasets

    folder = Path(data_dir) / "train"
    train = datasets.load_from_disk(str(folder))
    rows = train.to_list()
    row = next(r for r in rows if r["negative_ids"])
    row["negative_ids"][0], row["negatives"][0] = row["positive_id"], row["positive"]
    poisoned = folder.with_name("train.poisoned")
    datasets.Dataset.from_list(rows, features=train.features).save_to_disk(str(poisoned))
    shutil.rmtree(folder)
    poisoned.rename(folder)


@pytest.mark.slow
def test_validation_failure_fails_the_flow_and_trains_nothing(prefect_server, workdir, monkeypatch):
    from flows.pipeline import training_pipeline

    real_data = stages.data

    def data_with_a_bad_row(params=None, out=PATHS["data"], progress=True):
        summary = real_data(params, out=out, progress=progress)
        _poison_train_row(out)
        return summary

    monkeypatch.setattr(stages, "data", data_with_a_bad_row)
    state = training_pipeline(profile="tiny", overrides=FAST, return_state=True)
    assert state.is_failed()
    assert "ValidationFailed" in state.message and "negative_not_positive" in state.message
    for out in ("traces", "models/sft", "models/rl", "metrics/eval.json"):
        assert not (workdir / out).exists(), out
    summary = json.loads((workdir / "reports" / "validation" / "summary.json").read_text())
    assert summary["success"] is False
    report = artifacts_of(state.state_details.flow_run_id)["validation-report"]
    assert "Data validation: FAILED" in report and "negative_not_positive" in report
    assert "data_docs/index.html" in report


# --- deployments ---------------------------------------------------------------------------------------------


def test_deployments_are_built_as_configured(tmp_path):
    """The two deployments `make deploy` sends, inspected before sending (no server)."""
    from flows.deploy import ONE_AT_A_TIME, build_deployments
    from ops.prefect_local import job_env

    manual, nightly = build_deployments(ROOT, pool="pool-x", timezone="Europe/Paris",
                                        manual_parameters={"profile": "tiny"})
    assert (manual.flow_name, manual.name, nightly.flow_name, nightly.name) == \
        ("training-pipeline", "manual", "nightly-retrain", "nightly")
    for d in (manual, nightly):
        assert d.work_pool_name == "pool-x" and d.concurrency_limit == ONE_AT_A_TIME.limit
        assert d.concurrency_options.collision_strategy == ONE_AT_A_TIME.collision_strategy
        assert d.job_variables == {"env": job_env()}  # offline variables for the flow-run processes
        pull = d.storage.to_pull_step()["prefect.deployments.steps.set_working_directory"]
        assert Path(pull["directory"]) == ROOT  # the flows run in this working tree, with its venv
    assert manual.entrypoint == "flows/pipeline.py:training_pipeline" and manual.parameters == {"profile": "tiny"}
    assert nightly.entrypoint == "flows/nightly.py:nightly_retrain"
    assert not manual.schedules
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "Europe/Paris")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deployments_run_on_a_local_server_and_worker(prefect_server, tmp_path):
    """On the session's server: `python -m flows.deploy`, a worker in its own process group, the manual deployment
    run to completion in the deployment's source folder; the worker stops (the server stops at the session's end)."""
    from ops import prefect_local as local

    repo, home, url = tmp_path / "repo", prefect_server.home, prefect_server.url
    repo.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for package in ("flows", "tasks"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**local.process_env(home, url)}
    env.pop("SEARCHR3_PROFILE", None)
    worker = None
    try:
        deploy = subprocess.run([sys.executable, "-m", "flows.deploy", "--source", str(repo), "--timezone",
                                 "Europe/Paris"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        worker = local.start_worker(home, url, query_seconds=2)
        assert os.getpgid(worker.pid) == worker.pid != os.getpgid(0)
        # Not `--watch`: Prefect's watcher ends only when the run's terminal *event* reaches its stream, and on a
        # loaded machine SQLite's lock once delayed that event (received 60 s late) until the watch gave up on a
        # run the server had recorded Completed. The run's state is read from the API instead.
        run = subprocess.run([local.prefect_cli(), "deployment", "run", "training-pipeline/manual", "--params",
                              json.dumps({"profile": "tiny", "stop_after": "validate"})],
                             env=env, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)

        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            state, deadline = client.read_flow_run(run_id).state, time.monotonic() + 400
            while not state.is_final() and time.monotonic() < deadline:
                time.sleep(2)
                state = client.read_flow_run(run_id).state
            assert state.is_completed(), f"{state.type.value}: {state.message}\n" + "\n".join(
                (home / "logs" / f"{name}.log").read_text(errors="replace")[-3000:] for name in ("worker", "server"))
        assert (repo / "reports" / "validation" / "summary.json").exists()  # it ran in the deployment's source

        with get_client(sync_client=True) as client:
            assert client.read_work_pool("searchr3").concurrency_limit == 1
            manual = client.read_deployment_by_name("training-pipeline/manual")
            nightly = client.read_deployment_by_name("nightly-retrain/nightly")
            assert manual.global_concurrency_limit.limit == 1 and nightly.global_concurrency_limit.limit == 1
            (schedule,) = nightly.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "Europe/Paris")
            assert not manual.schedules
    finally:
        worker_was_running = local.stop("worker", home)
    assert worker_was_running and worker.poll() is not None
    assert not (home / "run" / "worker.pid").exists()
    assert prefect_server.proc.poll() is None  # the server outlives its worker
