"""Prefect orchestration: the training flow end to end on the tiny profile, a validation failure that trains
nothing, the retry policy, and the two deployments run by a worker against a local Prefect server."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from searchr3 import stages
from searchr3.paths import PATHS
from tasks.retry import is_transient

ROOT = Path(__file__).resolve().parents[1]
# The tiny profile with a shorter RL run: the point here is orchestration, not learning.
FAST = {"rl.steps": 2, "rl.queries_per_step": 2, "rl.group_size": 2, "rl.max_new_tokens": 8,
        "rl.checkpoint_every": 2, "rl.max_corpus_docs": 100, "evaluate.systems": ["bm25", "base", "sft", "rl"],
        "evaluate.reasoning": ["rl"]}


@pytest.fixture(scope="module")
def harness():
    """A temporary Prefect server (SQLite in a temp folder), shared by this module's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


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


def test_stop_after_must_name_a_stage(harness, workdir):
    from flows.pipeline import training_pipeline

    with pytest.raises(ValueError, match="stop_after"):
        training_pipeline(profile="tiny", stop_after="deploy")


@pytest.mark.slow
def test_transient_error_is_retried_then_the_stage_succeeds(harness, workdir, monkeypatch):
    from tasks.stages import base_model

    calls = []
    real = stages.base_model

    def flaky(params=None, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("network file system hiccup")
        return real(params, **kwargs)

    monkeypatch.setattr(stages, "base_model", flaky)
    from prefect import flow

    from searchr3.config import load_params

    @flow
    def only_base_model():
        return base_model.with_options(retry_delay_seconds=0)(load_params("params.yaml", "tiny"))

    summary = only_base_model()
    assert len(calls) == 2 and summary["source"] == "tiny-random"


# --- the training flow ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_flow_end_to_end_on_tiny_profile(harness, workdir):
    pytest.importorskip("searchr3.train.grpo", reason="the RL trainer (searchr3/train/grpo.py) is not written yet")
    from flows.pipeline import training_pipeline

    state = training_pipeline(profile="tiny", overrides=FAST, return_state=True)
    assert state.is_completed(), state.message
    results = json.loads((workdir / "metrics" / "eval.json").read_text())
    assert state.result() == results
    assert list(results) == ["codesearch-test"]
    systems = results["codesearch-test"]
    assert set(systems) == {"bm25", "base", "sft", "rl", "rl+reasoning"}
    for name, m in systems.items():
        assert 0.0 <= m["ndcg@10"] <= 1.0 and m["queries"] == 10, name
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
def test_validation_failure_fails_the_flow_and_trains_nothing(harness, workdir, monkeypatch):
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


# --- deployments on a local server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deployments_run_on_a_local_server_and_worker(tmp_path):
    """Server and worker in their own process groups; the manual deployment runs to completion; worker stops first."""
    from ops import prefect_local as local

    repo, home = tmp_path / "repo", tmp_path / "prefect-home"
    repo.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for package in ("flows", "tasks"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    port = _free_port()
    url = local.api_url(port)
    env = {**local.process_env(home, url)}
    env.pop("SEARCHR3_PROFILE", None)
    server = local.start_server(home, port, ui=False)
    worker = None
    try:
        local.wait_healthy(url, timeout_s=180, proc=server)
        deploy = subprocess.run([sys.executable, "-m", "flows.deploy", "--source", str(repo), "--timezone",
                                 "Europe/Paris"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        worker = local.start_worker(home, url, query_seconds=2)
        assert os.getpgid(worker.pid) == worker.pid and os.getpgid(server.pid) == server.pid
        run = subprocess.run([local.prefect_cli(), "deployment", "run", "training-pipeline/manual", "--params",
                              json.dumps({"profile": "tiny", "stop_after": "validate"}), "--watch",
                              "--watch-timeout", "400"], env=env, capture_output=True, text=True, timeout=450)
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
        assert (repo / "reports" / "validation" / "summary.json").exists()  # it ran in the deployment's source

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            assert client.read_work_pool("searchr3").concurrency_limit == 1
            manual = client.read_deployment_by_name("training-pipeline/manual")
            nightly = client.read_deployment_by_name("nightly-retrain/nightly")
            assert manual.global_concurrency_limit.limit == 1 and nightly.global_concurrency_limit.limit == 1
            (schedule,) = nightly.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "Europe/Paris")
            assert not manual.schedules
    finally:
        worker_was_running = local.stop("worker", home)  # worker first: it reports to the server as it stops
        server_was_running = local.stop("server", home)
    assert worker_was_running and server_was_running
    assert worker.poll() is not None and server.poll() is not None
    assert not list((home / "run").glob("*.pid"))
