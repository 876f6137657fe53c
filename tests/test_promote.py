"""The promotion gate (searchr3.promote): better, worse, ties and their rule, the no-op of unchanged weights, first
promotion, fallbacks, what the record says, pruning, atomic and crash-safe writes."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from searchr3 import promote as promotion
from searchr3.promote import Decision, PromoteConfig, decide, decide_workspace, promote, write_record

GATE = "codesearch-test"


def metrics(**systems: float) -> dict:
    return {GATE: {name: {"ndcg@10": value, "queries": 10} for name, value in systems.items()},
            "other-set": {"rl": {"ndcg@10": 0.99}}}


def record(value: float, gate_set: str = GATE, system: str = "rl", sources: str | None = None) -> dict:
    return {"model": "production/releases/x/model", "system": system, "release": "x",
            "gate": {"set": gate_set, "metric": "ndcg@10", "value": value},
            "metrics": {gate_set: {system: {"ndcg@10": value}}},
            **({"data": {"sources_fingerprint": sources}} if sources else {})}


def test_a_tie_on_new_data_promotes():
    prod = record(0.500, sources="fp-old")
    d = decide(metrics(rl=0.497, sft=0.6), prod, GATE, tolerance=0.005, weights="w2", sources="fp-new")
    assert d.promote and d.system == "rl" and d.outcome == "tie-new-data"
    assert (d.candidate, d.production) == (0.497, 0.500)
    assert "0.4970" in d.reason and "0.5000" in d.reason and "newer data" in d.reason


def test_a_tie_on_the_same_data_keeps_production():
    d = decide(metrics(rl=0.503), record(0.500, sources="fp"), GATE, 0.005, weights="w2", sources="fp")
    assert not d.promote and d.outcome == "tie" and "sources are unchanged" in d.reason


def test_a_tie_with_unknown_sources_keeps_production():
    d = decide(metrics(rl=0.5), record(0.5), GATE, 0.005, weights="w2", sources="fp")  # production has none
    assert not d.promote and d.outcome == "tie"


@pytest.mark.parametrize(("on_tie", "promoted"), [("always", True), ("never", False), ("new_data", True)])
def test_the_tie_rule_is_a_parameter(on_tie, promoted):
    d = decide(metrics(rl=0.5), record(0.5, sources="a"), GATE, 0.005, weights="w2", sources="b", on_tie=on_tie)
    assert d.promote is promoted and d.outcome.startswith("tie")


def test_unknown_tie_rule_is_refused():
    with pytest.raises(ValueError, match="on_tie"):
        decide(metrics(rl=0.5), None, GATE, 0.005, on_tie="sometimes")
    with pytest.raises(ValueError, match="on_tie"):
        PromoteConfig(on_tie="sometimes")


def test_promotes_when_candidate_beats_production_by_more_than_the_tolerance():
    d = decide(metrics(rl=0.506), record(0.50, sources="fp"), GATE, tolerance=0.005, weights="w2", sources="fp")
    assert d.promote and d.outcome == "better"
    assert decide(metrics(rl=0.61), record(0.50), GATE, tolerance=0.0).promote


def test_rejects_when_candidate_is_below_production_minus_tolerance():
    d = decide(metrics(rl=0.493, sft=0.9), record(0.500), GATE, tolerance=0.005, sources="new")
    assert not d.promote and d.outcome == "worse"
    assert d.system == "rl"  # sft being better does not matter: rl was evaluated, so rl is the candidate
    assert d.reason.startswith("reject") and "0.4930 < 0.4950" in d.reason


def test_zero_tolerance_rejects_any_drop():
    assert not decide(metrics(rl=0.4999), record(0.5), GATE, tolerance=0.0).promote


def test_the_weights_production_serves_are_a_no_op_whatever_the_scores():
    prod = record(0.40, sources="a")
    prod["model_checksum"] = "abc123"
    for value in (0.40, 0.90):  # even a "better" score (evaluation changed) promotes nothing
        d = decide(metrics(rl=value), prod, GATE, 0.005, weights="abc123", sources="b", on_tie="always")
        assert not d.promote and d.outcome == "unchanged" and d.reason.startswith("unchanged")
    assert decide(metrics(rl=0.9), prod, GATE, 0.005, weights=None).promote  # unknown weights: compared normally


def test_first_promotion_needs_no_production():
    d = decide(metrics(rl=0.1), None, GATE, tolerance=0.005)
    assert d.promote and d.production is None and d.reason.startswith("first promotion")


def test_falls_back_to_the_best_evaluated_system_when_the_candidate_is_missing():
    d = decide(metrics(sft=0.30, base=0.40), None, GATE, 0.005, candidate="rl", fallback=["sft", "base"])
    assert d.promote and d.system == "base" and d.candidate == 0.40
    assert "rl was not evaluated" in d.reason


def test_rejects_when_nothing_was_evaluated_on_the_gate_set():
    d = decide({"other-set": {"rl": {"ndcg@10": 0.9}}}, None, GATE, 0.005)
    assert not d.promote and d.system is None and GATE in d.reason


def test_nan_metric_counts_as_not_evaluated():
    d = decide(metrics(rl=float("nan"), sft=0.2), None, GATE, 0.005)
    assert d.system == "sft"


def test_production_measured_on_another_gate_set_cannot_be_compared():
    d = decide(metrics(rl=0.9), record(0.1, gate_set="scifact-test"), GATE, 0.005)
    assert not d.promote and "cannot be compared" in d.reason


def test_production_value_read_from_its_saved_metrics_when_gated_elsewhere():
    prod = record(0.1, gate_set="scifact-test")
    prod["metrics"][GATE] = {"rl": {"ndcg@10": 0.7}}
    d = decide(metrics(rl=0.706), prod, GATE, 0.005)
    assert d.promote and d.production == 0.7 and d.outcome == "better"


def test_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance"):
        decide(metrics(rl=0.5), None, GATE, -0.1)


# --- promote(): release copy + record ---------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A repo root with models/rl, a matching indexes/production snapshot and a dvc.lock."""
    (tmp_path / "models" / "rl").mkdir(parents=True)
    (tmp_path / "models" / "rl" / "model.safetensors").write_bytes(b"weights-v1")
    (tmp_path / "indexes" / "production").mkdir(parents=True)
    (tmp_path / "indexes" / "production" / "manifest.json").write_text(json.dumps({"model_path": "models/rl"}))
    (tmp_path / "indexes" / "production" / "index.faiss").write_bytes(b"faiss")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    return tmp_path


