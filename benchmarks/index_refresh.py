"""Selective index refresh vs full re-encode, replayed over a simulated RL run.

What is simulated: the document encoder (the RL policy) drifts each step. The drift model is a
linear map on the base vectors, f_v(x) = normalise(x + D_v (x - mu)), with D updated every step by
a small global random matrix plus rank-one terms u_i (x_i - mu)^T on the documents the step used
(the shape a gradient step on a linear layer has: documents near the batch move most). Queries
drift through the same map. Base vectors are synthetic clustered points, or, with --model, real
Embedder vectors of SciFact documents and train queries (the drift is still synthetic).

Each step: B train queries search the selective index (their top-k are "the current queries' top-k";
positives + the top hard negatives are "the docs just used"), the policy moves to version v+1, then
  selective: RefreshPolicy.step (priority tiers capped by the budget + the rotating slice + graph rebuild),
  full:      every document re-encoded and updated,
  none:      nothing re-encoded (shows what staleness costs).
Fidelity = top-10 overlap with an index of freshly encoded vectors, on held-out probe queries,
measured every step outside the timed region. Cost = documents encoded (what scales with an LLM
encoder); wall time is the replay's own select + encode + update + graph time.

    python benchmarks/index_refresh.py --quick
    python benchmarks/index_refresh.py --model models/sft --quick
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from searchr3.index import DocumentIndex, RefreshConfig, RefreshPolicy, fidelity, refresh

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


class DriftModel:
    """The simulated policy: base vectors plus a drift that grows at every step.

    f_v(x) = normalise(x + D_v (x - mu) + sum_i k(x, a_i) u_i): a global linear part D (a small random
    matrix added per step) and a local part, one bump per document used in a step (anchor a_i, random
    displacement u_i) weighted by k = exp((cos(x - mu, a_i - mu) - 1) / width), so documents near the
    ones a step trained on move most.
    """

    def __init__(self, base_docs: np.ndarray, global_rate: float, local_rate: float, width: float, seed: int):
        self.base = base_docs.astype(np.float64)
        self.mu = self.base.mean(axis=0)
        self.scale = float(np.linalg.norm(self.base - self.mu, axis=1).mean())
        self.dim = self.base.shape[1]
        self.D = np.zeros((self.dim, self.dim))
        self.anchors = np.zeros((0, self.dim))
        self.moves = np.zeros((0, self.dim))
        self.global_rate, self.local_rate, self.width = global_rate, local_rate, width
        self.rng = np.random.default_rng(seed)

    def _encode(self, x: np.ndarray, D: np.ndarray, anchors: np.ndarray, moves: np.ndarray) -> np.ndarray:
        xc = np.asarray(x, dtype=np.float64) - self.mu
        y = x + xc @ D.T
        if len(anchors):
            cos = (xc / np.linalg.norm(xc, axis=1, keepdims=True)) @ anchors.T
            y = y + np.exp((cos - 1.0) / self.width) @ moves
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Encode raw base vectors (documents or queries) with the current version."""
        return self._encode(np.asarray(x, dtype=np.float64), self.D, self.anchors, self.moves)

    def encoder(self, counter: list[int]):
        """encode_fn frozen at the current version; texts are row numbers of the base vectors; counts docs."""
        D, anchors, moves = self.D.copy(), self.anchors, self.moves

        def encode(texts: list[str]) -> np.ndarray:
            counter[0] += len(texts)
            return self._encode(self.base[[int(t) for t in texts]], D, anchors, moves)
        return encode

    def update(self, used_rows: list[int]) -> None:
        """One optimiser step that trained on the documents ``used_rows``."""
        d = self.dim
        self.D = self.D + self.global_rate * self.rng.normal(size=(d, d)) / np.sqrt(d)
        xc = self.base[used_rows] - self.mu
        self.anchors = np.vstack([self.anchors, xc / np.linalg.norm(xc, axis=1, keepdims=True)])
        step_moves = self.local_rate * self.scale * self.rng.normal(size=(len(used_rows), d)) / np.sqrt(d)
        self.moves = np.vstack([self.moves, step_moves])


