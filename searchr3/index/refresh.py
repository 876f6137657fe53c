"""Keeping a live index usable while the document encoder (the RL policy) trains.

Per RL step, ``RefreshPolicy.step`` re-encodes a bounded set of documents with the current policy:

1. the documents passed as ``used_doc_ids``: GRPO passes the positives and negatives the *next* step will
   score (its rows are known in advance), so they are fresh when its reward reads them (prefetch),
2. their neighbours in a document kNN graph (built from the index itself),
3. stale vectors that appeared in the current queries' top ``topk_stale``,

in that order, at most ``budget_per_step`` in all; then, outside that budget,

4. the rotating full refresh: labels are cut into ``T = full_refresh_every`` consecutive slices of
   ``ceil(N / T)``; step ``s`` re-encodes slice ``s % T``. With one policy version per step every
   vector is therefore at most ``T`` versions old, and the per-step cost is flat (no spike of N
   encodes every T steps). The kNN graph is rebuilt at the end of each cycle, ``(s + 1) % T == 0``.

With ``align_stale``, the documents just re-encoded also teach the index how the space moved: the linear
correction that best takes their stored vectors to their fresh ones (``fit_correction``: ridge, its strength chosen
by leave-one-out on those pairs, none when it would not help) is applied to every vector still stale, which keeps
its version (it is an estimate in the current space, not an encoding by it).

A document whose vector was already encoded by the current version is never re-encoded, so the
counts returned are the real encoder calls. Fidelity (``fidelity``) compares top-k results of the
live index with those of an index holding freshly encoded vectors for every document; it costs a
full re-encode, so it is a measurement taken every ``probe_every`` steps, not part of the refresh.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from searchr3.index.config import RefreshConfig
from searchr3.index.store import DocumentIndex, EncodeFn, encode_in_batches

REASONS = ("used", "neighbours", "topk_stale", "rotation")


@dataclass
class KnnGraph:
    """``neighbours[label]`` = labels of that document's nearest other documents, best first; -1 pads."""

    neighbours: np.ndarray  # (n, k) int64

    @property
    def k(self) -> int:
        return int(self.neighbours.shape[1])

    def of(self, label: int) -> np.ndarray:
        if label >= len(self.neighbours):  # added after the graph was built
            return np.zeros(0, dtype=np.int64)
        row = self.neighbours[label]
        return row[row >= 0]


def build_knn_graph(index: DocumentIndex, k: int, batch_size: int = 1024, progress: bool = False) -> KnnGraph:
    """k nearest other documents of every document, found by searching the index with its own vectors."""
    if k < 1:
        raise ValueError(f"graph k must be >= 1, got {k}")
    n = len(index.doc_ids)
    neighbours = np.full((n, k), -1, dtype=np.int64)
    for start in tqdm(range(0, n, batch_size), desc="knn graph", disable=not progress, unit="batch"):
        labels = np.arange(start, min(start + batch_size, n), dtype=np.int64)
        vectors = np.asarray(index.faiss_index.reconstruct_batch(labels), dtype=np.float32)
        _, found = index.search_labels(vectors, k + 1)
        keep = (found != labels[:, None]) & (found >= 0)
        order = np.argsort(~keep, axis=1, kind="stable")  # kept columns first, rank order preserved
        taken = np.take_along_axis(found, order, axis=1)[:, :k]
        taken[np.arange(taken.shape[1])[None, :] >= keep.sum(axis=1)[:, None]] = -1
        neighbours[labels, :taken.shape[1]] = taken
    return KnnGraph(neighbours)


def refresh(index: DocumentIndex, doc_ids: Sequence[str], encode_fn: EncodeFn, version: int,
            progress: bool = False) -> int:
    """Re-encode ``doc_ids`` from their stored texts with ``encode_fn`` and update them; returns the count."""
    doc_ids = list(doc_ids)
    if not doc_ids:
        return 0
    vectors = encode_in_batches(encode_fn, _texts_of(index, doc_ids), index.encode_batch, progress, desc="refresh")
    index.update(doc_ids, vectors, version)
    return len(doc_ids)


RIDGES = tuple(10.0 ** np.arange(-3, 3.5, 0.5))  # the strengths the leave-one-out choice tries
MIN_GAIN = 0.9  # apply a correction only if it leaves at most this fraction of no correction's cosine distance