def at(hour: int) -> dt.datetime:
    return dt.datetime(2026, 1, 1, hour, tzinfo=dt.timezone.utc)


def test_promote_copies_the_release_and_writes_the_record(workspace):
    cfg = PromoteConfig()
    d = decide(metrics(rl=0.42), None, GATE, cfg.tolerance)
    rec = promote(d, metrics(rl=0.42), cfg, run_id="abcdef123456", dvc_remote="local", now=at(2), cwd=workspace)
    assert rec["release"] == "20260101T020000Z-abcdef12"
    assert rec["model"] == "production/releases/20260101T020000Z-abcdef12/model"
    assert (workspace / rec["model"] / "model.safetensors").read_bytes() == b"weights-v1"
    assert (workspace / rec["index"] / "index.faiss").read_bytes() == b"faiss"
    assert rec["gate"]["value"] == 0.42 and rec["gate"]["set"] == GATE and rec["run"] == "abcdef123456"
    assert rec["dvc_lock"]["sha256"] == promotion.file_sha256(workspace / "dvc.lock")
    assert (workspace / rec["dvc_lock"]["copy"]).read_text() == "schema: '2.0'\n"
    assert json.loads((workspace / cfg.record).read_text()) == rec
    assert (workspace / cfg.releases / ".gitignore").read_text().endswith("*\n")
    # the workspace model changing afterwards (the next run) does not change production
    (workspace / "models" / "rl" / "model.safetensors").write_bytes(b"weights-v2")
    assert (workspace / rec["model"] / "model.safetensors").read_bytes() == b"weights-v1"


def test_promote_copies_the_corpus_and_writes_a_model_card(workspace):
    (workspace / "models" / "rl" / "manifest.json").write_text(json.dumps({"stage": "rl", "weights_sha256": "abc"}))
    (workspace / "data" / "eval" / "x-test").mkdir(parents=True)
    (workspace / "data" / "eval" / "x-test" / "corpus.jsonl").write_text('{"_id": "d1", "text": "t"}\n')
    (workspace / "indexes" / "production" / "manifest.json").write_text(
        json.dumps({"model_path": "models/rl", "corpus": "data/eval/x-test"}))
    rec = promote(decide(metrics(rl=0.42), None, GATE, 0.005), metrics(rl=0.42), PromoteConfig(), now=at(2),
                  cwd=workspace)
    assert rec["corpus"] == "production/releases/20260101T020000Z/corpus"
    assert (workspace / rec["corpus"] / "corpus.jsonl").read_text() == '{"_id": "d1", "text": "t"}\n'
    assert rec["source"]["corpus"] == "data/eval/x-test" and rec["model_checksum"] == "abc"
    card = (workspace / rec["model_card"]).read_text()
    assert rec["model_card"] == rec["model"] + "/README.md"
    assert card.startswith("---\n") and "model-index" in card and "0.42" in card


