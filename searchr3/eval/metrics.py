"""Retrieval metrics, computed by ir-measures (trec_eval semantics), never by hand.

``qrels``: query_id -> {doc_id: relevance}; ``run``: query_id -> {doc_id: score}, higher is better.
Every judged query in ``qrels`` counts: a query missing from the run scores 0 on every metric.
nDCG uses linear gains (the relevance value) and a log2(rank + 1) discount, as trec_eval does.
"""
from __future__ import annotations

import ir_measures
from ir_measures import RR, R, nDCG

MEASURES = {"ndcg@10": nDCG @ 10, "recall@100": R @ 100, "mrr@10": RR @ 10}


def _check(qrels: dict[str, dict[str, int]]) -> None:
    if not any(rel > 0 for docs in qrels.values() for rel in docs.values()):
        raise ValueError("qrels hold no relevant document: there is nothing to evaluate")


def compute_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the judged queries."""
    _check(qrels)
    scores = ir_measures.calc_aggregate(list(MEASURES.values()), qrels, run)
    return {name: float(scores[measure]) for name, measure in MEASURES.items()}


def per_query_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The same three metrics for each judged query: query_id -> {metric name: value}."""
    _check(qrels)
    names = {measure: name for name, measure in MEASURES.items()}
    out: dict[str, dict[str, float]] = {}
    for row in ir_measures.iter_calc(list(MEASURES.values()), qrels, run):
        out.setdefault(row.query_id, {})[names[row.measure]] = float(row.value)
    return out
