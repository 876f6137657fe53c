"""BM25 baseline (bm25s, Lucene scoring, Snowball stemming, English stopwords)."""
from __future__ import annotations

import bm25s
import Stemmer

from searchr3.data.types import RetrievalSet
from searchr3.eval.config import Bm25Config


def _tokenize(texts: list[str], config: Bm25Config, stemmer, progress: bool) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords=config.stopwords, stemmer=stemmer,
                          return_ids=False, show_progress=progress)


def bm25_search(rs: RetrievalSet, k: int = 100, config: Bm25Config | None = None,
                progress: bool = False) -> dict[str, dict[str, float]]:
    """Index ``rs.corpus`` and return the top-``k`` documents of every query in ``rs.queries``.

    Returns a run: query_id -> {doc_id: BM25 score}. Documents sharing no term with the query
    (score 0) are left out, so a query with no known term maps to an empty ranking.
    """
    config = config or Bm25Config()
    if not rs.corpus:
        raise ValueError(f"{rs.name}: the corpus is empty")
    stemmer = Stemmer.Stemmer(config.stemmer) if config.stemmer else None
    doc_ids = list(rs.corpus)
    retriever = bm25s.BM25(method=config.method, k1=config.k1, b=config.b)
    retriever.index(_tokenize([rs.corpus[d] for d in doc_ids], config, stemmer, progress), show_progress=progress)

    query_ids = list(rs.queries)
    query_tokens = _tokenize([rs.queries[q] for q in query_ids], config, stemmer, progress)
    run: dict[str, dict[str, float]] = {q: {} for q in query_ids}
    # bm25s cannot score a query whose terms are all unknown to the corpus: those stay empty
    known = [(q, [t for t in toks if t in retriever.vocab_dict]) for q, toks in zip(query_ids, query_tokens)]
    known = [(q, toks) for q, toks in known if toks]
    if not known:
        return run
    indices, scores = retriever.retrieve([toks for _, toks in known], k=min(k, len(doc_ids)),
                                         show_progress=progress)
    for (qid, _), row_idx, row_scores in zip(known, indices, scores):
        run[qid] = {doc_ids[i]: float(s) for i, s in zip(row_idx, row_scores) if s > 0}
    return run
