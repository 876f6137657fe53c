"""Unattended operations against the session's Prefect server (slow lane): interrupted runs end and the next one
resumes, `prefect-up` is idempotent, library logs reach the run, and the nightly sees new data but promotes only
change. Each test works in a copy of the repository (a git work tree of its own), never in this checkout."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# The waits below allow for the session server's SQLite lock, which on a loaded machine has held writes (a
# heartbeat, a state's event) for 60 s; they only lengthen a failure, never a pass.


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def repo_copy(dest: Path, edit_params=None) -> Path:
    """The tracked files of this checkout in ``dest``, committed in a git repository of their own.

    ``edit_params(params_dict)`` changes params.yaml before the commit (comments are lost; a test copy)."""
    tracked = git(ROOT, "ls-files", "-z").split("\0")
    for name in filter(None, tracked):
        if not (ROOT / name).is_file() or name.startswith("reports/runs/"):
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    if edit_params is not None:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        edit_params(params)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "copy")
    return dest


def client_for(url):
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def state_of(run_id) -> tuple[str, str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.type.value, state.message or ""


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def run_logs(run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    messages, offset = [], 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                                    limit=200, offset=offset)
            messages += [log.message for log in page]
            if len(page) < 200:
                return messages
            offset += 200


# --- prefect-up twice, status, worker restart ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prefect_up_twice_leaves_the_stack_as_it_was(prefect_server, capsys):
    from ops import prefect_local as local

    home, port, pool = prefect_server.home, prefect_server.port, "ops-up"
    server_pid = local.running_pid("server", home)
    try:
        local.up(home, port, pool, ui=False)  # the server is up: only the pool and a worker are started
        first = capsys.readouterr().out
        assert f"server: already running (pid {server_pid})" in first and "worker: started" in first
        worker_pid = local.running_pid("worker", home)
        local.up(home, port, pool, ui=False)
        second = capsys.readouterr().out
        assert "the stack is already up and healthy: nothing to do" in second
        assert (local.running_pid("server", home), local.running_pid("worker", home)) == (server_pid, worker_pid)
        wait_for(lambda: local.status(pool, prefect_server.url, worker_alive=True)["workers"], 180,
                 "the worker's first heartbeat")
        assert local.print_status(home, port, pool) == 0
        status = capsys.readouterr().out
        assert f"pool:        {pool} (process), concurrency limit 1" in status and "stuck:       none" in status
        local.worker_restart(home, port, pool)
        assert local.running_pid("worker", home) not in (None, worker_pid)
        assert local.running_pid("server", home) == server_pid  # restarting the worker leaves the server alone
    finally:
        local.stop_worker(home, prefect_server.url, pool)
    assert local.print_status(home, port, pool) == 1  # no worker: not fully up
    assert "worker:      down" in capsys.readouterr().out


# --- logs ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_library_info_line_of_a_task_reaches_the_run_logs(prefect_server, tmp_path, monkeypatch):
    from prefect.logging.handlers import APILogHandler

    from flows.pipeline import training_pipeline

    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEARCHR3_PROFILE", raising=False)
    logging.getLogger("searchr3").setLevel(logging.NOTSET)  # as in a fresh process: WARNING inherited from root
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            if record.levelno == logging.INFO:
                seen.append(record.getMessage())

    capture = Capture()
    logging.getLogger("searchr3").addHandler(capture)
    try:
        state = training_pipeline(profile="tiny", stop_after="validate", return_state=True)
    finally:
        logging.getLogger("searchr3").removeHandler(capture)
    assert state.is_completed(), state.message
    APILogHandler().flush()
    assert any(m.startswith("loading source codesearch") for m in seen)  # the data stage's own INFO lines
    logs = wait_for(lambda: (lambda got: got if all(m in got for m in seen) else None)(
        run_logs(state.state_details.flow_run_id)), 120, "the library's lines in the run logs")
    missing = [m for m in seen if m not in logs]
    assert not missing and len(seen) >= 3


# --- a signal to the flow-run process ------------------------------------------------------------------------

SLEEPER = """
import signal
import time
from prefect import flow

signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal (a background job ignores it)

@flow(name="ops-interrupt-me")
def sleeper(tag: str):
    print("started", flush=True)
    time.sleep(300)

