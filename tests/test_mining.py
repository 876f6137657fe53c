"""Hard-negative mining on toy corpora whose scores can be checked by hand."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from searchr3.data.mining import (
    false_negative_rate,
    mine_bm25,
    mine_dense,
    pairs_to_set,
    rank_scores,
    top_indices,
)
from searchr3.data.types import RetrievalSet

SHARED = Path(__file__).parents[2] / "shared" / "data"

# Every document has three tokens after stemming and stopword removal, so dl == avgdl and the
# Lucene BM25 term weight of a term seen once is idf / (1 + k1) with idf = ln(1 + (N - df + .5) / (df + .5)).
CORPUS = {
    "d0": "apple banana cherry",
    "d1": "apple banana durian",  # scores exactly like the positive d0: a likely false negative
    "d2": "apple grape lemon",
    "d3": "mango grape lemon",  # shares no term with the query
    "d4": "apple kiwi lime",
}
N, K1 = 5, 1.2


def idf(df: int) -> float:
    return math.log(1 + (N - df + 0.5) / (df + 0.5))


APPLE, BANANA = idf(4) / (1 + K1), idf(2) / (1 + K1)  # df(apple) = 4, df(banana) = 2


def toy(qrels: dict[str, int]) -> RetrievalSet:
    return RetrievalSet("toy", CORPUS, {"q": "apple banana"}, {"q": qrels})


def test_bm25_scores_and_false_negative_filter():
    result = mine_bm25(toy({"d0": 1}), k=10, false_negative_ratio=0.95)
    (row,) = result.rows
    assert row["positive_id"] == "d0"
    assert row["positive_score"] == pytest.approx(APPLE + BANANA, rel=1e-5)
    # d1 scores as much as d0 (>= 0.95 of it): dropped. d3 shares no term: never a candidate.
    assert row["negative_ids"] == ["d2", "d4"]
    assert row["negative_scores"] == pytest.approx([APPLE, APPLE], rel=1e-5)
    assert row["negatives"] == [CORPUS["d2"], CORPUS["d4"]]
    assert (result.stats.dropped_by_filter, result.stats.filtered_queries, result.stats.negatives) == (1, 1, 2)


def test_bm25_without_filter_keeps_the_close_candidate():
    result = mine_bm25(toy({"d0": 1}), k=10, false_negative_ratio=None)
    assert result.rows[0]["negative_ids"] == ["d1", "d2", "d4"]  # ties broken by corpus order
    assert result.stats.dropped_by_filter == 0


def test_ratio_threshold_is_relative_to_the_positive():
    # with ratio 0.2 the threshold is 0.2 * (APPLE + BANANA), which APPLE alone exceeds
    assert APPLE >= 0.2 * (APPLE + BANANA)
    result = mine_bm25(toy({"d0": 1}), k=10, false_negative_ratio=0.2)
    assert result.rows[0]["negative_ids"] == []
    assert (result.stats.dropped_by_filter, result.stats.queries_without_negatives) == (3, 1)


def test_known_positives_are_never_negatives():
    result = mine_bm25(toy({"d0": 1, "d1": 1, "d2": 0}), k=10, false_negative_ratio=None)
    (row,) = result.rows
    assert row["positive_id"] == "d0"
    assert row["negative_ids"] == ["d2", "d4"]  # d1 is judged relevant; d2 judged 0 is a fine negative
    assert result.stats.dropped_by_filter == 0


def test_highest_grade_is_the_positive():
    assert mine_bm25(toy({"d2": 1, "d4": 2}), k=10).rows[0]["positive_id"] == "d4"


def test_filter_is_skipped_when_the_positive_scores_zero():
    result = mine_bm25(toy({"d3": 1}), k=10, false_negative_ratio=0.95)
    assert result.rows[0]["positive_score"] == 0.0
    assert result.rows[0]["negative_ids"] == ["d0", "d1", "d2", "d4"]
    assert result.stats.unfiltered_queries == 1


def test_k_cuts_after_the_filter():
    result = mine_bm25(toy({"d0": 1}), k=1, false_negative_ratio=0.95)
    assert result.rows[0]["negative_ids"] == ["d2"]  # d1 was filtered, so k=1 still yields a negative


def test_sampling_is_seeded_and_keeps_rank_order():
    corpus = {f"d{i}": f"common word{i} " + "filler " * (i % 3) for i in range(30)}
    corpus["pos"] = "common target"
    rs = RetrievalSet("many", corpus, {"q": "common target"}, {"q": {"pos": 1}})
    full = mine_bm25(rs, k=30, false_negative_ratio=None).rows[0]["negative_ids"]
    a = mine_bm25(rs, k=30, num_negatives=5, seed=7).rows[0]["negative_ids"]
    assert a == mine_bm25(rs, k=30, num_negatives=5, seed=7).rows[0]["negative_ids"]
    assert len(a) == 5 and a == [d for d in full if d in set(a)]


def test_pairs_input():
    result = mine_bm25([("apple banana", "apple banana cherry"), ("grape", "mango grape lemon"),
                        ("kiwi", "apple kiwi lime")], k=5, false_negative_ratio=None)
    assert [r["positive"] for r in result.rows] == ["apple banana cherry", "mango grape lemon", "apple kiwi lime"]
    assert result.rows[0]["negatives"] == ["apple kiwi lime"]
    assert pairs_to_set([("a", "x"), ("b", "x")]).corpus == {"d0": "x"}


class FakeEmbedder:
    """Unit vectors at fixed angles: cosine similarities are known in advance."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def encode_documents(self, texts, progress=False):
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)

    def encode_queries(self, texts, reasoning=False, return_traces=False, progress=False):
        class Q:
            vectors = np.stack([self.vectors[t] for t in texts]).astype(np.float32)

        return Q()


