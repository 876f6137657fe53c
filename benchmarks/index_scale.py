"""Index structures at scale: flat (exact), IVF and HNSW (searchr3.index.store.DocumentIndex, the code the pipeline
runs) on 10k, 100k and 1M synthetic unit vectors: build time, single-query latency p50/p99, recall@10 against flat.

The vectors are clustered (a Gaussian mixture around --clusters centres, normalised), since real embeddings
cluster and uniform noise would make every approximate index look bad. Queries come from the same mixture.
IVF uses what ``index.kind: auto`` picks (nlist = 4 sqrt(n), nprobe = index.nprobe); HNSW index.hnsw_m /
ef_construction / ef_search. Latency is one query per call (a search service's shape), on the machine's threads.

HNSW's build is the expensive one: above --hnsw-max documents it is not built; its build time is then
*estimated* from the largest measured size as n log n scaling, its latency and recall are left blank, and the
row says "est.". Likewise --flat-truth-max bounds the exact search used for recall (always 1M here).

    python benchmarks/index_scale.py --quick            # 10k and 100k, about a minute on 2 cores
    python benchmarks/index_scale.py                    # 10k, 100k, 1M (about 10 minutes on 2 cores)
    python benchmarks/index_scale.py --sizes 10000 --dim 576

Ends with one line per size: ``n=N auto=KIND``, the structure ``index.kind: auto`` picks there.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from searchr3.index.config import IndexConfig  # noqa: E402
from searchr3.index.store import DocumentIndex, auto_kind, auto_nlist  # noqa: E402


def clustered(n: int, dim: int, clusters: int, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, dim)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def build(kind: str, ids: list[str], vectors: np.ndarray, cfg: IndexConfig) -> tuple[DocumentIndex, float]:
    nlist = auto_nlist(len(ids)) if kind == "ivf" else cfg.nlist
    index = DocumentIndex(kind, nlist=nlist, nprobe=cfg.nprobe, hnsw_m=cfg.hnsw_m, ef_construction=cfg.ef_construction,
                          ef_search=cfg.ef_search)
    started = time.perf_counter()
    index.build_from_vectors(ids, vectors, version=0)
    return index, time.perf_counter() - started


def latencies(index: DocumentIndex, queries: np.ndarray, k: int = 10) -> tuple[float, float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        index.search_labels(q[None, :], k)
        times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def recall(index: DocumentIndex, truth: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    _, labels = index.search_labels(queries, k)
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(labels, truth)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="10k and 100k only")
    parser.add_argument("--dim", type=int, default=256, help="vector size (SmolLM2-135M: 576, Qwen2.5-1.5B: 1536)")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200, help="queries for latency and recall")
    parser.add_argument("--hnsw-max", type=int, default=200_000, help="largest n HNSW is built at (else estimated)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = [n for n in args.sizes if n <= 100_000] if args.quick else args.sizes
    cfg = IndexConfig()
    rng = np.random.default_rng(args.seed)
    print(f"# index_scale: dim {args.dim}, {args.clusters} clusters, {args.queries} queries, k=10; "
          f"{os.cpu_count()} CPU threads; nprobe {cfg.nprobe}, hnsw M {cfg.hnsw_m} efC {cfg.ef_construction} "
          f"efS {cfg.ef_search}")
    print(f"# command: python benchmarks/index_scale.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"{'n':>9} {'kind':<5} {'params':<12} {'build_s':>9} {'p50_ms':>8} {'p99_ms':>8} {'recall@10':>9}")
    hnsw_measured: tuple[int, float] | None = None
    for n in sizes:
        both = clustered(n + args.queries, args.dim, args.clusters, rng)  # documents and queries: one mixture
        vectors, queries = both[:n], np.ascontiguousarray(both[n:])
        del both
        ids = [str(i) for i in range(n)]
        flat, flat_s = build("flat", ids, vectors, cfg)
        _, truth = flat.search_labels(queries, 10)
        rows = [("flat", "exact", flat_s, *latencies(flat, queries), 1.0)]
        del flat
        ivf, ivf_s = build("ivf", ids, vectors, cfg)
        rows.append(("ivf", f"nlist={ivf.nlist}", ivf_s, *latencies(ivf, queries), recall(ivf, truth, queries)))
        del ivf
        if n <= args.hnsw_max:
            hnsw, hnsw_s = build("hnsw", ids, vectors, cfg)
            rows.append(("hnsw", f"M={cfg.hnsw_m}", hnsw_s, *latencies(hnsw, queries), recall(hnsw, truth, queries)))
            hnsw_measured = (n, hnsw_s)
            del hnsw
        elif hnsw_measured is not None:
            m, s = hnsw_measured
            rows.append(("hnsw", f"M={cfg.hnsw_m} est.", s * n * math.log(n) / (m * math.log(m)), None, None, None))
        for kind, params, build_s, p50, p99, rec in rows:
            fmt = (lambda v, f: f"{v:{f}}" if v is not None else "-")
            print(f"{n:>9} {kind:<5} {params:<12} {build_s:>9.2f} {fmt(p50, '8.3f'):>8} {fmt(p99, '8.3f'):>8} "
                  f"{fmt(rec, '9.3f'):>9}", flush=True)
        del vectors
    for n in sizes:
        print(f"n={n} auto={auto_kind(n)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
