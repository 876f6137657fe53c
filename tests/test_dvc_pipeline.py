"""dvc.yaml on a temporary copy of the repo (tiny profile): a first `dvc repro` runs every stage, an unchanged
one runs only the sources' fingerprint, an edited prompt template marks the stages that import it, an `rl:` change reruns rl onward only;
the nightly flow reuses DVC's cache, promotes the first model (pushing to a local remote) and leaves production
untouched when the gate rejects."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from searchr3 import stages
from tasks.dvc import dvc_executable, run_dvc

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
REPRO_TIMEOUT_S = 600
# Shorter RL and fewer systems than the tiny profile: this is about what DVC reruns, not about learning.
FAST_RL = {"steps": 2, "queries_per_step": 2, "group_size": 2, "checkpoint_every": 2,
           "max_corpus_docs": 100}


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def unchanged(output: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' didn't change", output))


def edit_params(repo: Path, change) -> None:
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """A git + DVC repo holding dvc.yaml, params.yaml (profile: tiny) and the sources the stages depend on,
    after a first `dvc repro`. Returns (repo, output of that repro)."""
    repo = tmp_path_factory.mktemp("dvc-repo")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("bin", "searchr3"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".venv").symlink_to(sys.prefix, target_is_directory=True)  # as in a clone: bin/searchr3 finds .venv
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([dvc_executable(), "init", "-q"], cwd=repo, check=True)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    # dvclive (SFT/RL logging) needs a commit to name its baseline; this is the temporary repo's own history.
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q",
                    "--allow-empty", "-m", "empty"], cwd=repo, check=True)

    def tiny(raw):
        raw["profile"] = "tiny"
        raw["rl"] = dict(FAST_RL)
        raw["evaluate"].update(systems=["bm25", "base", "sft", "rl"], reasoning=[])

    edit_params(repo, tiny)
    output = run_dvc(["repro"], cwd=repo, timeout_s=REPRO_TIMEOUT_S)
    return repo, output


@pytest.mark.timeout(900)
def test_first_repro_runs_every_stage(dvc_repo):
    repo, output = dvc_repo
    assert ran(output) == set(stages.STAGES)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(stages.STAGES)
    results = json.loads((repo / "metrics" / "eval.json").read_text())
    assert set(results["codesearch-test"]) == {"bm25", "base", "sft", "rl"}


@pytest.mark.timeout(900)
def test_unchanged_repro_runs_nothing(dvc_repo):
    repo, _ = dvc_repo
    output = run_dvc(["repro"], cwd=repo, timeout_s=REPRO_TIMEOUT_S)
    assert ran(output) == {"sources"}  # always re-reads the sources; their content did not change ...
    assert unchanged(output) == set(stages.STAGES) - {"sources"}  # ... so nothing after it runs
    assert run_dvc(["status"], cwd=repo).split() == ["sources:", "always", "changed"]


@pytest.mark.timeout(900)
def test_an_edited_prompt_template_marks_the_stages_that_import_it(dvc_repo):
    repo, _ = dvc_repo
    templates = repo / "searchr3" / "model" / "config.py"
    source = templates.read_text()
    line = "Please represent the passage for retrieval."
    assert line in source
    expected = {name for name, stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items()
                if any(d == "searchr3/model/config.py" or "searchr3/model/config.py".startswith(d + "/")
                       for d in stage["deps"])}
    assert {"traces", "sft", "rl", "index", "evaluate"} <= expected
    templates.write_text(source.replace(line, "Represent the passage."))
    try:
        status = json.loads(run_dvc(["status", "--json"], cwd=repo))
        assert set(status) - {"sources"} == expected  # sources: always changed (it re-reads them every time)
    finally:
        templates.write_text(source)
    assert run_dvc(["status"], cwd=repo).split() == ["sources:", "always", "changed"]


@pytest.mark.timeout(900)
def test_rl_param_change_reruns_rl_onward_only(dvc_repo):
    repo, _ = dvc_repo
    edit_params(repo, lambda raw: raw["rl"].update(lr=5.0e-5))
    try:
        status = run_dvc(["status"], cwd=repo)
        assert re.search(r"^rl:", status, re.MULTILINE) and re.search(r"modified:\s+rl$", status, re.MULTILINE)
        assert not re.search(r"^(sft|traces|data):", status, re.MULTILINE)
        output = run_dvc(["repro"], cwd=repo, timeout_s=REPRO_TIMEOUT_S)
        assert ran(output) == {"sources", "rl", "index", "evaluate"}
        assert unchanged(output) == {"base_model", "data", "validate", "traces", "sft"}
    finally:  # back to the params the other tests expect; rl reruns from scratch at their first repro
        edit_params(repo, lambda raw: raw["rl"].pop("lr"))
        shutil.rmtree(repo / "checkpoints" / "rl", ignore_errors=True)


@pytest.mark.timeout(900)
def test_nightly_reuses_the_cache_promotes_then_rejects(prefect_server, dvc_repo, monkeypatch):
    from flows.nightly import nightly_retrain
    from searchr3.promote import write_record

    repo, _ = dvc_repo
    run_dvc(["repro"], cwd=repo, timeout_s=REPRO_TIMEOUT_S)  # whatever an earlier test left, bring it up to date
    monkeypatch.chdir(repo)
    monkeypatch.delenv("SEARCHR3_PROFILE", raising=False)
    record_path = repo / "production" / "record.json"
    first = nightly_retrain(rebuild_data=True)  # the data stage forced to rebuild
    # the rebuilt data came out identical, so every later stage was reused from DVC's cache
    assert first["stages"] == {s: "ran" if s in ("sources", "data") else "skipped" for s in stages.STAGES}
    assert first["decision"]["promote"] and first["decision"]["reason"].startswith("first promotion")
    record = json.loads(record_path.read_text())
    assert record == first["record"] and record["system"] == "rl" and record["dvc_remote"] == "local"
    assert (repo / record["model"] / "config.json").exists() and (repo / record["index"]).is_dir()
    assert list((repo / ".dvc-remote" / "files").rglob("*")), "dvc push sent nothing to the local remote"
    assert "local" in run_dvc(["remote", "list"], cwd=repo)

    # Production is now another, unbeatable model: the gate must reject and leave the record byte for byte.
    record["gate"]["value"], record["model_checksum"] = 1.0, "another-model"
    write_record(record, record_path)
    before = record_path.read_bytes()
    second = nightly_retrain(rebuild_data=False)
    assert not second["decision"]["promote"] and second["decision"]["reason"].startswith("reject")
    assert second["record"] is None
    assert record_path.read_bytes() == before

    # Bad data: the validate stage fails inside dvc repro; the flow fails with the report, trains nothing.
    limit = yaml.safe_load((repo / "params.yaml").read_text())["validate"]["max_query_chars"]
    edit_params(repo, lambda raw: raw["validate"].update(max_query_chars=3))
    lock_before = (repo / "dvc.lock").read_text()
    try:
        state = nightly_retrain(rebuild_data=False, return_state=True)
        assert state.is_failed() and "ValidationFailed" in state.message and "query_length" in state.message
        assert (repo / "dvc.lock").read_text() == lock_before  # no stage after validate ran
        assert record_path.read_bytes() == before
        report = {a.key: a.data for a in _artifacts(state.state_details.flow_run_id)}["validation-report"]
        assert "Data validation: FAILED" in report and "query_length" in report
    finally:
        edit_params(repo, lambda raw: raw["validate"].update(max_query_chars=limit))


def _artifacts(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[flow_run_id])))
