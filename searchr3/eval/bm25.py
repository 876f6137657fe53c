"""BM25 baseline: ``searchr3.data.bm25.Bm25Index`` over an evaluation corpus (config: the ``bm25:`` section)."""
from __future__ import annotations

from searchr3.data.bm25 import Bm25Config, Bm25Index
from searchr3.data.types import RetrievalSet


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
    query_tokens = bm25.tokenize([rs.queries[q] for q in query_ids], progress)
    run: dict[str, dict[str, float]] = {q: {} for q in query_ids}
    # bm25s cannot score a query whose terms are all unknown to the corpus: those stay empty
    known = [(q, toks) for q, toks in ((q, bm25.known(toks)) for q, toks in zip(query_ids, query_tokens)) if toks]
    if not known:
        return run
    indices, scores = bm25.retrieve([toks for _, toks in known], k=k, progress=progress)
    for (qid, _), row_idx, row_scores in zip(known, indices, scores):
        run[qid] = {doc_ids[i]: float(s) for i, s in zip(row_idx, row_scores) if s > 0}
    return run