def test_index_encoded_by_another_model_is_not_promoted_with_it(workspace):
    (workspace / "models" / "sft").mkdir()
    d = decide(metrics(sft=0.3), None, GATE, 0.005)  # rl not evaluated: sft is promoted; the index is rl's
    rec = promote(d, metrics(sft=0.3), PromoteConfig(), now=at(2), cwd=workspace)
    assert rec["system"] == "sft" and rec["index"] is None


def test_promote_refuses_a_rejection_and_leaves_the_record(workspace):
    cfg = PromoteConfig()
    write_record(record(0.5), workspace / cfg.record)
    before = (workspace / cfg.record).read_bytes()
    d = decide(metrics(rl=0.1), record(0.5), GATE, cfg.tolerance)
    with pytest.raises(ValueError, match="refusing to promote"):
        promote(d, metrics(rl=0.1), cfg, cwd=workspace)
    assert (workspace / cfg.record).read_bytes() == before
    assert not (workspace / cfg.releases).exists()


def _sources(workspace: Path, fingerprint: str, queries: int) -> None:
    (workspace / "metrics").mkdir(exist_ok=True)
    (workspace / "metrics" / "sources.json").write_text(json.dumps({"fingerprint": fingerprint, "sources": {
        "toy": {"type": "beir", "sha256": fingerprint, "rows": {"queries.jsonl": queries, "qrels/train.tsv": queries}}}}))
    (workspace / "data").mkdir(exist_ok=True)
    (workspace / "data" / "manifest.json").write_text(json.dumps({
        "train": {"rows": 2 * queries, "corpus_documents": 50}, "eval_sets": {GATE: {"queries": 10}}}))


def _weights(workspace: Path, digest: str) -> None:
    (workspace / "models" / "rl" / "manifest.json").write_text(json.dumps({"stage": "rl", "weights_sha256": digest}))


def test_the_record_says_what_the_release_was_trained_on_and_what_was_added(workspace):
    cfg = PromoteConfig()
    _weights(workspace, "w1")
    _sources(workspace, "fp1", queries=20)
    first = promote(decide(metrics(rl=0.4), None, GATE, 0.005), metrics(rl=0.4), cfg, now=at(1), cwd=workspace,
                    profile="tiny")
    assert first["model_checksum"] == "w1" and first["profile"] == "tiny"
    assert first["data"]["sources_fingerprint"] == "fp1"
    assert first["data"]["rows"]["train"] == 40 and first["data"]["rows"]["sources"]["toy"]["queries.jsonl"] == 20
    assert first["data"]["added_since_previous"] is None  # nothing to compare with
    _weights(workspace, "w2")
    _sources(workspace, "fp2", queries=25)  # five queries (and their judgements) appended to the source
    second = promote(decide_workspace(metrics(rl=0.4), first, cfg, GATE, cwd=workspace), metrics(rl=0.4), cfg,
                     now=at(2), cwd=workspace)
    assert second["gate"]["outcome"] == "tie-new-data"
    added = second["data"]["added_since_previous"]
    assert added["train"] == 10 and added["sources.toy.queries.jsonl"] == 5 and added["sources.toy.qrels/train.tsv"] == 5
    assert added["eval_queries.codesearch-test"] == 0
    assert second["previous"]["model_checksum"] == "w1"


def test_record_and_release_are_world_readable(workspace):
    old = os.umask(0o022)
    try:
        rec = promote(decide(metrics(rl=0.4), None, GATE, 0.005), metrics(rl=0.4), PromoteConfig(), now=at(1),
                      cwd=workspace)
    finally:
        os.umask(old)
    for path in (workspace / "production" / "record.json", workspace / rec["model"],
                 workspace / rec["model"] / "model.safetensors", workspace / rec["model"] / ".."):
        assert path.stat().st_mode & 0o044 == 0o044, (path, oct(path.stat().st_mode))


