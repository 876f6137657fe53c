"""compute_metrics / per_query_metrics against values worked out by hand."""
from math import log2

import pytest

from searchr3.eval.metrics import compute_metrics, per_query_metrics


def ranking(*doc_ids: str) -> dict[str, float]:
    """A run row whose scores put the documents in the given order."""
    return {d: float(len(doc_ids) - i) for i, d in enumerate(doc_ids)}


QRELS = {
    "q1": {"d1": 2, "d3": 1},  # graded: d1 is twice as relevant as d3
    "q2": {"d5": 1},
    "q3": {"d9": 1},  # absent from the run: counts as zero
    "q4": {"r1": 1, "r2": 1},  # one relevant doc just below each cutoff
}
FILLER = [f"n{i}" for i in range(99)]
RUN = {
    "q1": ranking("d2", "d1", "d4", "d3"),  # d1 at rank 2, d3 at rank 4
    "q2": ranking("d6", "d7", "d5"),  # d5 at rank 3
    "q4": ranking(*FILLER[:10], "r1", *FILLER[10:], "r2"),  # r1 at rank 11, r2 at rank 101
}

# q1: DCG = 2/log2(2+1) + 1/log2(4+1); ideal = 2/log2(1+1) + 1/log2(2+1)
Q1_NDCG = (2 / log2(3) + 1 / log2(5)) / (2 / log2(2) + 1 / log2(3))
Q2_NDCG = (1 / log2(4)) / (1 / log2(2))
EXPECTED_PER_QUERY = {
    "q1": {"ndcg@10": Q1_NDCG, "recall@100": 1.0, "mrr@10": 1 / 2},
    "q2": {"ndcg@10": Q2_NDCG, "recall@100": 1.0, "mrr@10": 1 / 3},
    "q3": {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0},
    # r1 is past rank 10 (no nDCG@10, no RR@10); r2 is past rank 100 (half the relevant docs found)
    "q4": {"ndcg@10": 0.0, "recall@100": 0.5, "mrr@10": 0.0},
}


def test_toy_ranking_hand_computed():
    assert len(RUN["q4"]) == 101
    got = compute_metrics(QRELS, RUN)
    assert set(got) == {"ndcg@10", "recall@100", "mrr@10"}
    assert got["ndcg@10"] == pytest.approx((Q1_NDCG + Q2_NDCG + 0 + 0) / 4)
    assert got["recall@100"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert got["mrr@10"] == pytest.approx((1 / 2 + 1 / 3 + 0 + 0) / 4)


def test_per_query_values():
    got = per_query_metrics(QRELS, RUN)
    assert set(got) == set(EXPECTED_PER_QUERY)
    for qid, expected in EXPECTED_PER_QUERY.items():
        assert got[qid] == pytest.approx(expected), qid


def test_perfect_ranking_scores_one():
    got = compute_metrics({"q": {"a": 1, "b": 1}}, {"q": ranking("a", "b", "c")})
    assert got == pytest.approx({"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0})


def test_qrels_without_relevant_documents_rejected():
    with pytest.raises(ValueError, match="no relevant document"):
        compute_metrics({"q": {"a": 0}}, {"q": ranking("a")})
