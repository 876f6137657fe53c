"""Document-encoding throughput: Embedder.encode_documents (length-sorted batches) vs a naive loop.

Both sides use the same loaded model, precision, template, max length and batch size, on the same
first N SciFact documents (../shared/data/scifact). The naive loop batches documents in corpus order
and pads each batch to its longest member; encode_documents sorts by token length first, so each
batch pads less. Tokenisation is timed on both sides. One run each, after one shared warm-up batch.

    python benchmarks/encode_throughput.py                 # 1,000 documents, models/base
    python benchmarks/encode_throughput.py --quick         # 64 documents (under a minute on CPU)
    python benchmarks/encode_throughput.py --model PATH --docs 500 --precision fp32

Prints docs/s of each, padding, the max abs difference between the two sets of embeddings (they
must agree), and ends with ``ratio: X.XX`` (sorted docs/s over naive docs/s).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
QUICK_DOCS = 64


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "base"), help="model folder (default: models/base)")
    p.add_argument("--docs", type=int, default=1000, help="first N SciFact documents (default: 1000)")
    p.add_argument("--quick", action="store_true", help=f"only {QUICK_DOCS} documents")
    p.add_argument("--batch-size", type=int, default=16, help="documents per forward pass, both sides (default: 16)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="model precision (default: auto)")
    p.add_argument("--data", default=str(SCIFACT), help="BEIR folder (default: ../shared/data/scifact)")
    return p.parse_args(argv)


def padded_tokens(batches: list[list[list[int]]]) -> int:
    return sum(len(b) * max(len(ids) for ids in b) for b in batches)


def naive_encode(emb, texts: list[str], batch_size: int) -> tuple[np.ndarray, list[list[list[int]]]]:
    """Fixed batches in corpus order, each padded to its longest document."""
    ids = emb.tokenize_documents(texts)
    batches = [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
    return np.concatenate([emb.forward_embeddings(b) for b in batches]), batches


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    n_docs = QUICK_DOCS if args.quick else args.docs
    data, model = Path(args.data), Path(args.model)
    if not (data / "corpus.jsonl").is_file():
        print(f"error: SciFact not found at {data} (expected corpus.jsonl there); "
              f"this benchmark needs the shared reference data", file=sys.stderr)
        return 1
    if not (model / "config.json").is_file():
        print(f"error: no model folder at {model}; build it with `searchr3 model materialize` "
              f"or pass --model PATH", file=sys.stderr)
        return 1

    from searchr3.data.beir import load_beir
    from searchr3.model.embedder import Embedder

    texts = list(load_beir(data, "test").corpus.values())[:n_docs]
    emb = Embedder.from_pretrained(str(model), precision=args.precision, batch_size=args.batch_size)
    print(f"model {model} | dtype {emb.model.dtype} | device {emb.device} | {len(texts)} SciFact documents | "
          f"batch {args.batch_size} | max_doc_tokens {emb.config.max_doc_tokens}")

    emb.forward_embeddings(emb.tokenize_documents(texts[:args.batch_size]))  # warm-up, shared by both sides
    (naive, naive_batches), naive_s = timed(lambda: naive_encode(emb, texts, args.batch_size))
    ours, ours_s = timed(lambda: emb.encode_documents(texts, progress=True))

    ids = [ids for b in naive_batches for ids in b]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    sorted_batches = [[ids[i] for i in order[s:s + args.batch_size]] for s in range(0, len(ids), args.batch_size)]
    real = sum(len(x) for x in ids)
    print(f"{real} real tokens in {len(naive_batches)} batches")
    naive_rate, ours_rate = len(texts) / naive_s, len(texts) / ours_s
    print(f"naive loop (corpus order):        {naive_rate:8.2f} docs/s  ({naive_s:.1f} s, "
          f"{padded_tokens(naive_batches) - real} padding tokens)")
    print(f"encode_documents (length-sorted): {ours_rate:8.2f} docs/s  ({ours_s:.1f} s, "
          f"{padded_tokens(sorted_batches) - real} padding tokens)")
    diff = float(np.abs(naive - ours).max())
    tolerance = 1e-4 if emb.model.dtype.itemsize == 4 else 3e-2
    print(f"max abs diff between the two embeddings: {diff:.2e} (tolerance {tolerance:.0e} for {emb.model.dtype})")
    if diff > tolerance:
        print("error: the naive loop and encode_documents disagree; the comparison is void", file=sys.stderr)
        return 1
    print(f"ratio: {ours_rate / naive_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