def synthetic_vectors(n_docs: int, n_queries: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n_docs // 20, 1), dim))
    docs = centres[rng.integers(0, len(centres), n_docs)] + 0.6 * rng.normal(size=(n_docs, dim))
    positives = rng.integers(0, n_docs, n_queries)
    queries = docs[positives] + 0.5 * rng.normal(size=(n_queries, dim))
    norm = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return norm(docs), norm(queries), [[int(p)] for p in positives], 0.0


def scifact_vectors(model_path: str, n_docs: int | None, seed: int):
    """Real Embedder vectors: SciFact docs (every positive of a train query, then others) and train queries."""
    from searchr3.data.beir import load_beir
    from searchr3.model.embedder import Embedder

    if not SCIFACT.exists():
        sys.exit(f"--model needs SciFact at {SCIFACT} (not found)")
    data = load_beir(SCIFACT, split="train")
    corpus, queries = data.corpus, data.queries
    qrels = {q: [d for d, rel in judged.items() if rel > 0] for q, judged in data.qrels.items()}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    qids = sorted(qrels)
    if n_docs is not None:  # keep a quarter as many queries as documents, and all their positives
        qids = qids[:max(1, min(len(qids), n_docs // 4))]
    doc_ids = list(dict.fromkeys(d for q in qids for d in qrels[q]))
    taken = set(doc_ids)
    others = [d for d in np.random.default_rng(seed).permutation(sorted(corpus)).tolist() if d not in taken]
    if n_docs is not None:
        others = others[:max(0, n_docs - len(doc_ids))]
    doc_ids += others
    row = {d: i for i, d in enumerate(doc_ids)}
    emb = Embedder.from_pretrained(model_path)
    t0 = time.perf_counter()
    docs = emb.encode_documents([corpus[d] for d in doc_ids], progress=True)
    sec_per_doc = (time.perf_counter() - t0) / len(doc_ids)
    qvec = emb.encode_queries([queries[q] for q in qids]).vectors
    return docs, qvec, [[row[d] for d in qrels[q]] for q in qids], sec_per_doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small corpus and few steps (about a minute on 2 CPU cores)")
    ap.add_argument("--model", help="Embedder folder: base vectors from SciFact through this model (drift stays synthetic)")
    ap.add_argument("--docs", type=int, help="corpus size (synthetic) or cap on SciFact docs")
    ap.add_argument("--steps", type=int, help="RL steps to replay")
    ap.add_argument("--batch", type=int, default=16, help="queries per RL step")
    ap.add_argument("--negatives", type=int, default=7, help="hard negatives used per query")
    ap.add_argument("--budget", type=int, help="refresh budget per step (priority tiers)")
    ap.add_argument("--full-every", type=int, help="T: rotating full refresh cycle in steps")
    ap.add_argument("--global-rate", type=float, default=0.02, help="drift: global random change per step")
    ap.add_argument("--local-rate", type=float, default=0.3, help="drift: displacement around each used document per step")
    ap.add_argument("--local-width", type=float, default=0.15, help="drift: how far (in 1 - cosine) a local bump reaches")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    steps = args.steps or (12 if args.quick else 40)
    if args.model:
        cap = args.docs or (800 if args.quick else None)
        docs, queries, positives, sec_per_doc = scifact_vectors(args.model, cap, args.seed)
        source = f"real Embedder vectors of SciFact ({args.model}); SYNTHETIC drift replayed on top (not a real RL run)"
    else:
        n = args.docs or (2000 if args.quick else 5000)
        docs, queries, positives, sec_per_doc = synthetic_vectors(n, max(4 * args.batch * steps, 256), 64, args.seed)
        source = "synthetic clustered vectors; SYNTHETIC drift (not a real RL run)"
    n_docs = len(docs)
    budget = (128 if args.quick else 256) if args.budget is None else args.budget
    full_every = (10 if args.quick else 50) if args.full_every is None else args.full_every
    cfg = RefreshConfig(budget_per_step=budget, graph_k=8, neighbours_per_doc=4, full_refresh_every=full_every,
                        probe_every=0, probe_size=64, topk_stale=10)
    rng = np.random.default_rng(args.seed + 1)
    order = rng.permutation(len(queries))
    probe_rows, train_rows = order[:cfg.probe_size], order[cfg.probe_size:]
    if len(train_rows) == 0:
        sys.exit("not enough queries: need more than probe_size (64)")

    drift = DriftModel(docs, args.global_rate, args.local_rate, args.local_width, args.seed + 2)
    ids, texts = [f"d{i}" for i in range(n_docs)], [str(i) for i in range(n_docs)]
    counters = {"build": [0], "selective": [0], "full": [0]}
    arms = {}
    for name in ("selective", "full", "none"):
        arms[name] = DocumentIndex(kind="flat", encode_batch=1024)
        arms[name].build(ids, texts, drift.encoder(counters["build"]), version=0)
    t0 = time.perf_counter()
    policy = RefreshPolicy(arms["selective"], cfg)
    graph_seconds = time.perf_counter() - t0

    print(f"vectors: {source}")
    print(f"drift: global_rate={args.global_rate}, local_rate={args.local_rate} per used doc, "
          f"local_width={args.local_width}; "
          f"docs={n_docs} dim={docs.shape[1]} steps={steps} batch={args.batch} negatives={args.negatives}")
    print(f"policy: budget={cfg.budget_per_step} graph_k={cfg.graph_k} neighbours_per_doc={cfg.neighbours_per_doc} "
          f"topk_stale={cfg.topk_stale} rotating slice="
          + (f"{-(-n_docs // full_every)}/step (T={full_every})" if full_every else "off"))
    print(f"not counted per step (same for both arms): initial build of {n_docs} docs; initial graph {graph_seconds:.2f}s; "
          "fidelity probes (a full re-encode each, measurement only)")
    if sec_per_doc:
        print(f"encoder cost measured on this machine: {sec_per_doc * 1000:.1f} ms/doc (est. columns = docs x that)")
    print("command: python benchmarks/index_refresh.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print()
    header = (f"{'step':>4} | {'sel docs':>8} {'sel s':>7} {'sel fid':>7} {'lag mean/max':>12} | "
              f"{'full docs':>9} {'full s':>7} {'full fid':>8} | {'none fid':>8}")
    if sec_per_doc:
        header += f" | {'est sel s':>9} {'est full s':>10}"
    print(header)
    print("-" * len(header))

    totals = {"selective": [0, 0.0], "full": [0, 0.0]}
    fids = {"selective": [], "full": [], "none": []}
    for step in range(1, steps + 1):
        version = step
        batch_rows = rng.choice(train_rows, size=min(args.batch, len(train_rows)), replace=False)
        qvec = drift.apply(queries[batch_rows])  # the rollout: current (pre-update) policy, selective index
        _, topk = arms["selective"].search(qvec, max(cfg.topk_stale, max(map(len, positives)) + args.negatives))
        used_rows: list[int] = []
        for qrow, found in zip(batch_rows, topk):
            pos = positives[qrow]
            negs = [int(d[1:]) for d in found if int(d[1:]) not in pos][:args.negatives]
            used_rows += list(pos) + negs
        used_rows = list(dict.fromkeys(used_rows))
        drift.update(used_rows)  # optimiser step -> policy version `version`

        before = counters["selective"][0]
        t = time.perf_counter()
        stats = policy.step(step, drift.encoder(counters["selective"]), [f"d{r}" for r in used_rows], topk, version)
        sel_s = time.perf_counter() - t
        sel_docs = counters["selective"][0] - before

        before = counters["full"][0]
        t = time.perf_counter()
        refresh(arms["full"], ids, drift.encoder(counters["full"]), version)
        full_s = time.perf_counter() - t
        full_docs = counters["full"][0] - before

        fresh = drift.apply(docs)
        probe = drift.apply(queries[probe_rows])
        fid = {name: fidelity(arms[name], fresh, probe, k=10) for name in arms}
        for name in fids:
            fids[name].append(fid[name])
        totals["selective"][0] += sel_docs
        totals["selective"][1] += sel_s
        totals["full"][0] += full_docs
        totals["full"][1] += full_s
        line = (f"{step:>4} | {sel_docs:>8} {sel_s:>7.3f} {fid['selective']:>7.3f} "
                f"{stats['staleness_mean']:>5.2f}/{stats['staleness_max']:<6.0f} | "
                f"{full_docs:>9} {full_s:>7.3f} {fid['full']:>8.3f} | {fid['none']:>8.3f}")
        if sec_per_doc:
            line += f" | {sel_docs * sec_per_doc:>9.1f} {full_docs * sec_per_doc:>10.1f}"
        print(line + ("  (graph rebuilt)" if stats["graph_rebuilt"] else ""))

    print()
    print(f"mean top-10 fidelity: selective {np.mean(fids['selective']):.3f}  full {np.mean(fids['full']):.3f}  "
          f"none {np.mean(fids['none']):.3f}")
    print(f"documents encoded: selective {totals['selective'][0]}  full {totals['full'][0]}")
    print(f"wall seconds (replay, synthetic-drift encoder): selective {totals['selective'][1]:.2f}  "
          f"full {totals['full'][1]:.2f}  wall ratio {totals['selective'][1] / totals['full'][1]:.2f}")
    print(f"ratio: {totals['selective'][0] / totals['full'][0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