def unit(deg: float) -> np.ndarray:
    return np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))])


def test_dense_mining_filters_and_excludes_positives():
    # angles from the query: pos 30°, close 29° (above the positive), a 60°, b 80°, c 120°
    vectors = {"query": unit(0), "pos": unit(30), "close": unit(29), "a": unit(60), "b": unit(80), "c": unit(120)}
    rs = RetrievalSet("dense", {t: t for t in ("pos", "close", "a", "b", "c")}, {"q": "query"}, {"q": {"pos": 1}})
    result = mine_dense(FakeEmbedder(vectors), rs, k=2, false_negative_ratio=0.95)
    (row,) = result.rows
    assert row["positive_score"] == pytest.approx(math.cos(math.radians(30)), abs=1e-6)
    assert row["negative_ids"] == ["a", "b"]
    assert row["negative_scores"] == pytest.approx([math.cos(math.radians(60)), math.cos(math.radians(80))], abs=1e-6)
    assert result.stats.dropped_by_filter == 1
    unfiltered = mine_dense(FakeEmbedder(vectors), rs, k=10, false_negative_ratio=None).rows[0]
    assert unfiltered["negative_ids"] == ["close", "a", "b", "c"]


def test_top_indices_and_lazy_ranking():
    scores = np.array([0.5, 2.0, 0.5, 3.0, 2.0])
    assert top_indices(scores, 3).tolist() == [3, 1, 4]
    assert list(rank_scores(scores, first=1)) == [(3, 3.0), (1, 2.0), (4, 2.0), (0, 0.5), (2, 0.5)]


def test_false_negative_rate():
    rows = [{"query_id": "a", "negative_ids": ["x", "y"]}, {"query_id": "b", "negative_ids": ["x"]}]
    assert false_negative_rate(rows, {"a": {"y": 1}}, {"b": {"x": 0}}) == (1, 3)


@pytest.mark.skipif(not (SHARED / "scifact").is_dir(), reason="../shared/data/scifact is absent")
def test_scifact_train_mining_never_returns_judged_documents():
    from searchr3.data.beir import load_beir

    train = load_beir(SHARED / "scifact", "train")
    result = mine_bm25(train, k=10, false_negative_ratio=0.95, num_negatives=5)
    assert result.stats.queries == 809 and result.stats.queries_without_negatives == 0
    assert false_negative_rate(result.rows, train.qrels)[0] == 0
