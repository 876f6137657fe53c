"""The one in-memory shape every loader returns and every evaluator consumes."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class RetrievalSet:
    """A corpus, its queries and their relevance judgements (BEIR semantics).

    corpus:  doc_id -> document text (title and body already joined by the loader)
    queries: query_id -> query text (only queries that have judgements, for evaluation sets)
    qrels:   query_id -> {doc_id: relevance (int, >0 means relevant)}
    """

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    meta: dict = field(default_factory=dict)

    def judged_queries(self) -> dict[str, str]:
        """Queries that have at least one relevant document."""
        return {q: t for q, t in self.queries.items() if any(r > 0 for r in self.qrels.get(q, {}).values())}


@dataclass
class RawSplit:
    """One split of an input dataset as its files hold it, before any rule is applied.

    Each format (BEIR folder, HF dataset, NQ-open file) describes a split this way; the strict
    loader (:func:`searchr3.data.beir.load_split`) and the validator
    (:func:`searchr3.validate.frames.split_frames`) both read it and apply the same rules
    (:mod:`searchr3.data.rules`). The callables read the files when called.

    corpus / queries: ``() -> iterable of (line, {"_id", "text"[, "title"]})``
    judgements:       ``() -> iterable of (line, query_id, doc_id, score as written)``
    other_splits:     ``() -> {split: query ids judged there}`` (the ``shared_query`` check)
    ``*_where``: how errors name the file (a path, or ``PATH[config/split]`` for HF datasets).
    field_names:      ``{"corpus"|"queries": {"text": "question", ...}}``: what the file calls a field
    """

    name: str
    split: str
    corpus: Callable[[], Iterable[tuple[int, dict]]]
    queries: Callable[[], Iterable[tuple[int, dict]]]
    judgements: Callable[[], Iterable[tuple[int, str, str, object]]]
    corpus_where: str
    queries_where: str
    qrels_where: str
    other_splits: Callable[[], dict[str, set[str]]] = dict
    field_names: dict[str, dict[str, str]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