sleeper({tag!r})
"""


def runs_tagged(tag: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["ops-interrupt-me"])))
    return [r for r in runs if r.parameters.get("tag") == tag]


@pytest.mark.slow
@pytest.mark.timeout(360)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_flow_run_interrupted_by_a_signal_reports_its_own_final_state(prefect_server, tmp_path, signum):
    """Ctrl-C or `kill PID` on the process running a flow: the run ends Crashed (or Cancelled) by itself, with no
    sweep, so no concurrency slot stays taken."""
    import sys

    tag = f"{signum.name}-{tmp_path.name}"
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER.format(tag=tag)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PREFECT_API_URL": prefect_server.url})
    try:
        run = wait_for(lambda: next((r for r in runs_tagged(tag) if r.state and r.state.type.value == "RUNNING"),
                                    None), 120, "the flow run to start")
        for line in proc.stdout:  # the flow's own code is running (not the engine still setting up)
            if line.strip() == "started":
                break
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    kind, message = wait_for(lambda: (lambda st: st if st[0] in FINAL else None)(state_of(run.id)), 150,
                             "the run's final state")
    assert kind in ("CRASHED", "CANCELLED"), (kind, message, proc.stdout.read()[-2000:])


# --- an interrupted run, a restart, and the next run resumes -------------------------------------------------

# SFT long enough to be interrupted in the middle, checkpointing often; stops after SFT (the point is the restart)
LONG_SFT = {"sft.steps": 400, "sft.checkpoint_every": 5, "sft.eval_every": 400, "sft.batch_size": 4}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigterm_to_the_worker_then_restart_and_the_next_run_completes_unattended(prefect_server, tmp_path):
    """The Done-when of issue 17: SIGTERM mid-run, `make prefect-up` again, a new run completes and resumes from
    the checkpoint; then `prefect-down`'s way of stopping (the run first) ends a run Crashed by itself."""
    from prefect.deployments import run_deployment

    from flows.deploy import deploy_all
    from ops import prefect_local as local

    repo = repo_copy(tmp_path / "repo")
    home, port, url, pool = prefect_server.home, prefect_server.port, prefect_server.url, "ops-interrupt"
    deploy_all(source=repo, pool=pool, api_url=url)
    params = {"profile": "tiny", "overrides": LONG_SFT, "stop_after": "sft"}
    checkpoints = repo / "checkpoints" / "sft"
    try:
        local.up(home, port, pool, ui=False)
        first = run_deployment("training-pipeline/manual", parameters=params, timeout=0)
        # a checkpoint is complete once its commit record (checkpoint-<step>.json) is written
        wait_for(lambda: any(checkpoints.glob("checkpoint-*.json")), 400, "SFT's first checkpoint")
        worker = local.running_pid("worker", home)
        os.kill(worker, signal.SIGTERM)  # as `kill PID` or a service manager would
        wait_for(lambda: local.running_pid("worker", home) is None, 60, "the worker to exit")
        print("after SIGTERM to the worker, the interrupted run is", state_of(first.id))

        local.up(home, port, pool, ui=False)  # the restart: the startup sweep ends what the dead worker left
        kind, message = state_of(first.id)
        assert kind in ("CRASHED", "CANCELLED"), (kind, message)

        second = run_deployment("training-pipeline/manual", parameters=params, timeout=0)
        wait_for(lambda: state_of(second.id)[0] in FINAL, 600, "the second run to finish")
        assert state_of(second.id)[0] == "COMPLETED", state_of(second.id)
        logs = run_logs(second.id)
        assert any("resuming from checkpoints/sft at step" in m for m in logs), [m for m in logs if "sft" in m]

        # the stop of `make prefect-down` / `prefect-worker-restart`: the run is interrupted first and reports
        third = run_deployment("training-pipeline/manual", timeout=0,
                               parameters={**params, "overrides": {**LONG_SFT, "sft.seed": 1}})
        # stop once the flow's own code runs (its first log line), not a fixed 10 s after Running: in one CI run on
        # a loaded machine the run was swept instead of reporting itself (cause not established; the worker's log
        # goes into the failure message so the next failure says more)
        wait_for(lambda: any(m.startswith("profile tiny") for m in run_logs(third.id)), 300,
                 "the third run's flow code to start")
        time.sleep(5)
        local.stop_worker(home, url, pool)
        kind, message = state_of(third.id)
        worker_log = (home / "logs" / "worker.log").read_text(errors="replace")[-3000:]
        assert kind == "CRASHED" and "sweep" not in message, (kind, message, worker_log)  # reported by the engine
    finally:
        local.stop_worker(home, url, pool)


