"""BM25 baseline: ``searchr3.data.bm25.Bm25Index`` over an evaluation corpus (config: the ``bm25:`` section).

:func:`bm25_rank` ranks queries against an index built once (the search service keeps one per release);
:func:`bm25_search` builds one over a RetrievalSet and ranks all its queries (evaluation).
"""
from __future__ import annotations

from collections.abc import Sequence

from searchr3.data.bm25 import Bm25Config, Bm25Index
from searchr3.data.types import RetrievalSet


def bm25_rank(bm25: Bm25Index, doc_ids: Sequence[str], queries: Sequence[str], k: int = 100,
              progress: bool = False) -> list[list[tuple[str, float]]]:
    """``[(doc_id, score), ...]`` best first per query; ``doc_ids[i]`` is the i-th text ``bm25`` indexed.

    Documents sharing no term with a query (score 0) are left out, so a query with no known term gets an
    empty ranking. Ranking does not modify the index: one index may serve many threads.
    """
    out: list[list[tuple[str, float]]] = [[] for _ in queries]
    tokens = bm25.tokenize(list(queries), progress) if queries else []
    # bm25s cannot score a query whose terms are all unknown to the corpus: those stay empty
    known = [(i, kept) for i, toks in enumerate(tokens) if (kept := bm25.known(toks))]
    if not known:
        return out
    indices, scores = bm25.retrieve([toks for _, toks in known], k=k, progress=progress)
    for (i, _), row_idx, row_scores in zip(known, indices, scores):
        out[i] = [(doc_ids[j], float(s)) for j, s in zip(row_idx, row_scores) if s > 0]
    return out


def bm25_search(rs: RetrievalSet, k: int = 100, config: Bm25Config | None = None,
                progress: bool = False) -> dict[str, dict[str, float]]:
    """Index ``rs.corpus`` and return the top-``k`` documents of every query in ``rs.queries``.

    Returns a run: query_id -> {doc_id: BM25 score}. Documents sharing no term with the query
    (score 0) are left out, so a query with no known term maps to an empty ranking.
    """
    if not rs.corpus:
        raise ValueError(f"{rs.name}: the corpus is empty")
    doc_ids = list(rs.corpus)
    bm25 = Bm25Index([rs.corpus[d] for d in doc_ids], config, progress=progress)

    query_ids = list(rs.queries)
    rankings = bm25_rank(bm25, doc_ids, [rs.queries[q] for q in query_ids], k, progress)
    return {qid: dict(ranking) for qid, ranking in zip(query_ids, rankings)}
