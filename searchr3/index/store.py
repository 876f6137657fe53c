"""A FAISS document index whose vectors carry the policy version that encoded them.

String doc ids map onto dense int64 ids (0, 1, 2 ... in the order documents were first added);
those int ids are the FAISS labels and never change, so ``update`` (remove + add) keeps them.

Three structures, or ``auto`` (chosen by corpus size at the first build: :func:`auto_kind`):

- ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact inner-product search.
- ``ivf``: ``IndexIVFFlat`` (inner product) trained on the vectors of the first ``build``. It holds
  the int64 labels itself, with a hashtable direct map so vectors can be removed and reconstructed.
  (Wrapping IVF in ``IndexIDMap2`` would break ``remove_ids``: the id map assumes the inner index
  renumbers its vectors after a removal, which IVF does not.) ``auto`` sizes ``nlist`` (:func:`auto_nlist`); training uses at most 64 vectors per cluster.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)`` (inner product), a graph index: no training, fast and accurate queries,
  but FAISS cannot remove a vector from it, so ``update`` of known documents rebuilds the graph from the stored
  vectors (O(n)): right for the serving index, wrong for the RL live index (keep ``flat``/``ivf`` there).

``benchmarks/index_scale.py`` measures build time, query latency and recall@10 against flat at 10k-1M vectors.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import faiss
import numpy as np
from tqdm.auto import tqdm

EncodeFn = Callable[[list[str]], np.ndarray]
KINDS = ("flat", "ivf", "hnsw")
AUTO = "auto"
AUTO_FLAT_MAX = 100_000  # auto: exact search up to this many documents (measured: benchmarks/index_scale.py)
AUTO_IVF_MAX = 2_000_000  # auto: IVF up to this many, HNSW beyond (IVF's training and probing grow with n)
SCORE_TOLERANCE = 1e-3  # unit vectors: |score| <= 1 up to float32 rounding


def encode_in_batches(encode_fn: EncodeFn, texts: Sequence[str], batch_size: int = 256,
                      progress: bool = False, desc: str = "encode") -> np.ndarray:
    """Call ``encode_fn`` on slices of ``texts``; return one float32 (n, d) array."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
        batch = list(texts[start:start + batch_size])
        out = np.asarray(encode_fn(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise ValueError(f"encode_fn returned shape {out.shape} for {len(batch)} texts; expected ({len(batch)}, dim)")
        parts.append(out)
    if not parts:
        raise ValueError("nothing to encode: empty list of texts")
    return np.ascontiguousarray(np.concatenate(parts, axis=0))


def auto_kind(n_docs: int) -> str:
    """The structure ``kind: auto`` picks for ``n_docs`` documents: flat (exact) up to :data:`AUTO_FLAT_MAX`, IVF up
    to :data:`AUTO_IVF_MAX`, HNSW beyond."""
    if n_docs <= AUTO_FLAT_MAX:
        return "flat"
    return "ivf" if n_docs <= AUTO_IVF_MAX else "hnsw"


IVF_MIN_POINTS = 39  # FAISS's k-means warns below 39 training points per centroid
IVF_TRAIN_POINTS = 64  # ... and IVF trains on at most this many per centroid (a seeded sample): enough for the centroids


def auto_nlist(n_docs: int) -> int:
    """IVF clusters for ``n_docs`` documents: ``4 * sqrt(n)`` (FAISS's guideline is 4-16 x sqrt(n)), but at most
    ``n / 39`` so that k-means has the points it needs; at least 1."""
    return max(1, min(int(4 * n_docs ** 0.5), n_docs // IVF_MIN_POINTS))


class DocumentIndex:
    """Live document index: FAISS vectors + string id map + a version stamp per vector."""

    def __init__(self, kind: str = "flat", nlist: int = 1024, nprobe: int = 16, encode_batch: int = 256,
                 hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 128):
        if kind not in KINDS + (AUTO,):
            raise ValueError(f"index kind must be one of {KINDS + (AUTO,)}, got {kind!r}")
        if nlist < 1 or nprobe < 1:
            raise ValueError(f"nlist and nprobe must be >= 1, got nlist={nlist} nprobe={nprobe}")
        if hnsw_m < 2 or ef_construction < 1 or ef_search < 1:
            raise ValueError(f"hnsw_m must be >= 2 and ef_construction, ef_search >= 1, got {hnsw_m}, "
                             f"{ef_construction}, {ef_search}")
        self.kind = kind  # "auto" until the first build resolves it (auto_kind)
        self.nlist = nlist
        self.nprobe = nprobe
        self.encode_batch = encode_batch
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.dim: int | None = None
        self.faiss_index: faiss.Index | None = None
        self.doc_ids: list[str] = []  # position = int64 label
        self.int_of: dict[str, int] = {}
        self.versions = np.zeros(0, dtype=np.int64)  # aligned with doc_ids
        self.texts: dict[str, str] = {}  # needed to re-encode; may be empty for a loaded snapshot

    @classmethod
    def from_config(cls, config) -> "DocumentIndex":
        """From an ``IndexConfig`` (``searchr3.index.config``)."""
        return cls(kind=config.kind, nlist=config.nlist, nprobe=config.nprobe, encode_batch=config.encode_batch,
                   hnsw_m=config.hnsw_m, ef_construction=config.ef_construction, ef_search=config.ef_search)

    def __len__(self) -> int:
        return 0 if self.faiss_index is None else int(self.faiss_index.ntotal)

    # ---- writing -------------------------------------------------------------------------------

    def build(self, doc_ids: Sequence[str], texts: Sequence[str], encode_fn: EncodeFn, version: int,
              progress: bool = False) -> None:
        """Encode every text and (re)create the index from scratch; every vector stamped ``version``."""
        doc_ids = list(doc_ids)
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} doc ids but {len(texts)} texts")
        _check_unique(doc_ids)
        vectors = encode_in_batches(encode_fn, texts, self.encode_batch, progress, desc="encode corpus")
        self.build_from_vectors(doc_ids, vectors, version, texts=dict(zip(doc_ids, texts)))

    def build_from_vectors(self, doc_ids: Sequence[str], vectors: np.ndarray, version: int,
                           texts: dict[str, str] | None = None) -> None:
        """Create the index from already-encoded vectors (IVF is trained on them)."""
        doc_ids = list(doc_ids)
        _check_unique(doc_ids)
        vectors = _check_vectors(vectors, len(doc_ids), None)
        if not doc_ids:
            raise ValueError("cannot build an index with no documents")
        if self.kind == AUTO:
            self.kind = auto_kind(len(doc_ids))
            if self.kind == "ivf":
                self.nlist = auto_nlist(len(doc_ids))
        self.dim = vectors.shape[1]
        self.faiss_index = self._empty_index(vectors)
        self.doc_ids = []
        self.int_of = {}
        self.versions = np.zeros(0, dtype=np.int64)
        self.texts = dict(texts or {})
        self.update(doc_ids, vectors, version)

    def update(self, doc_ids: Sequence[str], vectors: np.ndarray, version: int | np.ndarray,
               texts: dict[str, str] | None = None) -> None:
        """Replace the vectors of ``doc_ids`` (remove_ids + add_with_ids; labels kept) and stamp them with
        ``version`` (one for all, or one per document).

        Unknown doc ids are added with fresh labels; pass their ``texts`` if they will be re-encoded later.
        """
        if self.faiss_index is None:
            raise ValueError("index is empty: call build() first")
        doc_ids = list(doc_ids)
        _check_unique(doc_ids)
        vectors = _check_vectors(vectors, len(doc_ids), self.dim)
        if not doc_ids:
            return
        new_ids = [d for d in doc_ids if d not in self.int_of]
        new_labels = {d: len(self.doc_ids) + i for i, d in enumerate(new_ids)}
        labels = np.fromiter((self.int_of[d] if d in self.int_of else new_labels[d] for d in doc_ids),
                             dtype=np.int64, count=len(doc_ids))
        known = labels[labels < len(self.doc_ids)]
        if len(known) and self.kind == "hnsw":  # FAISS cannot remove from HNSW: rebuild the graph with the new vectors
            self._rebuild_hnsw(labels, vectors)
        elif len(known):
            removed = self.faiss_index.remove_ids(known)
            if removed != len(known):
                raise RuntimeError(f"FAISS removed {removed} of {len(known)} vectors; index out of step with the id map")
        if not (len(known) and self.kind == "hnsw"):
            self.faiss_index.add_with_ids(vectors, labels)
        self.int_of.update(new_labels)
        self.doc_ids.extend(new_ids)
        self.versions = np.concatenate([self.versions, np.zeros(len(new_ids), np.int64)])
        self.versions[labels] = np.asarray(version, dtype=np.int64)
        if texts:
            self.texts.update(texts)

    # ---- reading -------------------------------------------------------------------------------

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` by inner product. Returns (scores (n, k) float32, doc id lists).

        ``k`` is clamped to the number of documents. A list is shorter than ``k`` only when IVF probing
        found fewer candidates; the scores past its end are ``-inf``. Vectors are unit-norm, so a score
        outside [-1, 1] is refused (ValueError) rather than returned.
        """
        if self.faiss_index is None:
            raise ValueError("index is empty: call build() first")
        queries = _check_vectors(query_vectors, None, self.dim)
        k = min(int(k), len(self))
        if k < 1:
            raise ValueError(f"k must be >= 1 and the index non-empty (k={k}, documents={len(self)})")
        scores, labels = self._search_labels(queries, k)
        found = labels >= 0
        if found.any() and not (np.abs(scores[found]) <= 1.0 + SCORE_TOLERANCE).all():
            worst = float(np.max(np.abs(np.nan_to_num(scores[found], nan=np.inf))))
            raise ValueError(f"an inner-product score of magnitude {worst:.6g} is outside [-1, 1]: a stored or "
                             "query vector is not unit-norm (a damaged index, or vectors that were not normalised)")
        scores = np.where(found, scores, -np.inf).astype(np.float32)
        ids = [[self.doc_ids[j] for j in row if j >= 0] for row in labels]
        return scores, ids

    def search_labels(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like ``search`` but returns the raw int64 labels (-1 = no result)."""
        queries = _check_vectors(query_vectors, None, self.dim)
        return self._search_labels(queries, min(int(k), len(self)))

    def vectors(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``doc_ids`` (reconstructed from FAISS), float32 (n, d)."""
        labels = self.labels_of(doc_ids)
        if len(labels) == 0:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.asarray(self.faiss_index.reconstruct_batch(labels), dtype=np.float32)

    def labels_of(self, doc_ids: Sequence[str]) -> np.ndarray:
        missing = [d for d in doc_ids if d not in self.int_of]
        if missing:
            raise KeyError(f"{len(missing)} doc id(s) not in the index, e.g. {missing[:3]}")
        return np.fromiter((self.int_of[d] for d in doc_ids), dtype=np.int64, count=len(doc_ids))

    def version_of(self, doc_ids: Sequence[str]) -> np.ndarray:
        return self.versions[self.labels_of(doc_ids)]

    def staleness(self, current_version: int) -> dict[str, float]:
        """Version lag of the stored vectors: ``{"mean_lag", "max_lag"}`` (0 = all encoded by the current policy)."""
        if len(self.versions) == 0:
            return {"mean_lag": 0.0, "max_lag": 0.0}
        lag = int(current_version) - self.versions
        if lag.min() < 0:
            raise ValueError(f"current_version {current_version} is older than a stored vector "
                             f"(version {self.versions.max()})")
        return {"mean_lag": float(lag.mean()), "max_lag": float(lag.max())}

    def with_vectors(self, vectors: np.ndarray, version: int) -> "DocumentIndex":
        """A copy with the same structure (same trained IVF clusters) holding ``vectors`` for every doc.

        ``vectors`` rows follow ``self.doc_ids``. Used to compare the live index with a fully fresh one.
        """
        vectors = _check_vectors(vectors, len(self.doc_ids), self.dim)
        other = DocumentIndex(self.kind, self.nlist, self.nprobe, self.encode_batch, self.hnsw_m, self.ef_construction,
                              self.ef_search)
        other.dim = self.dim
        other.faiss_index = self._empty_index(vectors, trained=self.faiss_index)
        other.doc_ids = list(self.doc_ids)
        other.int_of = dict(self.int_of)
        other.texts = self.texts
        other.faiss_index.add_with_ids(vectors, np.arange(len(self.doc_ids), dtype=np.int64))
        other.versions = np.full(len(self.doc_ids), int(version), dtype=np.int64)
        return other

    # ---- internals -----------------------------------------------------------------------------

    def _search_labels(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "ivf":
            self.faiss_index.nprobe = self.nprobe
        elif self.kind == "hnsw":
            _hnsw_of(self.faiss_index).hnsw.efSearch = max(self.ef_search, k)
        return self.faiss_index.search(queries, k)

    def _rebuild_hnsw(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Every stored vector (``labels`` replaced by ``vectors``, new labels appended) in a fresh HNSW graph."""
        count = len(self.doc_ids)
        stored = np.asarray(self.faiss_index.reconstruct_batch(np.arange(count, dtype=np.int64)), dtype=np.float32)
        new = labels >= count
        stored[labels[~new]] = vectors[~new]
        every = np.concatenate([stored, vectors[new]]) if new.any() else stored
        order = np.concatenate([np.arange(count, dtype=np.int64), labels[new]])
        self.faiss_index = self._empty_index(every)
        self.faiss_index.add_with_ids(every, order)

    def _empty_index(self, training_vectors: np.ndarray, trained: faiss.Index | None = None) -> faiss.Index:
        """An empty FAISS index; IVF is trained on ``training_vectors`` or reuses the clusters of ``trained``."""
        dim = training_vectors.shape[1]
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if self.kind == "hnsw":
            graph = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = self.ef_construction
            graph.hnsw.efSearch = self.ef_search
            return faiss.IndexIDMap2(graph)
        if trained is not None:
            source = faiss.extract_index_ivf(trained)
            ivf = faiss.IndexIVFFlat(faiss.clone_index(source.quantizer), dim, source.nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if len(training_vectors) < self.nlist:
                raise ValueError(f"ivf index needs at least nlist={self.nlist} documents to train, got "
                                 f"{len(training_vectors)}; lower index.nlist or use kind: flat")
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            cap = IVF_TRAIN_POINTS * self.nlist
            if len(training_vectors) > cap:  # a seeded sample: the same vectors give the same clusters
                pick = np.sort(np.random.default_rng(0).choice(len(training_vectors), cap, replace=False))
                training_vectors = training_vectors[pick]
            ivf.train(training_vectors)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        ivf.nprobe = self.nprobe
        return ivf

    def attach(self, faiss_index: faiss.Index, doc_ids: list[str], versions: np.ndarray) -> None:
        """Install a loaded FAISS index with its id map and versions (used by ``load_snapshot``)."""
        self.faiss_index = faiss_index
        self.dim = int(faiss_index.d)
        self.doc_ids = list(doc_ids)
        self.int_of = {d: i for i, d in enumerate(self.doc_ids)}
        self.versions = np.asarray(versions, dtype=np.int64)
        if self.kind == "ivf":
            faiss.extract_index_ivf(faiss_index).nprobe = self.nprobe
        elif self.kind == "hnsw":
            _hnsw_of(faiss_index).hnsw.efSearch = self.ef_search


def _hnsw_of(index: faiss.Index) -> faiss.IndexHNSW:
    """The HNSW index inside an ``IndexIDMap2``."""
    return faiss.downcast_index(faiss.downcast_index(index).index)


def _check_unique(doc_ids: list[str]) -> None:
    if len(set(doc_ids)) != len(doc_ids):
        seen, dup = set(), []
        for d in doc_ids:
            if d in seen:
                dup.append(d)
            seen.add(d)
        raise ValueError(f"duplicate doc ids: {dup[:5]}")


def _check_vectors(vectors: np.ndarray, rows: int | None, dim: int | None) -> np.ndarray:
    vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
    if rows is not None and vectors.shape[0] != rows:
        raise ValueError(f"{vectors.shape[0]} vectors for {rows} doc ids")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"vectors have dim {vectors.shape[1]}, index has dim {dim}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or inf")
    return vectors
