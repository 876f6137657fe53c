"""``evaluate:`` section of params.yaml: what the evaluate stage scores, and how.

The BM25 baseline's settings are the ``bm25:`` section (``searchr3.data.bm25.Bm25Config``), shared
with negative mining.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvaluateConfig:
    # what is scored (the evaluate stage)
    # a name ending in +bm25 is that dense system fused with BM25 (reciprocal-rank fusion): "rl+bm25"
    # "base" (the untrained model + token) is left out by default: about 5 min of the CPU run for a row that does not
    # change; add it with --set evaluate.systems=... or score it alone: searchr3 evaluate --model models/base
    systems: list[str] = field(default_factory=lambda: ["bm25", "minilm", "sft", "rl", "rl+bm25"])
    reasoning: list[str] = field(default_factory=lambda: ["sft", "rl"])  # also scored with reasoning (+reasoning)
    sets: list[str] | None = field(default_factory=lambda: ["codesearch-dev", "codesearch-test"])  # data/eval/<name>; null: all
    max_queries: int | None = None  # per set; null: all judged queries
    # documents are cut at the same number of tokens (each system's own tokenizer) by every dense system, ours and
    # MiniLM alike; BM25 reads whole texts. The first cap is the headline one (rows named by system, the promotion
    # gate's); each further cap adds rows "<system>@<cap>" (e.g. "rl@512")
    doc_caps: list[int] = field(default_factory=lambda: [256])
    gate_set: str | None = "codesearch-dev"  # set whose nDCG@10 the promotion gate reads (a dev set: test is reported,
    #                                          never chosen on); null: the first *-dev set, else the first *-test set
    # how it is scored (the stage and `searchr3 evaluate`)
    top_k: int = 100  # documents retrieved per query (recall@100 needs at least 100)
    cache_dir: str = "cache/embeddings"  # document embeddings cached here, keyed by model checksum + corpus
    minilm_batch_size: int = 32  # texts per forward pass for the all-MiniLM-L6-v2 baseline
    rrf_k: int = 60  # reciprocal-rank fusion constant of the hybrid (BM25 + dense): score = sum 1 / (rrf_k + rank)
