"""The search service on the tiny random model: API and bounds, modes, micro-batching, reasoning budget,
release verification, hot swap on promotion (in-flight requests, refusals), the page, hybrid evaluation."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from searchr3.eval.fusion import rrf, rrf_runs
from searchr3.release import ReleaseInvalid, release_paths, require_valid, verify_release
from searchr3.serve.app import create_app
from searchr3.serve.batcher import Busy, MicroBatcher
from searchr3.serve.config import ServeConfig
from searchr3.serve.service import SearchService


def record_of(root: Path) -> dict:
    return json.loads((root / "production" / "record.json").read_text())


@pytest.fixture
def service(serve_workspace):
    svc = SearchService(ServeConfig(poll_s=0.05), root=serve_workspace)
    yield svc
    svc.close()


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


# ---- reciprocal-rank fusion ------------------------------------------------------------------------------------

def test_rrf_hand_computed():
    fused = dict(rrf([["a", "b", "c"], ["c", "a"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert list(fused) == ["a", "c", "b"]


def test_rrf_depth_and_ties_keep_first_seen_order():
    assert rrf([["x", "y"], ["y", "x"]], k=0) == [("x", 1.5), ("y", 1.5)]
    assert [d for d, _ in rrf([["a", "b", "c"]], depth=2)] == ["a", "b"]
    with pytest.raises(ValueError, match="k must be >= 0"):
        rrf([["a"]], k=-1)


def test_rrf_runs_ranks_each_run_by_its_scores():
    dense = {"q": {"a": 0.1, "b": 0.9}}  # b first
    lexical = {"q": {"a": 7.0}, "q2": {"c": 1.0}}
    fused = rrf_runs([dense, lexical], k=0)
    assert fused["q"] == {"a": pytest.approx(1 / 2 + 1), "b": 1.0}
    assert fused["q2"] == {"c": 1.0}  # a query one run lacks keeps the other's ranking


# ---- release verification --------------------------------------------------------------------------------------

def test_a_promoted_release_verifies(serve_workspace):
    checks = require_valid(release_paths(record_of(serve_workspace), serve_workspace))
    assert {c.name for c in checks} == {"model_manifest", "model_weights", "record_checksum", "index_manifest",
                                        "index_model", "corpus"}


def test_tampered_weights_fail_verification(serve_workspace):
    paths = release_paths(record_of(serve_workspace), serve_workspace)
    weights = next(paths.model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    failed = {c.name: c.detail for c in verify_release(paths) if not c.ok}
    assert set(failed) == {"model_weights", "record_checksum", "index_model"}
    assert "but the manifest says" in failed["model_weights"]
    with pytest.raises(ReleaseInvalid, match="model_weights"):
        require_valid(paths)


def test_index_of_another_model_and_missing_documents_fail_verification(serve_workspace, tiny_model_dir_b):
    paths = release_paths(record_of(serve_workspace), serve_workspace)
    for f in paths.model.iterdir():  # the other model's files, manifest included: self-consistent, wrong index
        f.unlink()
    for f in tiny_model_dir_b.iterdir():
        shutil.copy(f, paths.model / f.name)
    rows = (paths.corpus / "corpus.jsonl").read_text().splitlines()
    (paths.corpus / "corpus.jsonl").write_text("\n".join(rows[1:]) + "\n")
    failed = {c.name: c.detail for c in verify_release(paths) if not c.ok}
    assert set(failed) == {"record_checksum", "index_model", "corpus"}
    assert "1 of 12 indexed documents have no text" in failed["corpus"]


# ---- the API ---------------------------------------------------------------------------------------------------

def test_search_modes_return_ranked_results_with_the_release(client, serve_workspace):
    release = record_of(serve_workspace)["release"]
    for mode in ("dense", "bm25", "hybrid"):
        body = client.get("/search", params={"q": "add", "k": 5, "mode": mode}).json()
        assert body["release"] == release and body["mode"] == mode and body["k"] == 5
        results = body["results"]
        assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
        assert all(results[i]["score"] >= results[i + 1]["score"] for i in range(len(results) - 1))
        assert {"id", "score", "title", "snippet"} <= set(results[0])
        if mode == "dense":
            assert len(results) == 5
        if mode == "bm25":
            assert results[0]["id"] == "add"  # the only document sharing the query's terms
            assert len(results) == 1  # documents sharing no term are left out
        if mode == "hybrid":
            assert len(results) == 5 and results[0]["bm25_rank"] == 1
            top = results[0]
            assert top["score"] == pytest.approx(1 / (60 + top["dense_rank"]) + 1 / (60 + top["bm25_rank"]), abs=1e-6)


def test_dense_search_agrees_with_the_model_and_index(client, service):
    release = service.current
    vector = release.embedder.encode_queries(["brown fox"]).vectors
    scores, ids = release.index.search(vector, 3)
    body = client.get("/search", params={"q": "brown fox", "k": 3}).json()
    assert [r["id"] for r in body["results"]] == ids[0]
    assert [r["score"] for r in body["results"]] == pytest.approx(scores[0].tolist(), abs=1e-5)


@pytest.mark.parametrize("params, status, message", [
    ({}, 400, "q is required"),
    ({"q": "   "}, 400, "q is required"),
    ({"q": "x" * 1001}, 400, "q is 1001 characters long; at most 1000"),
    ({"q": "x", "k": 0}, 400, "k must be between 1 and 100, got 0"),
    ({"q": "x", "k": 101}, 400, "k must be between 1 and 100, got 101"),
    ({"q": "x", "k": "ten"}, 422, "k: Input should be a valid integer"),
    ({"q": "x", "mode": "semantic"}, 400, "mode must be one of dense, bm25, hybrid, got 'semantic'"),
    ({"q": "x", "mode": "bm25", "reasoning": "true"}, 400, "reasoning needs the model"),
    ({"q": "x", "budget_ms": 100}, 400, "budget_ms applies to reasoning only"),
    ({"q": "x", "reasoning": "true", "budget_ms": 10 ** 6}, 400, "budget_ms must be between 1 and 30000"),
    ({"q": "x", "reasoning": "maybe"}, 422, "reasoning: Input should be a valid boolean"),
])
def test_bad_requests_get_one_clear_message(client, params, status, message):
    response = client.get("/search", params=params)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_health_and_release(client, serve_workspace):
    record = record_of(serve_workspace)
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["release"] == record["release"]
    info = client.get("/release").json()
    assert info["release"] == record["release"] and info["system"] == "rl"
    assert info["model_checksum"] == record["model_checksum"]
    assert info["metrics"] == record["metrics"] and info["git_rev"] == record["git_rev"]
    assert info["documents"] == 12 and all(c["ok"] for c in info["verification"])


def test_page_shows_the_query_box_modes_and_the_reports_evaluation_table(client, serve_workspace):
    from searchr3.eval.report import metrics_rows, render_table

    page = client.get("/").text
    assert '<input id="q"' in page and all(f'<option value="{m}"' in page for m in ("dense", "bm25", "hybrid"))
    assert record_of(serve_workspace)["release"] in page
    # every cell of the markdown table reports/eval.md renders from these metrics appears in the page's table
    markdown = render_table(metrics_rows(record_of(serve_workspace)["metrics"]))
    body_lines = markdown.splitlines()[2:]
    table = page[page.index('<table id="eval-table">'):]
    rows = table.split("<tr")[2:]  # after the header row
    assert len(rows) == len(body_lines) == 2
    for line, row in zip(body_lines, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert [c.split("</td>")[0].split(">")[-1] for c in row.split("<td")[1:]] == cells


def test_reasoning_is_shown_and_honours_the_time_budget(serve_workspace):
    from searchr3.model.config import ModelConfig

    svc = SearchService(ServeConfig(), model_config=ModelConfig(max_new_tokens=4000, precision="fp32"),
                        root=serve_workspace)
    with TestClient(create_app(svc)) as c:
        started = time.perf_counter()
        body = c.get("/search", params={"q": "add two numbers", "reasoning": "true", "budget_ms": 150}).json()
        took = time.perf_counter() - started
    r = body["reasoning"]
    assert r["budget_ms"] == 150 and r["max_new_tokens"] == 4000
    # a random model never emits the token; 4000 tokens take far longer than 150 ms, so the budget stopped it
    assert r["stopped_by_budget"] and not r["emitted_token"] and 0 < r["generated_tokens"] < 4000
    assert took < 5.0 and len(body["results"]) == 10


# ---- micro-batching --------------------------------------------------------------------------------------------

def test_concurrent_queries_are_batched_and_get_their_own_results(service):
    service.start(watch=False)
    release = service.current
    texts = [f"query number {i} about {w}" for i, w in enumerate(["fox", "bread", "solar", "json", "cat", "river"])]
    alone = [service.batcher.submit(release, t, 4).result(timeout=30) for t in texts]
    batcher = MicroBatcher(max_batch=16, max_wait_ms=200)
    try:
        futures = [batcher.submit(release, t, 4) for t in texts]
        together = [f.result(timeout=30) for f in futures]
        assert batcher.largest_batch == len(texts) and batcher.batches == 1
    finally:
        batcher.close()
    assert [[d for d, _ in r] for r in together] == [[d for d, _ in r] for r in alone]
    for a, b in zip(alone, together):
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)


class _Blocking:
    """A release whose model blocks until ``gate`` is set (to hold a batch in flight)."""

    def __init__(self, gate: threading.Event):
        self.gate = gate
        self.embedder = self
        self.index = self

    def encode_queries(self, texts):
        self.gate.wait(10)
        return type("Q", (), {"vectors": np.zeros((len(texts), 2), dtype=np.float32)})()

    def search(self, vectors, k):
        return np.zeros((len(vectors), 1), dtype=np.float32), [["d"] for _ in vectors]


def test_a_full_queue_refuses_at_once():
    gate = threading.Event()
    batcher = MicroBatcher(max_batch=1, max_wait_ms=0, queue_size=1)
    try:
        first = batcher.submit(_Blocking(gate), "a", 1)
        deadline = time.time() + 5
        while batcher.waiting and time.time() < deadline:  # the worker has taken the first job
            time.sleep(0.01)
        second = batcher.submit(_Blocking(gate), "b", 1)
        with pytest.raises(Busy, match="1 queries are already waiting"):
            batcher.submit(_Blocking(gate), "c", 1)
        gate.set()
        assert first.result(5) == [("d", 0.0)] and second.result(5) == [("d", 0.0)]
    finally:
        gate.set()
        batcher.close()


# ---- hot swap --------------------------------------------------------------------------------------------------

def test_promotion_while_requests_run_swaps_with_no_failed_request(client, service, serve_workspace,
                                                                   tiny_model_dir_b, promote_tiny,
                                                                   promotion_under_load):
    first = record_of(serve_workspace)["release"]

    def request(mode):
        response = client.get("/search", params={"q": "sort a list of items", "mode": mode, "k": 3})
        ok = response.status_code == 200
        return ok, response.json()["release"] if ok else (response.status_code, response.text)

    seen, failures, second = promotion_under_load(
        request, lambda: promote_tiny(serve_workspace, tiny_model_dir_b, hour=2)["release"],
        ("dense", "hybrid", "dense", "bm25"), warmup_s=0.3, timeout_s=30)
    assert failures == []
    assert seen[0] == first and seen[-1] == second
    info = client.get("/release").json()
    assert info["release"] == second
    assert info["model_checksum"] == json.loads((tiny_model_dir_b / "manifest.json").read_text())["weights_sha256"]
    assert service.health()["swaps"][-1]["to"] == second


def test_a_request_in_flight_finishes_on_the_old_release(service, serve_workspace, tiny_model_dir_b, promote_tiny):
    service.start(watch=False)
    old = service.current
    started, gate = threading.Event(), threading.Event()
    real = old.embedder.encode_queries

    def slow(*args, **kwargs):
        started.set()
        gate.wait(10)
        return real(*args, **kwargs)

    old.embedder.encode_queries = slow
    out = {}
    query = service.parse("brown fox", 3, "dense", False, None)
    worker = threading.Thread(target=lambda: out.setdefault("body", service.search(query)))
    worker.start()
    assert started.wait(10)
    new_id = promote_tiny(serve_workspace, tiny_model_dir_b, hour=2)["release"]
    assert service.check_for_update() == "swapped" and service.current.id == new_id
    gate.set()
    worker.join(10)
    assert out["body"]["release"] == old.id and len(out["body"]["results"]) == 3
    assert service.search(query)["release"] == new_id


def test_a_release_failing_verification_is_refused_and_the_old_one_keeps_serving(
        service, serve_workspace, tiny_model_dir_b, promote_tiny, caplog):
    service.start(watch=False)
    old = service.current.id
    bad = promote_tiny(serve_workspace, tiny_model_dir_b, hour=2)
    weights = next((serve_workspace / bad["model"]).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    with caplog.at_level("ERROR", logger="searchr3.serve"):
        assert service.check_for_update() == "refused"
    assert f"refused release {bad['release']}, still serving {old}" in caplog.text
    assert service.check_for_update() is None  # the same record is not retried
    assert service.search(service.parse("fox", 2, None, False, None))["release"] == old
    refusal = service.health()["refused_releases"][-1]
    assert refusal["release"] == bad["release"] and "model_weights" in refusal["reason"]
    good = promote_tiny(serve_workspace, tiny_model_dir_b, hour=3)
    assert service.check_for_update() == "swapped" and service.current.id == good["release"]


def test_the_first_promotion_replaces_the_workspace_model(tmp_path, serve_workspace, tiny_model_dir, promote_tiny):
    """Before any promotion the service serves models/rl + indexes/production (as `searchr3 search` does)."""
    (serve_workspace / "production" / "record.json").unlink()
    svc = SearchService(ServeConfig(), root=serve_workspace).start(watch=False)
    try:
        assert svc.current.id == "rl@production"
        new_id = promote_tiny(serve_workspace, tiny_model_dir, hour=4)["release"]
        assert svc.check_for_update() == "swapped" and svc.current.id == new_id
    finally:
        svc.close()


# ---- the command -----------------------------------------------------------------------------------------------

def test_serve_command_refuses_what_it_cannot_serve(tmp_path, monkeypatch, capsys):
    from searchr3.cli import main

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--port", "0"]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err
    assert main(["serve", "--model", "m"]) == 2
    assert "--model and --index go together" in capsys.readouterr().err
    assert main(["serve", "--port", "8765"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot serve: ") and "no production record" in err and len(err.splitlines()) == 1


def test_serve_section_of_params_yaml_maps_onto_the_dataclass():
    from searchr3.config import load_params, section

    root = Path(__file__).resolve().parents[1]
    cfg = section(load_params(root / "params.yaml", profile="default"), "serve", ServeConfig)
    assert cfg.max_k == 100 and cfg.host == "127.0.0.1"
    with pytest.raises(ValueError, match="serve.default_k"):
        ServeConfig(default_k=200)


def test_the_service_imports_neither_prefect_nor_dvc():
    import subprocess
    import sys

    code = ("import sys, searchr3.serve.app, searchr3.commands.serve, searchr3.release, searchr3.model.card; "
            "print(sorted(m for m in ('prefect', 'dvc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
