"""Does the fast encode path change results? Packed vs the padded path, and bf16 vs fp32, on SciFact.

A fixed small retrieval set: the first --queries SciFact test queries, a corpus of their relevant
documents plus a seeded sample of others (--docs in all). The model embeds it padded (length-sorted
batches: the encode path before packing) and packed (ours), in fp32 and, with --precisions fp32 bf16,
in bf16 too. Printed: nDCG@10 / Recall@100 / MRR@10 of each, the largest metric difference between packed
and padded at equal precision (must stay within 0.002), and the per-document cosine of each to fp32
padded (>= 0.999 at equal precision, >= 0.99 for bf16).

    python benchmarks/encode_fidelity.py                     # 30 queries, 200 documents, models/base
    python benchmarks/encode_fidelity.py --queries 50 --docs 600

Ends with ``ratio: R``: the largest |packed - padded| metric difference over 0.002 (<= 1 passes).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from machine import describe

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "base"))
    p.add_argument("--data", default=str(SCIFACT))
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--docs", type=int, default=200)
    p.add_argument("--max-doc-tokens", type=int, default=256)
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="default fp32 only (bf16 is 3-4x slower than fp32 on CPUs without native bf16)")
    args = p.parse_args(argv)
    if not (Path(args.data) / "corpus.jsonl").is_file() or not (Path(args.model) / "config.json").is_file():
        print(f"error: needs {args.data}/corpus.jsonl and {args.model}/config.json", file=sys.stderr)
        return 1

    from searchr3.data.beir import load_beir
    from searchr3.eval.metrics import compute_metrics
    from searchr3.model.embedder import Embedder

    print(describe())
    rs = load_beir(args.data, "test")
    qids = sorted(rs.queries)[:args.queries]
    relevant = sorted({d for q in qids for d in rs.qrels[q]})
    others = sorted(set(rs.corpus) - set(relevant))
    doc_ids = relevant + random.Random(0).sample(others, max(0, args.docs - len(relevant)))
    qrels = {q: rs.qrels[q] for q in qids}
    print(f"{len(qids)} queries, {len(doc_ids)} documents ({len(relevant)} relevant), max_doc_tokens {args.max_doc_tokens}")

    results, vectors = {}, {}
    for precision in args.precisions:
        emb = Embedder.from_pretrained(args.model, precision=precision, max_doc_tokens=args.max_doc_tokens)
        for packed in (False, True):
            emb.packing = packed
            d = emb.encode_documents([rs.corpus[i] for i in doc_ids])
            q = emb.encode_queries([rs.queries[i] for i in qids]).vectors
            scores = q @ d.T
            run = {qid: {doc_ids[j]: float(scores[i, j]) for j in np.argsort(-scores[i])[:100]}
                   for i, qid in enumerate(qids)}
            name = f"{precision} {'packed' if packed else 'padded'}"
            results[name], vectors[name] = compute_metrics(qrels, run), d
    ref = vectors[f"{args.precisions[0]} padded"]
    for name, metrics in results.items():
        cos = (vectors[name] * ref).sum(1)
        print(f"{name:<12} " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
              + f" | cosine to {args.precisions[0]} padded: min {cos.min():.6f} mean {cos.mean():.6f}")
    worst = max(abs(results[f"{p} packed"][k] - results[f"{p} padded"][k])
                for p in args.precisions for k in results[f"{p} padded"])
    print(f"largest |packed - padded| metric difference at equal precision: {worst:.4f} (allowed 0.002)")
    print(f"ratio: {worst / 0.002:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
