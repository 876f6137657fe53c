"""Hard-negative mining with false-negative filtering, lexical (BM25) or dense (the embedder).

For every training query (one row per query):

1. the positive is its highest-graded judged document (ties: smallest doc id);
2. the retriever ranks the corpus; known positives of the query (any judged relevance > 0) are
   skipped (BM25 also stops at documents sharing no term with the query, score 0);
3. **false-negative filter**: a document scoring ``>= false_negative_ratio * positive_score`` is
   dropped, being as close to the query as the answer itself (likely an unjudged positive),
   and counted in ``MiningStats.dropped_by_filter``. The filter needs a positive that the
   retriever scores above zero; queries whose positive scores ``<= 0`` are not filtered and
   are counted in ``MiningStats.unfiltered_queries``. ``false_negative_ratio=None``: no filter;
4. the first ``k`` documents that survive are the candidates: the hardest negatives below the
   threshold (filtering happens *before* the cut, so a query whose positive ranks low still
   gets candidates);
5. if ``num_negatives`` is set, that many candidates are drawn, seeded per query (a row does
   not depend on the other queries), and kept in rank order.

Ties in score are broken by corpus order, so mining is deterministic.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from searchr3.data.bm25 import Bm25Config, Bm25Index
from searchr3.data.types import RetrievalSet

Ranking = Iterator[tuple[int, float]]  # (doc index, score), best first


@dataclass
class MiningStats:
    method: str
    queries: int = 0
    candidates: int = 0  # negatives surviving the filter, before sampling num_negatives
    dropped_by_filter: int = 0  # documents ranked above the candidates and removed by the filter
    filtered_queries: int = 0  # queries that lost at least one document to the filter
    negatives: int = 0  # negatives written to rows
    queries_without_negatives: int = 0
    unfiltered_queries: int = 0  # positive scored <= 0: filter not applicable
    seconds: float = 0.0  # end to end: indexing/encoding included

    @property
    def queries_per_s(self) -> float:
        return self.queries / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "queries_per_s": round(self.queries_per_s, 2)}


@dataclass
class MiningResult:
    """``rows``: dicts with query_id, query, positive_id, positive, positive_score,
    negative_ids, negatives, negative_scores. ``stats``: counts and throughput."""

    rows: list[dict]
    stats: MiningStats


def pairs_to_set(pairs: Iterable[tuple[str, str]], name: str = "pairs") -> RetrievalSet:
    """``(query, positive)`` text pairs as a retrieval set; identical positives share one document."""
    corpus: dict[str, str] = {}
    doc_of_text: dict[str, str] = {}
    queries, qrels = {}, {}
    for i, (query, positive) in enumerate(pairs):
        doc_id = doc_of_text.setdefault(positive, f"d{len(doc_of_text)}")
        corpus[doc_id] = positive
        queries[f"q{i}"] = query
        qrels[f"q{i}"] = {doc_id: 1}
    return RetrievalSet(name=name, corpus=corpus, queries=queries, qrels=qrels)


def choose_positive(judged: dict[str, int]) -> str | None:
    relevant = [(-grade, doc) for doc, grade in judged.items() if grade > 0]
    return min(relevant)[1] if relevant else None


def _query_seed(seed: int, query_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{query_id}".encode()).digest()[:8], "big")


def top_indices(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ``m`` highest scores, best first, ties by lower index."""
    m = min(m, scores.shape[0])
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, m - 1)[:m] if m < scores.shape[0] else np.arange(scores.shape[0])
    return part[np.lexsort((part, -scores[part]))]


def rank_scores(scores: np.ndarray, first: int) -> Ranking:
    """The whole ranking of ``scores``, computed lazily in chunks that double (``first`` to start)."""
    done = 0
    depth = max(1, first)
    while done < scores.shape[0]:
        top = top_indices(scores, depth)
        for i in top[done:]:
            yield int(i), float(scores[i])
        done = len(top)
        depth *= 2


def select_negatives(qid: str, ranking: Ranking, positives: set[int], positive_score: float, k: int,
                     ratio: float | None, num_negatives: int | None, seed: int, stats: MiningStats,
                     min_score: float | None = None) -> list[tuple[int, float]]:
    """Walk ``ranking`` and return the negatives of one query (see the module docstring)."""
    use_filter = ratio is not None and positive_score > 0
    if ratio is not None and not use_filter:
        stats.unfiltered_queries += 1
    threshold = ratio * positive_score if use_filter else None
    kept: list[tuple[int, float]] = []
    dropped = 0
    for i, s in ranking:
        if min_score is not None and s <= min_score:
            break
        if i in positives:
            continue
        if threshold is not None and s >= threshold:
            dropped += 1
            continue
        kept.append((i, s))
        if len(kept) == k:
            break
    stats.candidates += len(kept)
    stats.dropped_by_filter += dropped
    stats.filtered_queries += dropped > 0
    if num_negatives is not None and len(kept) > num_negatives:
        rng = np.random.default_rng(_query_seed(seed, qid))
        chosen = np.sort(rng.choice(len(kept), size=num_negatives, replace=False))
        kept = [kept[j] for j in chosen]
    stats.negatives += len(kept)
    stats.queries_without_negatives += not kept
    return kept


