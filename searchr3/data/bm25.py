"""BM25 over a list of texts (bm25s, Lucene scoring, Snowball stemming, English stopwords): the one builder.

Both uses go through :class:`Bm25Index`: hard-negative mining in the data stage
(``searchr3.data.mining.mine_bm25``) and the ``bm25`` baseline of the evaluate stage
(``searchr3.eval.bm25.bm25_search``). Both read the same ``bm25:`` section of params.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Bm25Config:
    """``bm25:`` section of params.yaml. The defaults reproduce Lucene/Anserini scoring on BEIR."""

    method: str = "lucene"  # bm25s scoring variant: lucene | robertson | atire | bm25l | bm25+
    k1: float = 1.2  # term-frequency saturation
    b: float = 0.75  # document-length normalisation
    stemmer: str | None = "english"  # PyStemmer (Snowball) language; null disables stemming
    stopwords: str | None = "en"  # bm25s stopword list; null keeps every word


class Bm25Index:
    """``texts`` tokenised and indexed once; then query tokens are scored against every text."""

    def __init__(self, texts: list[str], config: Bm25Config | None = None, progress: bool = False):
        import bm25s
        import Stemmer

        self.config = config or Bm25Config()
        self.size = len(texts)
        self._stemmer = Stemmer.Stemmer(self.config.stemmer) if self.config.stemmer else None
        self.retriever = bm25s.BM25(method=self.config.method, k1=self.config.k1, b=self.config.b)
        self.retriever.index(self.tokenize(texts, progress), show_progress=progress)

    def tokenize(self, texts: list[str], progress: bool = False) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(texts, stopwords=self.config.stopwords, stemmer=self._stemmer, return_ids=False,
                              show_progress=progress)

    def known(self, tokens: list[str]) -> list[str]:
        """The tokens the indexed texts contain (bm25s cannot score a query made only of unknown ones)."""
        return [t for t in tokens if t in self.retriever.vocab_dict]

    def scores(self, tokens: list[str]) -> np.ndarray:
        """Score of every indexed text for one query's tokens (all zeros when none is known)."""
        known = self.known(tokens)
        return self.retriever.get_scores(known) if known else np.zeros(self.size, dtype=np.float32)

    def retrieve(self, queries: list[list[str]], k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)`` of the top ``k`` texts per query; every query must hold a known token."""
        return self.retriever.retrieve(queries, k=min(k, self.size), show_progress=progress)
