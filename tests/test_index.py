"""Live document index: versioned update, selective refresh policy, fidelity, snapshots.

The encoder is a numpy fake with a controllable policy version: the text "i" encodes to
normalise(base[i] + version * drift[i]), so a refresh at version v must reproduce exactly that.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from searchr3.config import ConfigError, section
from searchr3.data.errors import DataError
from searchr3.index import (DocumentIndex, IndexConfig, KnnGraph, RefreshConfig, RefreshPolicy, build_knn_graph,
                            fidelity, load_snapshot, refresh, save_snapshot)

N, DIM = 200, 16


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class FakeEncoder:
    """Documents "0".."N-1"; version v moves every vector along its own drift direction."""

    def __init__(self, n: int = N, dim: int = DIM, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.base = rng.normal(size=(n, dim))
        self.drift = rng.normal(size=(n, dim))
        self.calls: list[list[str]] = []

    def at(self, version: int):
        def encode(texts: list[str]) -> np.ndarray:
            self.calls.append(list(texts))
            rows = [int(t) for t in texts]
            return _normalise(self.base[rows] + version * self.drift[rows])
        return encode


def _ids(n: int = N) -> list[str]:
    return [f"d{i}" for i in range(n)]


def _texts(n: int = N) -> list[str]:
    return [str(i) for i in range(n)]


def _built(kind: str = "flat", version: int = 0, enc: FakeEncoder | None = None) -> tuple[DocumentIndex, FakeEncoder]:
    enc = enc or FakeEncoder()
    index = DocumentIndex(kind=kind, nlist=8, nprobe=8)  # nprobe = nlist: IVF searches exhaustively, results exact
    index.build(_ids(), _texts(), enc.at(version), version)
    return index, enc


def _queries(enc: FakeEncoder, version: int, n: int = 30) -> np.ndarray:
    return enc.at(version)([str(i) for i in range(n)])


# ---- store -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_refresh_of_a_set_matches_a_fresh_encode_and_leaves_the_rest(kind):
    index, enc = _built(kind)
    chosen = ["d3", "d50", "d199"]
    refresh(index, chosen, enc.at(4), version=4)
    np.testing.assert_allclose(index.vectors(chosen), enc.at(4)(["3", "50", "199"]), atol=1e-6)
    others = [d for d in _ids() if d not in chosen]
    np.testing.assert_allclose(index.vectors(others), enc.at(0)([d[1:] for d in others]), atol=1e-6)
    assert index.version_of(chosen).tolist() == [4, 4, 4]
    assert set(index.version_of(others).tolist()) == {0}


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_full_refresh_gives_the_same_results_as_a_rebuild(kind):
    index, enc = _built(kind)
    refresh(index, _ids(), enc.at(3), version=3)
    rebuilt, _ = _built(kind, version=3, enc=enc)
    queries = _queries(enc, 3)
    scores_a, ids_a = index.search(queries, 10)
    scores_b, ids_b = rebuilt.search(queries, 10)
    assert ids_a == ids_b
    np.testing.assert_allclose(scores_a, scores_b, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_update_keeps_labels_and_count_and_adds_unknown_ids(kind):
    index, enc = _built(kind)
    labels_before = index.labels_of(["d0", "d7"]).tolist()
    target = _normalise(np.ones((1, DIM)))
    index.update(["d7", "d0"], np.vstack([target, enc.at(1)(["0"])]), version=1)
    assert len(index) == N and index.doc_ids == _ids()
    assert index.labels_of(["d0", "d7"]).tolist() == labels_before
    assert index.search(target, 1)[1] == [["d7"]]
    index.update(["new"], -target, version=2, texts={"new": "5"})
    assert len(index) == N + 1 and index.labels_of(["new"]).tolist() == [N]
    assert index.search(-target, 1)[1] == [["new"]] and index.texts["new"] == "5"


def test_update_rejects_bad_vectors():
    index, _ = _built()
    with pytest.raises(ValueError, match="2 vectors for 1 doc ids"):
        index.update(["d1"], np.zeros((2, DIM), np.float32), 1)
    with pytest.raises(ValueError, match="dim 3"):
        index.update(["d1"], np.zeros((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match="NaN"):
        index.update(["d1"], np.full((1, DIM), np.nan, np.float32), 1)
    with pytest.raises(ValueError, match="duplicate doc ids"):
        index.update(["d1", "d1"], np.zeros((2, DIM), np.float32), 1)
    assert len(index) == N and index.versions.max() == 0


def test_search_clamps_k_to_the_corpus_size():
    index = DocumentIndex()
    index.build_from_vectors(["a", "b"], np.eye(2, dtype=np.float32), version=0)
    scores, ids = index.search(np.array([[0.6, 0.8]], np.float32), 5)
    assert ids == [["b", "a"]]
    np.testing.assert_allclose(scores, [[0.8, 0.6]], atol=1e-6)


def test_staleness_on_a_hand_made_case():
    index = DocumentIndex()
    index.build_from_vectors(["a", "b", "c", "d"], np.eye(4, dtype=np.float32), version=0)
    index.update(["c"], np.eye(4, dtype=np.float32)[2:3], version=2)
    index.update(["d"], np.eye(4, dtype=np.float32)[3:4], version=3)
    assert index.staleness(3) == {"mean_lag": 1.75, "max_lag": 3.0}  # lags 3, 3, 1, 0
    assert index.staleness(5) == {"mean_lag": 3.75, "max_lag": 5.0}
    with pytest.raises(ValueError, match="older than a stored vector"):
        index.staleness(2)


def test_ivf_refuses_fewer_documents_than_clusters():
    index = DocumentIndex(kind="ivf", nlist=64)
    with pytest.raises(ValueError, match="at least nlist=64"):
        index.build_from_vectors(_ids(10), np.eye(10, 16, dtype=np.float32), version=0)


# ---- graph and policy --------------------------------------------------------------------------


def test_knn_graph_lists_nearest_other_documents_in_order():
    angles = np.deg2rad([0, 10, 25, 60])
    index = DocumentIndex()
    index.build_from_vectors(["a", "b", "c", "d"], np.stack([np.cos(angles), np.sin(angles)], 1), version=0)
    graph = build_knn_graph(index, k=2)
    assert graph.neighbours.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]


def _policy_case(budget: int, full_refresh_every: int = 0) -> tuple[RefreshPolicy, DocumentIndex]:
    index = DocumentIndex()
    index.build_from_vectors(_ids(10), np.eye(10, dtype=np.float32), version=0)
    graph = KnnGraph(np.array([[2, 3, 4], [5, 6, 7]] + [[-1, -1, -1]] * 8, dtype=np.int64))
    cfg = RefreshConfig(budget_per_step=budget, graph_k=3, neighbours_per_doc=2, topk_stale=2,
                        full_refresh_every=full_refresh_every, probe_every=0)
    return RefreshPolicy(index, cfg, graph=graph), index


def test_policy_orders_used_then_neighbours_then_stale_topk():
    policy, _ = _policy_case(budget=100)
    topk = [["d0", "d8", "d9"], ["d7", "d8"]]  # only the first 2 of each list are looked at
    plan = policy.plan(step=1, used_doc_ids=["d0", "d1"], topk_doc_ids=topk, current_version=1)
    assert plan.doc_ids == ["d0", "d1", "d2", "d5", "d3", "d6", "d7", "d8"]
    assert plan.reasons == {"used": 2, "neighbours": 4, "topk_stale": 2, "rotation": 0}


def test_policy_respects_the_budget_and_skips_fresh_vectors():
    policy, index = _policy_case(budget=5)
    topk = [["d0", "d8", "d9"], ["d7", "d8"]]
    assert policy.select(1, ["d0", "d1"], topk, current_version=1) == ["d0", "d1", "d2", "d5", "d3"]
    index.update(["d2", "d1"], np.eye(10, dtype=np.float32)[[2, 1]], version=1)  # already encoded by version 1
    assert policy.select(1, ["d0", "d1"], topk, current_version=1) == ["d0", "d5", "d3", "d6", "d7"]


def test_rotation_slice_comes_on_top_of_the_budget():
    policy, _ = _policy_case(budget=3, full_refresh_every=5)  # 10 docs, T=5: slices of 2
    plan = policy.plan(step=3, used_doc_ids=["d0", "d1"], topk_doc_ids=[], current_version=1)
    assert plan.doc_ids == ["d0", "d1", "d2", "d6", "d7"]
    assert plan.reasons == {"used": 2, "neighbours": 1, "topk_stale": 0, "rotation": 2}
    covered = np.concatenate([policy.rotation_slice(s) for s in range(5)])
    assert sorted(covered.tolist()) == list(range(10))


def test_rotation_bounds_the_lag_by_the_cycle_length():
    index, enc = _built()
    T = 7
    policy = RefreshPolicy(index, RefreshConfig(budget_per_step=0, full_refresh_every=T, probe_every=0))
    lags = []
    for step in range(1, 3 * T):
        stats = policy.step(step, enc.at(step), [], [], current_version=step)
        lags.append(stats["staleness_max"])
        assert stats["refreshed"] == len(policy.rotation_slice(step)) == stats["rotation"]
        assert stats["graph_rebuilt"] == ((step + 1) % T == 0)
    assert max(lags[T - 1:]) == T - 1


def test_step_refreshes_the_used_docs_and_probes_fidelity():
    index, enc = _built()
    policy = RefreshPolicy(index, RefreshConfig(budget_per_step=10, full_refresh_every=0, probe_every=2, probe_size=8))
    queries = _queries(enc, 3)
    stats = policy.step(2, enc.at(3), ["d1", "d2"], [], current_version=3, probe_query_vectors=queries)
    assert index.version_of(["d1", "d2"]).tolist() == [3, 3]
    assert stats["refreshed"] == 10 and stats["used"] == 2 and stats["neighbours"] == 8
    assert stats["staleness_max"] == 3 and stats["staleness_mean"] == pytest.approx(3 * (N - 10) / N)
    assert 0 < stats["fidelity"] < 1
    assert policy.step(3, enc.at(3), [], [], current_version=3, probe_query_vectors=queries)["fidelity"] is None


def test_align_stale_carries_a_shared_drift_to_the_vectors_not_re_encoded():
    """When the whole space moves by one linear map, the documents re-encoded this step teach it to the rest: every
    stale vector gets closer to its fresh encoding, keeps its version, and stays unit-norm."""
    rng = np.random.default_rng(3)
    base = _normalise(rng.normal(size=(N, DIM)))
    turn = np.eye(DIM) + 0.6 * rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)  # the policy update, shared by every document
    fresh = _normalise(base @ turn)
    texts = {f"d{i}": str(i) for i in range(N)}

    def encode(batch):
        return fresh[[int(t) for t in batch]]

    def closeness(index):  # mean cosine of the stored vectors to the fresh ones, over the stale documents
        stale = [d for d, v in zip(index.doc_ids, index.versions) if v == 0]
        return float(np.mean(np.sum(index.vectors(stale) * fresh[[int(d[1:]) for d in stale]], axis=1))), stale

    runs = {}
    for align in (False, True):
        index = DocumentIndex()
        index.build_from_vectors(list(texts), base, version=0, texts=texts)
        policy = RefreshPolicy(index, RefreshConfig(budget_per_step=3 * DIM, graph_k=2, neighbours_per_doc=0,
                                                    full_refresh_every=0, probe_every=0, align_stale=align))
        stats = policy.step(0, encode, [f"d{i}" for i in range(3 * DIM)], [], current_version=1)
        runs[align] = (closeness(index), stats, index)
    (plain, stale), plain_stats, _ = runs[False]
    (aligned, stale_aligned), stats, index = runs[True]
    assert stale == stale_aligned and len(stale) == N - 3 * DIM
    assert stats["aligned"] == len(stale) and plain_stats["aligned"] == 0
    assert plain < 0.9 and aligned > 0.99  # the shared map is learned from 48 pairs and applied to 152 others
    assert set(index.version_of(stale).tolist()) == {0}
    assert np.allclose(np.linalg.norm(index.vectors(stale), axis=1), 1, atol=1e-5)
    assert np.array_equal(index.vectors(["d0"]), fresh[[0]])  # re-encoded documents keep their fresh vectors


def test_the_correction_is_skipped_when_it_would_not_predict_a_left_out_document():
    """Pairs whose change is noise unrelated to the old vectors teach nothing: no λ beats leaving them alone."""
    from searchr3.index.refresh import fit_correction

    rng = np.random.default_rng(4)
    before = _normalise(rng.normal(size=(40, DIM)))
    d, ridge, loo = fit_correction(before, _normalise(rng.normal(size=(40, DIM))))
    assert d is None and ridge is None and loo == 1.0
    turn = np.eye(DIM) + 0.3 * rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    d, ridge, loo = fit_correction(before, _normalise(before @ turn))
    assert d is not None and d.shape == (DIM, DIM) and loo < 0.1


def test_policy_rejects_inconsistent_config():
    index, _ = _built()
    with pytest.raises(ValueError, match="neighbours_per_doc"):
        RefreshPolicy(index, RefreshConfig(graph_k=2, neighbours_per_doc=3))


def test_index_section_maps_onto_nested_dataclasses():
    cfg = section({"index": {"kind": "ivf", "refresh": {"budget_per_step": 9}}}, "index", IndexConfig)
    assert cfg.kind == "ivf" and cfg.refresh.budget_per_step == 9 and cfg.refresh.graph_k == 8
    with pytest.raises(ConfigError, match="budget"):
        section({"index": {"refresh": {"budget": 9}}}, "index", IndexConfig)


# ---- fidelity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_fidelity_is_one_when_fresh_and_drops_after_drift(kind):
    index, enc = _built(kind)
    assert fidelity(index, enc.at(0), _queries(enc, 0)) == 1.0
    drifted_queries = _queries(enc, 2)
    drifted = fidelity(index, enc.at(2), drifted_queries)
    assert drifted < 1.0
    fresh_vectors = enc.at(2)(_texts())
    assert fidelity(index, fresh_vectors, drifted_queries) == drifted  # vectors or encode_fn: same figure
    refresh(index, _ids(), enc.at(2), version=2)
    assert fidelity(index, enc.at(2), drifted_queries) == 1.0


# ---- snapshots ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_snapshot_round_trip_gives_identical_search(tmp_path, kind):
    index, enc = _built(kind)
    refresh(index, ["d4", "d9"], enc.at(2), version=2)
    out = save_snapshot(index, tmp_path / "idx", {"model_checksum": "abc123", "corpus": "fake"})
    loaded = load_snapshot(out)
    queries = _queries(enc, 2)
    scores_a, ids_a = index.search(queries, 10)
    scores_b, ids_b = loaded.search(queries, 10)
    assert ids_a == ids_b
    np.testing.assert_array_equal(scores_a, scores_b)
    assert loaded.versions.tolist() == index.versions.tolist() and loaded.doc_ids == index.doc_ids
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["model_checksum"], manifest["corpus"], manifest["dim"], manifest["count"]) == ("abc123", "fake", DIM, N)
    assert (manifest["version_min"], manifest["version_max"], manifest["kind"]) == (0, 2, kind)
    with pytest.raises(KeyError, match="no text stored"):
        refresh(loaded, ["d4"], enc.at(3), version=3)
    refreshable = load_snapshot(out, texts=dict(zip(_ids(), _texts())))
    refresh(refreshable, ["d4"], enc.at(3), version=3)
    np.testing.assert_allclose(refreshable.vectors(["d4", "d9"]), enc.at(3)(["4"]).tolist() + enc.at(2)(["9"]).tolist(),
                               atol=1e-6)


def test_snapshot_overwrites_atomically_and_leaves_no_temp_dirs(tmp_path):
    index, enc = _built()
    save_snapshot(index, tmp_path / "idx", {"model_checksum": "v0"})
    refresh(index, _ids(), enc.at(1), version=1)
    save_snapshot(index, tmp_path / "idx", {"model_checksum": "v1"})
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
    assert load_snapshot(tmp_path / "idx").versions.max() == 1


def test_snapshot_refuses_a_missing_checksum_and_writes_nothing(tmp_path):
    index, _ = _built()
    with pytest.raises(ValueError, match="model_checksum"):
        save_snapshot(index, tmp_path / "idx", {})
    assert list(tmp_path.iterdir()) == []


def test_a_snapshot_manifest_that_is_not_utf8_or_not_an_object_is_one_line(tmp_path):
    index, _ = _built()
    out = save_snapshot(index, tmp_path / "idx", {"model_checksum": "abc"})
    (out / "manifest.json").write_bytes(b'{"kind": "fl\xffat"}')
    with pytest.raises(DataError, match=r"manifest.json: invalid-json: not UTF-8"):
        load_snapshot(out)
    (out / "manifest.json").write_text('["kind", "dim", "count", "model_checksum"]')
    with pytest.raises(DataError, match=r"manifest.json: invalid-json: the manifest is not a JSON object"):
        load_snapshot(out)


def test_load_snapshot_reports_bad_files(tmp_path):
    index, _ = _built()
    out = save_snapshot(index, tmp_path / "idx", {"model_checksum": "abc"})
    (out / "manifest.json").write_text('{\n"kind": "flat",\n oops\n}')
    with pytest.raises(DataError, match=r"manifest.json:3: invalid-json"):
        load_snapshot(out)
    out = save_snapshot(index, tmp_path / "idx", {"model_checksum": "abc"})
    (out / "doc_ids.json").write_text(json.dumps(_ids()[:-1]))
    with pytest.raises(DataError, match=r"doc_ids.json: size_mismatch"):
        load_snapshot(out)
    _reseal(out)  # a consistent manifest over inconsistent files: the structural checks still refuse it
    with pytest.raises(DataError, match=r"snapshot-count-mismatch: manifest count=200, index vectors=200, doc ids=199"):
        load_snapshot(out)
    (out / "versions.npy").unlink()
    with pytest.raises(DataError, match=r"versions.npy: snapshot-missing-file"):
        load_snapshot(out)


def _reseal(out):
    from searchr3.integrity import seal

    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(seal(out, manifest)))


def _flip(path, offset: int, n: int = 1):
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["index.faiss", "doc_ids.json", "versions.npy"])
def test_a_flipped_byte_in_any_snapshot_file_is_refused_naming_it(tmp_path, name, monkeypatch):
    monkeypatch.setenv("SEARCHR3_CACHE_DIR", str(tmp_path / "cache"))
    index, _ = _built()
    out = save_snapshot(index, tmp_path / "idx", {"model_checksum": "abc"})
    load_snapshot(out)  # verified once: the cache now holds its hashes
    path = out / name
    _flip(path, path.stat().st_size // 2)  # same size, same folder: only the sha256 tells
    with pytest.raises(DataError, match=rf"idx/{name}: checksum_mismatch") as err:
        load_snapshot(out)
    assert err.value.exit_code == 4


def test_verified_hashes_are_cached_by_size_and_times(tmp_path, monkeypatch):
    import searchr3.integrity as integrity

    monkeypatch.setenv("SEARCHR3_CACHE_DIR", str(tmp_path / "cache"))
    index, _ = _built()
    out = save_snapshot(index, tmp_path / "idx", {"model_checksum": "abc"})
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    load_snapshot(out)
    assert sorted(hashed) == ["doc_ids.json", "index.faiss", "versions.npy"]
    hashed.clear()
    load_snapshot(out)
    assert hashed == []  # the fast path: nothing changed since it was verified
    (out / "versions.npy").write_bytes((out / "versions.npy").read_bytes())  # rewritten: same bytes, new ctime
    load_snapshot(out)
    assert hashed == ["versions.npy"]


def test_an_unsealed_snapshot_is_refused(tmp_path):
    index, _ = _built()
    out = save_snapshot(index, tmp_path / "idx", {"model_checksum": "abc"})
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="unsealed_artifact"):
        load_snapshot(out)


def test_vectors_that_are_not_unit_norm_are_refused_at_load(tmp_path):
    index = DocumentIndex("flat")
    index.build_from_vectors(["a", "b"], np.array([[1.0, 0.0], [3.0, 4.0]], dtype=np.float32), version=0)
    with pytest.raises(ValueError, match="outside"):
        index.search(np.array([[0.6, 0.8]], dtype=np.float32), 2)  # 5.0: refused, never returned
    out = save_snapshot(index, tmp_path / "idx", {"model_checksum": "abc"})
    with pytest.raises(DataError, match=r"vector_not_normalised: 1 stored vector\(s\).*'b', norm 5"):
        load_snapshot(out)