def _mine(train: RetrievalSet, doc_ids: list[str], rank_fn: Callable, k: int, ratio: float | None,
          num_negatives: int | None, seed: int, method: str, progress: bool, min_score: float | None) -> MiningResult:
    """``rank_fn(texts, n_positives)`` yields ``(ranking, score_of(doc_index))`` per query text."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if ratio is not None and not ratio > 0:
        raise ValueError(f"false_negative_ratio must be > 0 or None, got {ratio}")
    if num_negatives is not None and num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1 or None, got {num_negatives}")
    index_of = {d: i for i, d in enumerate(doc_ids)}
    stats = MiningStats(method=method)
    work = []
    for qid, text in train.queries.items():
        judged = train.qrels.get(qid, {})
        positive = choose_positive(judged)
        if positive is None or positive not in index_of:
            continue
        work.append((qid, text, positive, {index_of[d] for d, g in judged.items() if g > 0 and d in index_of}))
    start = time.perf_counter()
    rows = []
    rankings = rank_fn([text for _, text, _, _ in work], [len(p) for *_, p in work])
    for (qid, text, positive, pos_idx), (ranking, score_of) in tqdm(
            zip(work, rankings), total=len(work), desc=f"mining {method} negatives", disable=not progress):
        pos_score = float(score_of(index_of[positive]))
        kept = select_negatives(qid, ranking, pos_idx, pos_score, k, ratio, num_negatives, seed, stats, min_score)
        rows.append({
            "query_id": qid, "query": text, "positive_id": positive, "positive": train.corpus[positive],
            "positive_score": pos_score,
            "negative_ids": [doc_ids[i] for i, _ in kept], "negatives": [train.corpus[doc_ids[i]] for i, _ in kept],
            "negative_scores": [float(s) for _, s in kept],
        })
    stats.queries = len(rows)
    stats.seconds = time.perf_counter() - start
    return MiningResult(rows=rows, stats=stats)


def _as_set(train) -> RetrievalSet:
    return train if isinstance(train, RetrievalSet) else pairs_to_set(train)


def mine_bm25(train: RetrievalSet | Iterable[tuple[str, str]], k: int = 30, false_negative_ratio: float | None = 0.95,
              seed: int = 0, num_negatives: int | None = None, progress: bool = False,
              config: Bm25Config | None = None) -> MiningResult:
    """BM25 over ``train.corpus`` with :class:`searchr3.data.bm25.Bm25Index` (``config``: the ``bm25:`` section)."""
    train = _as_set(train)
    start = time.perf_counter()
    doc_ids = list(train.corpus)
    bm25 = Bm25Index([train.corpus[d] for d in doc_ids], config, progress=progress)
    index_seconds = time.perf_counter() - start

    def rank(texts: list[str], n_positives: list[int]) -> Iterator:
        for toks, n_pos in zip(bm25.tokenize(texts), n_positives):
            scores = bm25.scores(toks)
            yield rank_scores(scores, 2 * k + n_pos), (lambda i, s=scores: s[i])

    result = _mine(train, doc_ids, rank, k, false_negative_ratio, num_negatives, seed, "bm25", progress,
                   min_score=0.0)
    result.stats.seconds += index_seconds
    return result


def _faiss_ranking(index, query: np.ndarray, first: int) -> Ranking:
    """The ranking of an exact FAISS index for one query, searched deeper (doubling) on demand."""
    done = 0
    depth = max(1, first)
    while done < index.ntotal:
        depth = min(depth, index.ntotal)
        scores, indices = index.search(query[None, :], depth)
        for i, s in zip(indices[0][done:], scores[0][done:]):
            if i >= 0:
                yield int(i), float(s)
        done = depth
        depth *= 2


def mine_dense(embedder, train: RetrievalSet | Iterable[tuple[str, str]], k: int = 30,
               false_negative_ratio: float | None = 0.95, seed: int = 0, num_negatives: int | None = None,
               progress: bool = False) -> MiningResult:
    """Dense mining: cosine = inner product of the embedder's L2-normalised vectors (FAISS IndexFlatIP).

    Uses ``embedder.encode_documents(texts, progress=...)`` (an array, or an object with
    ``.vectors``) and ``embedder.encode_queries(texts).vectors``. Encoding is counted in the time.
    """
    import faiss

    train = _as_set(train)
    start = time.perf_counter()
    doc_ids = list(train.corpus)
    docs = embedder.encode_documents([train.corpus[d] for d in doc_ids], progress=progress)
    docs = np.ascontiguousarray(getattr(docs, "vectors", docs), dtype=np.float32)
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    setup_seconds = time.perf_counter() - start

    def rank(texts: list[str], n_positives: list[int]) -> Iterator:
        if not texts:
            return
        queries = np.ascontiguousarray(embedder.encode_queries(texts).vectors, dtype=np.float32)
        for q, n_pos in zip(queries, n_positives):
            yield _faiss_ranking(index, q, 2 * k + n_pos), (lambda i, q=q: float(docs[i] @ q))

    result = _mine(train, doc_ids, rank, k, false_negative_ratio, num_negatives, seed, "dense", progress,
                   min_score=None)
    result.stats.seconds += setup_seconds
    return result


def false_negative_rate(rows: list[dict], *qrels: dict[str, dict[str, int]]) -> tuple[int, int]:
    """``(negatives judged relevant to their own query in any of qrels, all negatives)``.

    Measures known false negatives against judgements, e.g. held-out ones the miner did not see.
    """
    judged_relevant = 0
    total = 0
    for row in rows:
        relevant = {d for q in qrels for d, g in q.get(row["query_id"], {}).items() if g > 0}
        total += len(row["negative_ids"])
        judged_relevant += sum(d in relevant for d in row["negative_ids"])
    return judged_relevant, total