def fit_correction(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray | None, float | None, float]:
    """The linear correction ``v -> v + v @ D`` that takes ``before`` rows toward ``after`` rows, or None.

    Ridge regression of the change ``after - before`` on ``before``, shrunk toward no change:
    ``D = Xᵀ(XXᵀ + λI)⁻¹(Y - X)`` (kernel form: n pairs << d dimensions, so it moves only the directions the pairs
    span). λ is chosen from ``RIDGES`` by leave-one-out on the pairs themselves (closed form for ridge), scored as
    the index uses the result: the cosine distance of each left-out pair's normalised prediction to its fresh
    vector. When no λ gets within ``MIN_GAIN`` of no correction's distance the answer is None. Returns (D, λ, the
    chosen leave-one-out distance relative to no correction's; 1.0 when none).
    """
    x = np.asarray(before, dtype=np.float64)
    y = np.asarray(after, dtype=np.float64)
    change = y - x
    if len(x) < 2:
        return None, None, 1.0
    eig, basis = np.linalg.eigh(x @ x.T)
    eig = np.clip(eig, 0.0, None)
    rotated = basis.T @ change
    baseline = float(np.mean(1.0 - row_cosine(x, y)))
    if baseline <= 1e-12:
        return None, None, 1.0
    best, best_distance = None, MIN_GAIN * baseline
    for ridge in RIDGES:
        shrink = eig / (eig + ridge)
        hat_diag = np.sum(basis ** 2 * shrink, axis=1)
        residual = change - basis @ (shrink[:, None] * rotated)
        left_out = residual / np.maximum(1.0 - hat_diag, 1e-9)[:, None]  # y_i minus its prediction without pair i
        distance = float(np.mean(1.0 - row_cosine(y - left_out, y)))
        if distance < best_distance:
            best, best_distance = float(ridge), distance
    if best is None:
        return None, None, 1.0
    d = x.T @ (basis @ (rotated / (eig + best)[:, None]))
    return d, best, best_distance / baseline


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def align_stale(index: DocumentIndex, before: np.ndarray, after: np.ndarray, current_version: int) -> dict:
    """Move every stale vector of ``index`` by the correction (``fit_correction``) fitted on documents just
    re-encoded: ``before`` / ``after`` are their stored and fresh vectors. Moved vectors are normalised and keep
    their versions (the rotation and staleness figures still count them as not re-encoded).

    Returns ``{"aligned": how many moved, "align_ridge": λ or None, "align_loo": leave-one-out cosine distance
    relative to no correction's (1.0 when none was applied)}``."""
    d, ridge, loo = fit_correction(before, after)
    stale = np.flatnonzero(index.versions < int(current_version))
    if d is None or len(stale) == 0:
        return {"aligned": 0, "align_ridge": ridge, "align_loo": loo}
    doc_ids = [index.doc_ids[i] for i in stale]
    old = index.vectors(doc_ids).astype(np.float64)
    moved = old + old @ d
    moved /= np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)
    index.update(doc_ids, moved.astype(np.float32), index.versions[stale].copy())
    return {"aligned": len(stale), "align_ridge": ridge, "align_loo": loo}


def fidelity(index: DocumentIndex, fresh: np.ndarray | EncodeFn, probe_query_vectors: np.ndarray, k: int = 10) -> float:
    """Mean top-k overlap |live ∩ fresh| / k over the probe queries.

    ``fresh`` is either the freshly encoded vectors of every document (rows follow ``index.doc_ids``)
    or an encode function, which is then run on every stored text. The fresh index has the same
    structure as the live one (for IVF the same clusters), so the figure measures staleness only.
    """
    if callable(fresh):
        fresh = encode_in_batches(fresh, _texts_of(index, index.doc_ids), index.encode_batch, desc="fidelity")
    reference = index.with_vectors(np.asarray(fresh, dtype=np.float32), version=int(index.versions.max()))
    k = min(int(k), len(index))
    _, live = index.search_labels(probe_query_vectors, k)
    _, ref = reference.search_labels(probe_query_vectors, k)
    overlaps = [len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) / k for a, b in zip(live, ref)]
    if not overlaps:
        raise ValueError("fidelity needs at least one probe query")
    return float(np.mean(overlaps))


@dataclass
class RefreshPlan:
    """Documents to re-encode this step, and how many were picked for each reason (``REASONS``)."""

    doc_ids: list[str]
    reasons: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))


