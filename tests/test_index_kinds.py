"""index.kind flat / ivf / hnsw / auto (searchr3/index/store.py): recall@10 of the approximate structures against
exact search on clustered synthetic unit vectors, the size rule of ``auto``, HNSW's update (a rebuild: FAISS cannot
remove from a graph) and its snapshot round trip."""
from __future__ import annotations

import numpy as np
import pytest

from searchr3.config import from_dict
from searchr3.index import store
from searchr3.index.config import IndexConfig
from searchr3.index.snapshot import load_snapshot, save_snapshot
from searchr3.index.store import DocumentIndex, auto_kind, auto_nlist


def clustered(n: int, dim: int = 32, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (real embeddings cluster; uniform noise has no structure)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(index: DocumentIndex, exact: DocumentIndex, queries: np.ndarray) -> float:
    _, got = index.search(queries, 10)
    _, want = exact.search(queries, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)]))


def built(kind: str, vectors: np.ndarray, **kw) -> DocumentIndex:
    index = DocumentIndex(kind, **kw)
    index.build_from_vectors([f"d{i}" for i in range(len(vectors))], vectors, version=0)
    return index


@pytest.fixture(scope="module")
def data():
    docs, queries = clustered(4000), clustered(200, seed=1)
    return docs, queries, built("flat", docs)


@pytest.mark.parametrize("kind, kw, floor", [("hnsw", {}, 0.97), ("ivf", {"nlist": 64, "nprobe": 8}, 0.9)])
def test_approximate_kinds_recall_against_flat(data, kind, kw, floor):
    docs, queries, exact = data
    value = recall_at_10(built(kind, docs, **kw), exact, queries)
    assert value >= floor, f"{kind} recall@10 {value:.3f} < {floor}"


def test_recall_falls_when_the_search_is_made_too_narrow(data):
    """The measurement can fail: an HNSW that looks at 10 candidates and an IVF that probes 1 of 64 lists lose recall."""
    docs, queries, exact = data
    narrow_ivf = recall_at_10(built("ivf", docs, nlist=64, nprobe=1), exact, queries)
    assert narrow_ivf < recall_at_10(built("ivf", docs, nlist=64, nprobe=8), exact, queries)
    assert narrow_ivf < 0.9


def test_auto_picks_by_corpus_size(monkeypatch):
    assert (auto_kind(10_000), auto_kind(100_000), auto_kind(100_001), auto_kind(2_000_001)) == \
        ("flat", "flat", "ivf", "hnsw")
    assert auto_nlist(1_000_000) == 4000 and auto_nlist(10_000) == 256 and auto_nlist(1) == 1
    docs = clustered(1000)
    assert built("auto", docs).kind == "flat"
    monkeypatch.setattr(store, "AUTO_FLAT_MAX", 500)
    ivf = built("auto", docs)
    assert ivf.kind == "ivf" and ivf.nlist == auto_nlist(1000)
    monkeypatch.setattr(store, "AUTO_IVF_MAX", 800)
    assert built("auto", docs).kind == "hnsw"


def test_hnsw_update_rebuilds_with_the_new_vectors_and_adds_new_ids(data):
    docs, _, _ = data
    index = built("hnsw", docs[:500])
    moved = clustered(3, seed=7)
    index.update(["d3", "d10", "new"], moved, version=2)
    assert len(index) == 501 and index.doc_ids[-1] == "new"
    np.testing.assert_allclose(index.vectors(["d3", "d10", "new"]), moved, atol=1e-6)
    np.testing.assert_allclose(index.vectors(["d4"]), docs[4:5], atol=1e-6)
    assert index.version_of(["d3", "new", "d4"]).tolist() == [2, 2, 0]
    _, top = index.search(moved, 1)
    assert [t[0] for t in top] == ["d3", "d10", "new"]


def test_hnsw_snapshot_round_trip_searches_the_same(tmp_path, data):
    docs, queries, _ = data
    index = built("hnsw", docs[:800], hnsw_m=16, ef_search=64)
    save_snapshot(index, tmp_path / "snap", {"model_checksum": "m"})
    loaded = load_snapshot(tmp_path / "snap")
    assert (loaded.kind, loaded.hnsw_m, loaded.ef_search) == ("hnsw", 16, 64)
    a, b = index.search(queries, 10), loaded.search(queries, 10)
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[0], b[0])


def test_the_config_accepts_the_kinds_and_the_index_refuses_others():
    cfg = from_dict(IndexConfig, {"kind": "hnsw", "ef_search": 64})
    assert DocumentIndex.from_config(cfg).ef_search == 64
    with pytest.raises(ValueError, match="kind"):
        DocumentIndex("annoy")
    with pytest.raises(ValueError, match="hnsw_m"):
        DocumentIndex("hnsw", hnsw_m=1)
