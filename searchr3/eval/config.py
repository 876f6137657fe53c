"""``eval:`` section of params.yaml: how baselines and trained models are evaluated."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Bm25Config:
    """BM25 as bm25s implements it; the defaults reproduce Lucene/Anserini scoring on BEIR."""

    method: str = "lucene"  # bm25s scoring variant: lucene | robertson | atire | bm25l | bm25+
    k1: float = 1.2  # term-frequency saturation
    b: float = 0.75  # document-length normalisation
    stemmer: str | None = "english"  # PyStemmer (Snowball) language; null disables stemming
    stopwords: str | None = "en"  # bm25s stopword list; null keeps every word


@dataclass
class EvalConfig:
    top_k: int = 100  # documents retrieved per query (recall@100 needs at least 100)
    cache_dir: str = "cache/embeddings"  # document embeddings cached here, keyed by model checksum + corpus
    minilm_batch_size: int = 32  # texts per forward pass for the all-MiniLM-L6-v2 baseline
    bm25: Bm25Config = field(default_factory=Bm25Config)
