"""The one in-memory shape every loader returns and every evaluator consumes."""
from __future__ import annotations

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
