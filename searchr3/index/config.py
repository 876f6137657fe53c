"""``index:`` section of params.yaml: the FAISS structure and the incremental refresh policy (RL stage)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RefreshConfig:
    """How the live index keeps up with a document encoder that is being trained (``index.refresh``).

    Each RL step re-encodes, in priority order and at most ``budget_per_step`` documents in all:
    the positives and negatives the step just used, then their kNN-graph neighbours, then stale
    vectors that appeared in the current queries' top ``topk_stale``. On top of that budget the
    rotating full refresh re-encodes a fixed slice of ``ceil(N / full_refresh_every)`` documents each
    step, so every vector is re-encoded at least once every ``full_refresh_every`` steps.
    """

    budget_per_step: int = 32  # most documents re-encoded per step by the priority tiers (not counting the rotating slice)
    graph_k: int = 8  # neighbours stored per document in the kNN graph
    neighbours_per_doc: int = 4  # graph neighbours of each used document to refresh (<= graph_k)
    full_refresh_every: int = 50  # T: re-encode a rotating slice of ceil(N/T) docs per step and rebuild the graph
    #                               every T steps, so no vector is more than T versions old; 0 = off
    probe_every: int = 6  # M: measure fidelity every M steps (costs a full re-encode; measurement only); 0 = never
    probe_size: int = 32  # probe queries used for fidelity
    topk_stale: int = 10  # how deep into each current query's results to look for stale vectors
    align_stale: bool = False  # after each refresh, move every stale vector through the linear correction that takes
    #                            the re-encoded documents' old vectors to their new ones (refresh.fit_correction)


@dataclass
class IndexConfig:
    kind: str = "flat"  # flat = exact IndexIDMap2(IndexFlatIP) | ivf = IndexIVFFlat (inner product) trained on the first
    #                     build | hnsw = IndexHNSWFlat (serving; an update rebuilds it) | auto = by corpus size (store.auto_kind)
    nlist: int = 1024  # ivf: number of clusters (needs at least nlist documents at build time); auto: 4 sqrt(n)
    nprobe: int = 16  # ivf: clusters visited per query
    hnsw_m: int = 32  # hnsw: graph neighbours per vector (memory ~ n * (4 d + 8 m) bytes)
    ef_construction: int = 200  # hnsw: candidate list while building (higher: better graph, slower build)
    ef_search: int = 128  # hnsw: candidate list per query (higher: better recall, slower queries; >= k)
    encode_batch: int = 64  # texts handed to the encoder per call while building or refreshing
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