class RefreshPolicy:
    """Chooses which documents to re-encode each RL step (see the module docstring for the order)."""

    def __init__(self, index: DocumentIndex, config: RefreshConfig | None = None, graph: KnnGraph | None = None,
                 progress: bool = False):
        self.config = config or RefreshConfig()
        _check_config(self.config)
        self.index = index
        self.progress = progress
        self.graph = graph if graph is not None else build_knn_graph(index, self.config.graph_k, progress=progress)

    def select(self, step: int, used_doc_ids: Sequence[str], topk_doc_ids: Sequence[Sequence[str]],
               current_version: int) -> list[str]:
        """Doc ids to re-encode at ``step``, highest priority first."""
        return self.plan(step, used_doc_ids, topk_doc_ids, current_version).doc_ids

    def plan(self, step: int, used_doc_ids: Sequence[str], topk_doc_ids: Sequence[Sequence[str]],
             current_version: int) -> RefreshPlan:
        cfg = self.config
        stale = self.index.versions < int(current_version)
        chosen: dict[int, None] = {}  # insertion-ordered set of labels
        plan = RefreshPlan([])

        def take(labels, reason: str, limit: int | None) -> None:
            for label in labels:
                if limit is not None and len(chosen) >= limit:
                    return
                label = int(label)
                if stale[label] and label not in chosen:
                    chosen[label] = None
                    plan.reasons[reason] += 1

        used = [self.index.int_of[d] for d in used_doc_ids if d in self.index.int_of]
        budget = cfg.budget_per_step
        take(used, "used", budget)
        neighbour_rows = [self.graph.of(label)[:cfg.neighbours_per_doc] for label in used]
        take(_round_robin(neighbour_rows), "neighbours", budget)
        topk_rows = [[self.index.int_of[d] for d in row[:cfg.topk_stale] if d in self.index.int_of] for row in topk_doc_ids]
        take(_round_robin(topk_rows), "topk_stale", budget)
        take(self.rotation_slice(step), "rotation", None)
        plan.doc_ids = [self.index.doc_ids[label] for label in chosen]
        return plan

    def rotation_slice(self, step: int) -> np.ndarray:
        """Labels of the rotating full-refresh slice for ``step`` (empty when ``full_refresh_every`` is 0)."""
        T = self.config.full_refresh_every
        n = len(self.index.doc_ids)
        if T <= 0 or n == 0:
            return np.zeros(0, dtype=np.int64)
        size = math.ceil(n / T)
        start = (step % T) * size
        return np.arange(start, min(start + size, n), dtype=np.int64)

    def step(self, step: int, encode_fn: EncodeFn, used_doc_ids: Sequence[str],
             topk_doc_ids: Sequence[Sequence[str]], current_version: int,
             probe_query_vectors: np.ndarray | None = None, fresh: np.ndarray | EncodeFn | None = None) -> dict:
        """Select, re-encode and update; rebuild the graph at the end of a cycle; probe fidelity when due.

        Returns ``{"step", "refreshed", "used", "neighbours", "topk_stale", "rotation", "aligned", "align_ridge", "align_loo", "staleness_mean",
        "staleness_max", "graph_rebuilt", "fidelity"}`` (fidelity is None when not probed this step).
        ``fresh`` overrides ``encode_fn`` for the probe (e.g. vectors a caller already has).
        """
        cfg = self.config
        plan = self.plan(step, used_doc_ids, topk_doc_ids, current_version)
        before = self.index.vectors(plan.doc_ids) if cfg.align_stale and plan.doc_ids else None
        refreshed = refresh(self.index, plan.doc_ids, encode_fn, current_version)
        aligned = {"aligned": 0, "align_ridge": None, "align_loo": 1.0}
        if before is not None:
            aligned = align_stale(self.index, before, self.index.vectors(plan.doc_ids), current_version)
        graph_rebuilt = cfg.full_refresh_every > 0 and (step + 1) % cfg.full_refresh_every == 0
        if graph_rebuilt:
            self.graph = build_knn_graph(self.index, cfg.graph_k, progress=self.progress)
        stale = self.index.staleness(current_version)
        stats = {"step": step, "refreshed": refreshed, **plan.reasons, **aligned, "staleness_mean": stale["mean_lag"],
                 "staleness_max": stale["max_lag"], "graph_rebuilt": graph_rebuilt, "fidelity": None}
        if probe_query_vectors is not None and cfg.probe_every > 0 and step % cfg.probe_every == 0:
            probe = np.asarray(probe_query_vectors, dtype=np.float32)[:cfg.probe_size]
            stats["fidelity"] = fidelity(self.index, encode_fn if fresh is None else fresh, probe, k=10)
        return stats


def _texts_of(index: DocumentIndex, doc_ids: Sequence[str]) -> list[str]:
    missing = [d for d in doc_ids if d not in index.texts]
    if missing:
        raise KeyError(f"no text stored for {len(missing)} doc id(s), e.g. {missing[:3]}; "
                       "build(), update(texts=...) or load_snapshot(texts=...) first")
    return [index.texts[d] for d in doc_ids]


def _round_robin(rows: Sequence[Sequence[int]]) -> list[int]:
    """First element of every row, then every second element, ... (keeps the best ranks when truncated)."""
    out = []
    depth = max((len(r) for r in rows), default=0)
    for rank in range(depth):
        out.extend(int(r[rank]) for r in rows if rank < len(r))
    return out


def _check_config(cfg: RefreshConfig) -> None:
    problems = []
    for name in ("budget_per_step", "neighbours_per_doc", "full_refresh_every", "probe_every", "topk_stale"):
        if getattr(cfg, name) < 0:
            problems.append(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.graph_k < 1:
        problems.append(f"graph_k must be >= 1, got {cfg.graph_k}")
    if cfg.probe_size < 1:
        problems.append(f"probe_size must be >= 1, got {cfg.probe_size}")
    if cfg.neighbours_per_doc > cfg.graph_k:
        problems.append(f"neighbours_per_doc ({cfg.neighbours_per_doc}) must be <= graph_k ({cfg.graph_k})")
    if problems:
        raise ValueError("index.refresh: " + "; ".join(problems))
