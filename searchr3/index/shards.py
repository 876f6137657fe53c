"""Corpus encoding in shards feeding one index: a large corpus is cut into contiguous shards that separate workers
encode (a Dask task each: ``flows/on_dask.py``'s ``index_on_dask``), and the shards' vectors, concatenated in corpus
order, build one ``DocumentIndex`` (IVF/HNSW trained on all of them, as for a single-process build).

Each shard is a pure function of (model folder, model settings, its texts): a worker loads the model itself, so the
only thing sent back is a float32 array. The order of the documents, and so of the index labels, is the corpus
order whatever order the shards finish in.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from searchr3.index.store import DocumentIndex, encode_in_batches


@dataclass(frozen=True)
class Shard:
    number: int
    start: int  # first document (corpus order)
    end: int  # one past the last


def shards_of(n_docs: int, shards: int) -> list[Shard]:
    """``shards`` contiguous, nearly equal ranges covering ``n_docs`` documents (fewer when there are fewer docs)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    shards = max(1, min(shards, n_docs))
    bounds = [round(i * n_docs / shards) for i in range(shards + 1)]
    return [Shard(i, bounds[i], bounds[i + 1]) for i in range(shards)]


def encode_shard(model_dir: str | Path, texts: list[str], model_config=None, batch_size: int = 256) -> np.ndarray:
    """The document vectors of ``texts`` from the model in ``model_dir`` (loaded here: one worker, one model)."""
    from searchr3.model.embedder import Embedder

    embedder = Embedder.from_pretrained(str(model_dir), config=model_config)
    return encode_in_batches(embedder.encode_documents, texts, batch_size, desc="encode shard")


def index_from_shards(index: DocumentIndex, doc_ids: list[str], parts: list[tuple[Shard, np.ndarray]],
                      version: int = 0, texts: dict[str, str] | None = None) -> DocumentIndex:
    """Build ``index`` from every shard's vectors (``parts`` in any order); refuses a gap, an overlap or a shard
    whose row count is not its range's."""
    ordered = sorted(parts, key=lambda p: p[0].start)
    expected = 0
    for shard, vectors in ordered:
        if shard.start != expected:
            raise ValueError(f"shard {shard.number} starts at document {shard.start}, expected {expected} "
                             "(a shard is missing or overlaps another)")
        if len(vectors) != shard.end - shard.start:
            raise ValueError(f"shard {shard.number} holds {len(vectors)} vectors for {shard.end - shard.start} documents")
        expected = shard.end
    if expected != len(doc_ids):
        raise ValueError(f"the shards cover {expected} of {len(doc_ids)} documents")
    index.build_from_vectors(doc_ids, np.concatenate([v for _, v in ordered]), version, texts=texts)
    return index