# --- the nightly: new data retrains, no change is a no-op ----------------------------------------------------


def write_beir(folder: Path, queries: int) -> None:
    """A BEIR training source: 60 documents, ``queries`` training queries judged against them."""
    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as handle:
        for i in range(60):
            text = " ".join(words[(i + k) % len(words)] for k in range(6)) + f" item {i}"
            handle.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as handle:
        for i in range(queries):
            handle.write(json.dumps({"_id": f"q{i}", "text": f"{words[i % len(words)]} item {i}"}) + "\n")
    with open(folder / "qrels" / "train.tsv", "w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(queries)))


def append_queries(folder: Path, start: int, count: int) -> None:
    with open(folder / "queries.jsonl", "a") as queries, open(folder / "qrels" / "train.tsv", "a") as qrels:
        for i in range(start, start + count):
            queries.write(json.dumps({"_id": f"q{i}", "text": f"new question {i} item {i}"}) + "\n")
            qrels.write(f"q{i}\td{i}\t1\n")


def nightly_params(source: Path):
    def edit(params: dict) -> None:
        params["profile"] = "tiny"
        tiny = params["profiles"]["tiny"]
        tiny["data"]["sources"].append({"type": "beir", "path": str(source), "label": "toy", "weight": 1.0,
                                        "train_split": "train", "eval_splits": []})
        tiny["rl"].update(steps=1, max_corpus_docs=60)
        tiny["evaluate"] = {**tiny.get("evaluate", {}), "systems": ["bm25", "sft", "rl"], "reasoning": []}
        params["promote"].update(tolerance=1.0)  # every score is a tie: the tie rule (new data) decides
    return edit


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_nightly_retrains_on_new_rows_and_unchanged_nightlies_do_nothing(prefect_server, tmp_path, monkeypatch):
    from flows.nightly import nightly_retrain

    source = tmp_path / "toy-source"  # outside the repository, like ../shared/data/scifact
    write_beir(source, queries=20)
    repo = repo_copy(tmp_path / "repo", nightly_params(source))
    monkeypatch.chdir(repo)
    monkeypatch.delenv("SEARCHR3_PROFILE", raising=False)
    record_path, releases = repo / "production" / "record.json", repo / "production" / "releases"

    def released() -> list[str]:
        return sorted(p.name for p in releases.iterdir() if p.is_dir() and not p.name.startswith("."))

    first = nightly_retrain()
    assert first["decision"]["outcome"] == "first" and first["record"] is not None
    assert set(first["stages"].values()) == {"ran"}
    record = json.loads(record_path.read_text())
    assert record["profile"] == "tiny" and record["data"]["rows"]["sources"]["toy"]["queries.jsonl"] == 20
    assert record["git_dirty"] is False and record["dvc_remote"] == "local"
    assert git(repo, "status", "--porcelain", "--", ".dvc/config", "params.yaml", ".gitignore") == ""
    assert "local" in (repo / ".dvc" / "config.local").read_text()
    assert record_path.stat().st_mode & 0o044 == 0o044
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["sft"]["params"]["params.yaml"]["profile"] == "tiny"
    assert "metrics/sources.json" in [d["path"] for d in lock["stages"]["data"]["deps"]]
    one_release, before = released(), record_path.read_bytes()

    for _ in range(2):  # nothing changed: every stage but the fingerprint is skipped, the gate is a no-op
        again = nightly_retrain()
        assert again["stages"]["sources"] == "ran" and again["stages"]["data"] == "skipped", again["stages"]
        assert {again["stages"][s] for s in ("sft", "rl", "evaluate")} == {"skipped"}
        assert again["decision"]["outcome"] == "unchanged" and again["record"] is None
        assert released() == one_release and record_path.read_bytes() == before

    append_queries(source, start=20, count=10)  # new rows in the source
    third = nightly_retrain()
    assert third["stages"]["data"] == "ran" and third["stages"]["sft"] == "ran", third["stages"]
    assert third["decision"]["outcome"] == "tie-new-data", third["decision"]
    record = json.loads(record_path.read_text())
    added = record["data"]["added_since_previous"]
    assert added["sources.toy.queries.jsonl"] == 10 and added["sources.toy.qrels/train.tsv"] == 10
    assert added["train"] > 0
    assert record["previous"]["release"] == one_release[0] and len(released()) == 2
