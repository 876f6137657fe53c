"""The DVC remote on object storage (dvc-s3), against a local S3-compatible server (moto) on 127.0.0.1: the nightly
flow promotes the tiny profile's first model and pushes the pipeline's outputs to ``s3://``; an empty clone of the
repository with the same remote pulls them back, and models/ and indexes/ are byte for byte the promoted ones (and
DVC finds every stage up to date: nothing is recomputed). The endpoint reaches DVC as ``AWS_ENDPOINT_URL`` (the
variable the Kubernetes/Docker job templates set), the credentials as ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.dvc import dvc_executable, run_dvc

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "searchr3-releases"
REMOTE_URL = f"s3://{BUCKET}/dvc"
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


@pytest.fixture
def s3(monkeypatch, port):
    """A moto S3 server on 127.0.0.1 (a free port) with one bucket; the AWS variables DVC reads point at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()


def _repo(path: Path) -> Path:
    """A git + DVC repo of this project's pipeline on the tiny profile (short RL), its remote the S3 bucket."""
    path.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, path / name)
    for folder in ("bin", "searchr3"):
        shutil.copytree(ROOT / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([dvc_executable(), "init", "-q"], cwd=path, check=True)
    shutil.copy(ROOT / ".dvc" / "config", path / ".dvc" / "config")
    raw = yaml.safe_load((path / "params.yaml").read_text())
    raw["profile"] = "tiny"
    raw["rl"].update(steps=2, queries_per_step=2, group_size=2, checkpoint_every=2, max_corpus_docs=100)
    raw["evaluate"].update(systems=["bm25", "sft", "rl"], reasoning=[])
    raw["promote"].update(dvc_remote="s3", dvc_remote_url=REMOTE_URL)
    (path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run([*GIT, "add", "-A"], cwd=path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "pipeline"], cwd=path, check=True)
    return path


def _uncached(repo: Path) -> set[str]:
    """Outputs dvc.yaml declares with ``cache: false`` (checkpoints, metrics): never pushed, never pulled."""
    found = set()
    for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values():
        for section in ("outs", "metrics", "plots"):
            for out in stage.get(section, []):
                if isinstance(out, dict):
                    found |= {path for path, opts in out.items() if isinstance(opts, dict) and opts.get("cache") is False}
    return found


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".gitignore" and not (p.name.startswith(".") and p.name.endswith(".lock"))}


@pytest.mark.timeout(900)
def test_promotion_pushes_to_s3_and_an_empty_clone_pulls_the_release_back(prefect_server, s3, tmp_path, monkeypatch):
    from flows.nightly import nightly_retrain

    repo = _repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    monkeypatch.delenv("SEARCHR3_PROFILE", raising=False)
    result = nightly_retrain()
    assert result["decision"]["promote"], result["decision"]
    assert result["record"]["dvc_remote"] == "s3"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys and all(k.startswith("dvc/files/md5/") for k in keys), keys[:5]
    assert "s3" in run_dvc(["remote", "list"], cwd=repo)

    # what a teammate does: clone the repository (code, dvc.yaml, dvc.lock), name the remote, pull
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", "promoted"], cwd=repo, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    (clone / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    assert not (clone / "models" / "rl").exists() and not (clone / ".dvc" / "cache").exists()
    run_dvc(["remote", "add", "--local", "--default", "s3", REMOTE_URL], cwd=clone)
    run_dvc(["pull"], cwd=clone)
    for folder in ("models", "indexes"):
        original, pulled = _checksums(repo / folder), _checksums(clone / folder)
        assert pulled == original, f"{folder}/ differs after the pull"
        assert any(k.startswith("rl/") for k in pulled), f"{folder}/rl was not pulled"
    # up to date: nothing to recompute; the only outputs a clone lacks are the ones DVC never caches (checkpoints)
    status = json.loads(subprocess.run([dvc_executable(), "status", "--json"], cwd=clone, check=True,
                                       capture_output=True, text=True).stdout or "{}")
    changes = {(stage, kind, path, what) for stage, items in status.items() for item in items if isinstance(item, dict)
               for kind, paths in item.items() for path, what in paths.items()}
    # the sources stage hashes the data sources on every run by design (always_changed), so it is always listed
    always = {name for name, stage in yaml.safe_load((clone / "dvc.yaml").read_text())["stages"].items()
              if stage.get("always_changed")}
    assert all(i == "always changed" and stage in always for stage, items in status.items() for i in items
               if not isinstance(i, dict)), status
    # uncached outputs are git's copy or absent: deleted, or modified where git ignores part of them (data docs)
    assert all(kind == "changed outs" and what in ("deleted", "not in cache", "modified") and path in _uncached(clone)
               for _, kind, path, what in changes), f"the pulled clone is not up to date: {status}"
