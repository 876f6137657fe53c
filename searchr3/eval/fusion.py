"""Reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009): the hybrid of BM25 and a dense model.

A document's fused score is ``sum over rankings of 1 / (k + rank)`` (rank 1-based; a ranking that
does not hold the document adds nothing). Only ranks count, so scores on different scales (BM25,
cosine) combine without calibration; ``k`` = 60 is the paper's constant and damps the top ranks.
Ties in the fused score keep the order in which documents were first seen (earlier rankings first).
"""
from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60


def rrf(rankings: Sequence[Sequence[str]], k: int = RRF_K, depth: int | None = None) -> list[tuple[str, float]]:
    """Fuse ranked lists of doc ids into ``[(doc_id, score), ...]``, best first (``depth``: keep that many)."""
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    fused = sorted(scores.items(), key=lambda item: -item[1])  # stable: first-seen order breaks ties
    return fused[:depth] if depth is not None else fused


def rrf_runs(runs: Sequence[dict[str, dict[str, float]]], k: int = RRF_K,
             depth: int | None = None) -> dict[str, dict[str, float]]:
    """Fuse evaluation runs (query_id -> {doc_id: score}); each run is ranked by its own scores first."""
    query_ids: dict[str, None] = {}
    for run in runs:
        query_ids.update(dict.fromkeys(run))
    out = {}
    for qid in query_ids:
        rankings = [sorted(run.get(qid, {}), key=lambda d, r=run.get(qid, {}): -r[d]) for run in runs]
        out[qid] = dict(rrf(rankings, k, depth))
    return out
