"""Exact dense retrieval (FAISS inner product over L2-normalised vectors) for any encoder.

An encoder follows the Embedder contract: ``encode_documents(texts, progress=) -> (n, d) float32``
(it draws its own progress bar), ``encode_queries(texts, reasoning=, return_traces=, progress=)`` returning an
object with ``.vectors`` (and, when reasoning, ``.fallbacks``, ``.traces``, optionally ``.trace_tokens``),
``checksum`` (hash of its weights) and optionally ``settings_key`` (template, max length, dtype).
Document embeddings are cached under ``cache_dir/<sha256>.npy``, keyed by checksum, settings_key
and the exact corpus (ids and texts), so re-evaluating a model on the same corpus skips encoding.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from searchr3.data.types import RetrievalSet
from searchr3.files import atomic_file

EXAMPLE_TRACES = 3


@dataclass
class DenseResult:
    run: dict[str, dict[str, float]]
    fallbacks: int = 0  # reasoning traces that stopped without emitting the embed token
    emission_rate: float | None = None  # share of reasoning traces that emitted the token
    mean_reasoning_tokens: float | None = None  # mean generated length (tokens; words if the encoder has no tokenizer)
    example_traces: list[str] = field(default_factory=list)
    cache_hit: bool = False


def document_settings(encoder) -> str:
    """What besides the weights shapes a document vector (template, max length, dtype), if the encoder says."""
    return str(getattr(encoder, "settings_key", ""))


def cache_key(encoder, doc_ids: list[str], texts: list[str]) -> str:
    digest = hashlib.sha256()
    for part in (encoder.checksum, document_settings(encoder)):
        digest.update(str(part).encode())
        digest.update(b"\0")
    for doc_id, text in zip(doc_ids, texts):
        digest.update(doc_id.encode())
        digest.update(b"\0")
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def document_embeddings(encoder, doc_ids: list[str], texts: list[str], cache_dir: str | Path | None,
                        progress: bool = False) -> tuple[np.ndarray, bool]:
    """(vectors, cache_hit). Encodes only when no cached array matches; ``cache_dir=None`` disables the cache."""
    path = Path(cache_dir) / f"{cache_key(encoder, doc_ids, texts)}.npy" if cache_dir else None
    if path is not None and path.exists():
        cached = np.load(path)
        if cached.ndim == 2 and cached.shape[0] == len(texts):
            return cached.astype(np.float32, copy=False), True
    vectors = np.ascontiguousarray(encoder.encode_documents(texts, progress=progress), dtype=np.float32)
    if vectors.shape[0] != len(texts):
        raise ValueError(f"encoder returned {vectors.shape[0]} vectors for {len(texts)} documents")
    if path is not None:
        with atomic_file(path, "wb") as handle:
            np.save(handle, vectors)
    return vectors, False


def _reasoning_lengths(encoder, out) -> list[int]:
    """Generated length per trace: the encoder's token counts, else its tokenizer, else words."""
    if getattr(out, "trace_tokens", None) is not None:
        return list(out.trace_tokens)
    traces = getattr(out, "traces", None) or []
    tokenizer = getattr(encoder, "tokenizer", None)
    if tokenizer is not None:
        return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in traces]
    return [len(t.split()) for t in traces]


def dense_search(encoder, rs: RetrievalSet, k: int = 100, reasoning: bool = False,
                 cache_dir: str | Path | None = "cache/embeddings", progress: bool = False) -> DenseResult:
    """Top-``k`` documents for every query of ``rs`` by exact inner product; see the module docstring."""
    if not rs.corpus or not rs.queries:
        raise ValueError(f"{rs.name}: dense search needs a non-empty corpus and query set")
    doc_ids = list(rs.corpus)
    doc_vectors, hit = document_embeddings(encoder, doc_ids, [rs.corpus[d] for d in doc_ids], cache_dir, progress)
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(doc_vectors)

    query_ids = list(rs.queries)
    queries = encoder.encode_queries([rs.queries[q] for q in query_ids], reasoning=reasoning, return_traces=reasoning,
                                     progress=progress)
    query_vectors = np.ascontiguousarray(queries.vectors, dtype=np.float32)
    if query_vectors.shape != (len(query_ids), doc_vectors.shape[1]):
        raise ValueError(f"encoder returned query vectors of shape {query_vectors.shape}, "
                         f"expected {(len(query_ids), doc_vectors.shape[1])}")
    scores, indices = index.search(query_vectors, min(k, len(doc_ids)))
    run = {qid: {doc_ids[i]: float(s) for i, s in zip(row_idx, row_scores) if i >= 0}
           for qid, row_idx, row_scores in zip(query_ids, indices, scores)}

    result = DenseResult(run=run, cache_hit=hit)
    if reasoning:
        n = len(query_ids)
        result.fallbacks = int(queries.fallbacks)
        result.emission_rate = (n - result.fallbacks) / n
        lengths = _reasoning_lengths(encoder, queries)
        result.mean_reasoning_tokens = float(np.mean(lengths)) if lengths else None
        result.example_traces = list(queries.traces or [])[:EXAMPLE_TRACES]
    return result
