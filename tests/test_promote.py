"""The promotion gate (searchr3.promote): both branches, first promotion, fallbacks, atomic and crash-safe writes."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from searchr3 import promote as promotion
from searchr3.promote import Decision, PromoteConfig, decide, promote, write_record

GATE = "codesearch-test"


def metrics(**systems: float) -> dict:
    return {GATE: {name: {"ndcg@10": value, "queries": 10} for name, value in systems.items()},
            "other-set": {"rl": {"ndcg@10": 0.99}}}


def record(value: float, gate_set: str = GATE, system: str = "rl") -> dict:
    return {"model": "production/releases/x/model", "system": system,
            "gate": {"set": gate_set, "metric": "ndcg@10", "value": value},
            "metrics": {gate_set: {system: {"ndcg@10": value}}}}


def test_promotes_when_candidate_is_within_tolerance_below_production():
    d = decide(metrics(rl=0.497, sft=0.6), record(0.500), GATE, tolerance=0.005)
    assert d.promote and d.system == "rl"
    assert (d.candidate, d.production) == (0.497, 0.500)
    assert "0.4970" in d.reason and "0.5000" in d.reason


def test_promotes_when_candidate_beats_production():
    assert decide(metrics(rl=0.61), record(0.50), GATE, tolerance=0.0).promote


def test_rejects_when_candidate_is_below_production_minus_tolerance():
    d = decide(metrics(rl=0.493, sft=0.9), record(0.500), GATE, tolerance=0.005)
    assert not d.promote
    assert d.system == "rl"  # sft being better does not matter: rl was evaluated, so rl is the candidate
    assert d.reason.startswith("reject") and "0.4930 < 0.4950" in d.reason


def test_zero_tolerance_rejects_any_drop():
    assert not decide(metrics(rl=0.4999), record(0.5), GATE, tolerance=0.0).promote


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
    d = decide(metrics(rl=0.697), prod, GATE, 0.005)  # floor 0.695
    assert d.promote and d.production == 0.7


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