def test_two_no_op_nightlies_create_no_release_and_prune_nothing(workspace):
    cfg = PromoteConfig(keep_releases=1)
    _weights(workspace, "w1")
    _sources(workspace, "fp1", queries=20)
    for hour in (1, 2):  # two real promotions: production and its predecessor
        _weights(workspace, f"w{hour}")
        d = decide_workspace(metrics(rl=0.4 + hour / 10), read_json(workspace / cfg.record), cfg, GATE, cwd=workspace)
        promote(d, metrics(rl=0.4 + hour / 10), cfg, now=at(hour), cwd=workspace)
    releases = sorted(p.name for p in (workspace / cfg.releases).iterdir() if p.is_dir())
    before = (workspace / cfg.record).read_bytes()
    assert len(releases) == 2  # keep_releases=1, but the predecessor is never pruned
    for _ in range(2):  # the nightly again, nothing changed: DVC skipped every stage, the weights are production's
        d = decide_workspace(metrics(rl=0.6), read_json(workspace / cfg.record), cfg, GATE, cwd=workspace)
        assert not d.promote and d.outcome == "unchanged"
    assert sorted(p.name for p in (workspace / cfg.releases).iterdir() if p.is_dir()) == releases
    assert (workspace / cfg.record).read_bytes() == before


def test_pruning_never_removes_production_or_its_predecessor(tmp_path):
    for name in ("20260101T010000Z", "20260101T020000Z", "20260101T030000Z", "20260101T040000Z"):
        (tmp_path / name).mkdir()
    (tmp_path / ".20260101T050000Z.building-x").mkdir()  # a copy in progress is not a release
    gone = promotion.prune_releases(tmp_path, keep=1, current="20260101T040000Z", protect=["20260101T020000Z"])
    assert gone == ["20260101T010000Z", "20260101T030000Z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".20260101T050000Z.building-x", "20260101T020000Z",
                                                            "20260101T040000Z"]


def test_git_dirty_means_code_or_params_not_pipeline_outputs(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for name in ("dvc.lock", "params.yaml", "metrics/eval.json", "reports/eval.md", ".dvc/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1")
    assert promotion.git_revision(tmp_path)["dirty"] is False
    for name in ("dvc.lock", "metrics/eval.json", "reports/eval.md"):  # what every retraining rewrites
        (tmp_path / name).write_text("v2\n")
    rev = promotion.git_revision(tmp_path)
    assert rev["dirty"] is False and rev["changed"] == [] and len(rev["rev"]) == 40
    (tmp_path / ".dvc" / "config").write_text("[remote]\n")
    git("add", ".dvc/config")  # staged (DVC autostages) or not, it is a change to the code's configuration
    (tmp_path / "params.yaml").write_text("v2\n")
    rev = promotion.git_revision(tmp_path)
    assert rev["dirty"] is True and sorted(rev["changed"]) == [".dvc/config", "params.yaml"]


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def test_successive_promotions_keep_the_newest_releases(workspace):
    cfg = PromoteConfig(keep_releases=2)
    names = []
    for hour in (1, 2, 3):
        d = Decision(True, "ok", 0.5, None, "rl", GATE)
        names.append(promote(d, metrics(rl=0.5), cfg, now=at(hour), cwd=workspace)["release"])
    kept = sorted(p.name for p in (workspace / cfg.releases).iterdir() if p.is_dir())
    assert kept == names[1:]
    current = json.loads((workspace / cfg.record).read_text())
    assert current["release"] == names[2] and current["previous"]["release"] == names[1]


def test_a_crash_while_copying_leaves_production_as_it_was(workspace, monkeypatch):
    cfg = PromoteConfig()
    write_record(record(0.5), workspace / cfg.record)
    before = (workspace / cfg.record).read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(promotion.shutil, "copytree", disk_full)
    with pytest.raises(OSError, match="No space"):
        promote(Decision(True, "ok", 0.6, 0.5, "rl", GATE), metrics(rl=0.6), cfg, now=at(4), cwd=workspace)
    assert (workspace / cfg.record).read_bytes() == before
    assert [p.name for p in (workspace / cfg.releases).iterdir() if p.is_dir()] == []


def test_write_record_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "production" / "record.json"
    write_record({"model": "a"}, path)
    real_replace = os.replace

    def crash(src, dst):
        raise OSError("power cut before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        write_record({"model": "b"}, path)
    assert json.loads(path.read_text()) == {"model": "a"}
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temp file left behind
    monkeypatch.setattr(os, "replace", real_replace)
    write_record({"model": "b"}, path)
    assert json.loads(path.read_text()) == {"model": "b"}


def test_library_imports_neither_prefect_nor_dvc():
    code = "import sys, searchr3.promote; print(sorted(m for m in ('prefect', 'dvc') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_params_yaml_promote_section_maps_onto_the_dataclass():
    from searchr3.config import load_params, section

    root = Path(__file__).resolve().parents[1]
    cfg = section(load_params(root / "params.yaml", profile="default"), "promote", PromoteConfig)
    assert cfg.tolerance == 0.005 and cfg.candidate == "rl"
