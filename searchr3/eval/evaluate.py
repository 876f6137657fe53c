"""Evaluate one system (``bm25``, ``minilm`` or a trained model folder) on a RetrievalSet.

``hybrid=True`` scores a dense system fused with BM25 by reciprocal-rank fusion (``searchr3.eval.fusion``):
both retrieve ``top_k`` documents per query and the fused ranking is cut to ``top_k`` again. The evaluate
stage names such a system ``<system>+bm25`` (``rl+bm25``), as the search service's ``mode=hybrid`` is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from searchr3.data.bm25 import Bm25Config
from searchr3.data.errors import ArtifactError
from searchr3.data.types import RetrievalSet
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.metrics import compute_metrics, per_query_metrics

BASELINES = ("bm25", "minilm")
HYBRID_SUFFIX = "+bm25"  # evaluate-stage name of a dense system fused with BM25 ("rl+bm25")
RESULT_KEYS = ("dataset", "split", "system", "cap", "queries", "ndcg@10", "recall@100", "mrr@10")
CAP_SEPARATOR = "@"  # "rl@512": a system scored at a further document cap (evaluate.doc_caps[1:])
REASONING_KEYS = ("fallbacks", "emission_rate", "mean_reasoning_tokens")


@dataclass
class Evaluation:
    result: dict  # exactly RESULT_KEYS (+ REASONING_KEYS with reasoning): what gets written as JSON
    per_query: dict[str, dict[str, float]]
    example_traces: list[str] = field(default_factory=list)


def judged_subset(rs: RetrievalSet, max_queries: int | None = None) -> RetrievalSet:
    """The judged queries of ``rs`` (the first ``max_queries`` of them, in file order, when given)."""
    queries = rs.judged_queries()
    if max_queries is not None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be at least 1, got {max_queries}")
        queries = dict(list(queries.items())[:max_queries])
    if not queries:
        raise ValueError(f"{rs.name}: no query has a relevant document; nothing to evaluate")
    qrels = {q: rs.qrels[q] for q in queries}
    return RetrievalSet(name=rs.name, corpus=rs.corpus, queries=queries, qrels=qrels, meta=dict(rs.meta))


def load_encoder(system: str, config: EvaluateConfig, model_config=None, doc_cap: int | None = None,
                 base: str | None = None):
    """``minilm``, a model folder or a delta folder loaded with ``Embedder.from_pretrained(path, config=model_config)``
    (a delta on the base its manifest names, or on ``base``).

    ``model_config`` is the ``model:`` section (``searchr3.model.config.ModelConfig``): precision,
    batch size, templates, max lengths; None uses its defaults. ``doc_cap`` (default: the first of
    ``config.doc_caps``) cuts documents at that many tokens, for MiniLM and our model alike.
    """
    doc_cap = doc_cap or config.doc_caps[0]
    if system == "minilm":
        from searchr3.eval.minilm import MiniLMEncoder

        return MiniLMEncoder(batch_size=config.minilm_batch_size, max_tokens=doc_cap)
    path = Path(system)
    if not path.is_dir():
        raise ArtifactError(path, None, "model_not_found",
                        f"--model must be {' or '.join(BASELINES)}, a model folder or a delta folder")
    from dataclasses import replace

    from searchr3.model.config import ModelConfig
    from searchr3.model.embedder import Embedder

    return Embedder.from_pretrained(str(path), config=replace(model_config or ModelConfig(), max_doc_tokens=doc_cap),
                                    base=base)


def evaluate_detailed(system: str, rs: RetrievalSet, reasoning: bool = False, *, split: str | None = None,
                      max_queries: int | None = None, config: EvaluateConfig | None = None, model_config=None,
                      bm25: Bm25Config | None = None, encoder=None, progress: bool = False,
                      hybrid: bool = False, doc_cap: int | None = None) -> Evaluation:
    """Retrieve for every judged query of ``rs`` with ``system`` and score the run.

    ``config`` is the ``evaluate:`` section (top_k, cache_dir, minilm_batch_size), ``bm25`` the ``bm25:`` one;
    ``encoder`` overrides loading (``system`` is then only the label); ``split`` defaults to ``rs.meta["split"]``;
    ``hybrid`` fuses the dense run with BM25's (reciprocal-rank fusion, ``config.rrf_k``). ``doc_cap``: documents
    cut at this many tokens by the dense side (default: the first of ``config.doc_caps``; an ``encoder`` given
    by the caller keeps its own setting); BM25 reads whole texts, so BM25 alone reports ``cap`` None.
    """
    config = config or EvaluateConfig()
    if reasoning and system in BASELINES and encoder is None:
        raise ValueError(f"{system} cannot reason; --reasoning needs a trained model folder")
    if hybrid and system == "bm25" and encoder is None:
        raise ValueError("hybrid fuses BM25 with a dense system; bm25 alone cannot be the dense side")
    subset = judged_subset(rs, max_queries)
    traces: list[str] = []
    reasoning_stats = {}
    if system == "bm25" and encoder is None:
        from searchr3.eval.bm25 import bm25_search

        run = bm25_search(subset, k=config.top_k, config=bm25, progress=progress)
        cap = None
    else:
        from searchr3.eval.dense import dense_search

        if encoder is None:
            encoder = load_encoder(system, config, model_config, doc_cap)
        cap = getattr(encoder, "doc_cap", None)  # the cut the encoder applies (a caller's encoder keeps its own)
        dense = dense_search(encoder, subset, k=config.top_k, reasoning=reasoning,
                             cache_dir=config.cache_dir, progress=progress)
        run, traces = dense.run, dense.example_traces
        if reasoning:
            reasoning_stats = {"fallbacks": dense.fallbacks, "emission_rate": dense.emission_rate,
                               "mean_reasoning_tokens": dense.mean_reasoning_tokens}
        if hybrid:
            from searchr3.eval.bm25 import bm25_search
            from searchr3.eval.fusion import rrf_runs

            lexical = bm25_search(subset, k=config.top_k, config=bm25, progress=progress)
            run = rrf_runs([run, lexical], k=config.rrf_k, depth=config.top_k)
    result = {"dataset": rs.name, "split": split or rs.meta.get("split"), "system": system,
              "cap": cap, "queries": len(subset.queries), **compute_metrics(subset.qrels, run), **reasoning_stats}
    return Evaluation(result=result, per_query=per_query_metrics(subset.qrels, run), example_traces=traces)


def evaluate(system: str, rs: RetrievalSet, reasoning: bool = False, **kwargs) -> dict:
    """The result dict of :func:`evaluate_detailed` (keys RESULT_KEYS, plus REASONING_KEYS with reasoning)."""
    return evaluate_detailed(system, rs, reasoning, **kwargs).result
