"""Document encoding: the naive loop a user writes vs Embedder.encode_documents, against the machine.

Both sides encode the same token sequences (the document template around a seeded sample of SciFact
documents, ../shared/data/scifact, truncated at 256 and at 512 tokens, so the real length mix) and
time their tokenisation too:

  naive  AutoModel.from_pretrained(dtype=float32), batches of --naive-batch documents in corpus order,
         each padded to its longest (tokenizer.pad), torch.no_grad(), the hidden state at the last token;
  ours   Embedder.from_pretrained(precision=auto): texts packed end to end, longest first, up to
         model.batch_tokens tokens per forward pass, attention per text, no padding (searchr3.model.packing).

Speed is tokens/s on real (non-padding) tokens. MFU = the model FLOPs those tokens need (linear layers
+ causal attention, benchmarks/machine.py) per second, over the machine anchor: the best rate of this
model's own linear-layer matmuls at the packed batch's token count, measured in this run for fp32 and
bf16 (the anchor is the faster of the two). --compare-dtype (on by default without --quick) also runs
ours in the dtype `auto` did not pick, with its cosine to the chosen one.

    python benchmarks/encode_throughput.py --quick         # 48 documents per length: a few minutes on 2 cores
    python benchmarks/encode_throughput.py                 # 400 documents per length, + the other dtype
    python benchmarks/encode_throughput.py --model PATH --docs 1000 --lengths 256

Prints a table and ends with one line ``ratio: R mfu: M``: ours over naive tokens/s, and ours' MFU,
both over all lengths together. Exits 1 if the two sides' embeddings disagree (cosine < 0.999 at equal
precision): the comparison would be void.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

from machine import describe, matmul_rate, missing_inputs, model_flops

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
QUICK_DOCS = 48


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "base"), help="model folder (default: models/base)")
    p.add_argument("--data", default=str(SCIFACT), help="BEIR folder (default: ../shared/data/scifact)")
    p.add_argument("--docs", type=int, default=400, help="documents per length, a seeded sample (default: 400)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_DOCS} documents per length, no dtype comparison")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512], help="max document tokens (default: 256 512)")
    p.add_argument("--naive-batch", type=int, default=16, help="naive loop: documents per batch (default: 16)")
    p.add_argument("--batch-tokens", type=int, default=None, help="ours: tokens per packed pass (default: model.batch_tokens)")
    p.add_argument("--compare-dtype", action=argparse.BooleanOptionalAction, default=None,
                   help="also run ours in the other dtype (default: on, off with --quick)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def sample_documents(data: Path, n: int, seed: int) -> list[str]:
    from searchr3.data.beir import load_beir

    corpus = list(load_beir(data, "test").corpus.values())
    return random.Random(seed).sample(corpus, min(n, len(corpus)))


def naive_encode(model, tokenizer, seqs: list[list[int]], batch_size: int) -> tuple[np.ndarray, int]:
    """The loop a user writes: fixed batches in corpus order, padded to the longest; returns (vectors, padded tokens)."""
    import torch

    out, padded = [], 0
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            batch = tokenizer.pad({"input_ids": seqs[start:start + batch_size]}, padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            last = batch["attention_mask"].sum(dim=1) - 1
            out.append(torch.nn.functional.normalize(hidden[torch.arange(len(last)), last].float(), dim=-1))
            padded += batch["input_ids"].numel()
    return torch.cat(out).numpy(), padded


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def row(name: str, dtype: str, docs: int, tokens: int, padded: int, seconds: float, flops: float, anchor: float,
        naive_rate: float | None) -> dict:
    rate = tokens / seconds
    return {"path": name, "dtype": dtype, "docs/s": docs / seconds, "tokens/s": rate,
            "padding": 1 - tokens / padded, "GFLOP/s": flops / seconds / 1e9,
            "mfu": flops / seconds / 1e9 / anchor, "vs naive": rate / naive_rate if naive_rate else 1.0, "s": seconds}


def print_table(rows: list[dict]) -> None:
    print(f"{'length':>6} {'path':<6} {'dtype':<9} {'docs/s':>7} {'tokens/s':>9} {'padding':>8} {'GFLOP/s':>8} "
          f"{'MFU':>6} {'vs naive':>8} {'seconds':>8}")
    for r in rows:
        print(f"{r['length']:>6} {r['path']:<6} {r['dtype']:<9} {r['docs/s']:>7.2f} {r['tokens/s']:>9.0f} "
              f"{r['padding']:>8.1%} {r['GFLOP/s']:>8.1f} {r['mfu']:>6.1%} {r['vs naive']:>7.2f}x {r['s']:>8.1f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    n_docs = QUICK_DOCS if args.quick else args.docs
    compare = (not args.quick) if args.compare_dtype is None else args.compare_dtype
    data, model_dir = Path(args.data), Path(args.model)
    if missing_inputs(data, "corpus.jsonl", model_dir):
        return 1

    import torch
    from transformers import AutoModel

    from searchr3.model.embedder import Embedder

    print(describe())
    texts = sample_documents(data, n_docs, args.seed)
    ours = Embedder.from_pretrained(str(model_dir))
    if args.batch_tokens:
        ours.config.batch_tokens = args.batch_tokens
    config = ours.model.config
    chosen = ours.model.dtype
    other_dtype = torch.float32 if chosen == torch.bfloat16 else torch.bfloat16
    naive_model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tokenizer = ours.tokenizer
    tokenizer.padding_side = "right"
    other = Embedder.from_pretrained(str(model_dir), precision="bf16" if other_dtype == torch.bfloat16 else "fp32") \
        if compare else None
    if other is not None:
        other.config.batch_tokens = ours.config.batch_tokens

    m = ours.config.batch_tokens
    anchors = {str(d).removeprefix("torch."): matmul_rate(config, m, d) for d in (torch.float32, torch.bfloat16)}
    anchor = max(anchors.values())
    print(f"model {model_dir} ({config.num_hidden_layers} layers, hidden {config.hidden_size}, intermediate "
          f"{config.intermediate_size}) | {len(texts)} SciFact documents per length | naive: fp32, batch "
          f"{args.naive_batch}, sdpa | ours: {str(chosen).removeprefix('torch.')} (precision auto), packed, "
          f"{m} tokens per pass")
    print("anchor: one decoder layer's linear matmuls at " + f"{m} tokens: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in anchors.items()) + f" -> MFU is over {anchor:.0f} GFLOP/s")

    warm = texts[:4]
    naive_encode(naive_model, tokenizer, ours.tokenize_documents(warm), args.naive_batch)
    ours.encode_documents(warm)
    if other is not None:
        other.encode_documents(warm)

    rows, totals = [], {"naive": [0, 0.0, 0.0], "ours": [0, 0.0, 0.0]}  # tokens, seconds, flops
    for length in args.lengths:
        for e in (ours, other):
            if e is not None:
                e.config.max_doc_tokens = length
        (naive_out, seconds) = timed(lambda: naive_encode(naive_model, tokenizer, ours.tokenize_documents(texts),
                                                          args.naive_batch))
        naive_vec, padded = naive_out
        seqs = ours.tokenize_documents(texts)
        real = sum(len(s) for s in seqs)
        flops = model_flops(config, [len(s) for s in seqs])
        naive_row = row("naive", "float32", len(texts), real, padded, seconds, flops, anchor, None)
        ours_vec, seconds = timed(lambda: ours.encode_documents(texts))
        ours_row = row("ours", str(chosen).removeprefix("torch."), len(texts), real, real, seconds, flops, anchor,
                       naive_row["tokens/s"])
        rows += [dict(naive_row, length=length), dict(ours_row, length=length)]
        for name, r in (("naive", naive_row), ("ours", ours_row)):
            totals[name][0] += real
            totals[name][1] += r["s"]
            totals[name][2] += flops
        cos = (naive_vec * ours_vec).sum(1)
        need = 0.999 if chosen == torch.float32 else 0.99
        print(f"length {length}: {real} real tokens (median document {int(np.median([len(s) for s in seqs]))}); "
              f"naive vs ours cosine min {cos.min():.6f} (need >= {need})")
        if cos.min() < need:
            print(f"error: the naive loop and ours disagree at length {length} (cosine {cos.min():.6f}); "
                  "the comparison is void", file=sys.stderr)
            return 1
        if other is not None:
            other_vec, seconds = timed(lambda: other.encode_documents(texts))
            rows.append(dict(row("ours", str(other_dtype).removeprefix("torch."), len(texts), real, real, seconds,
                                 flops, anchor, naive_row["tokens/s"]), length=length))
            cos = (other_vec * ours_vec).sum(1)
            print(f"length {length}: ours bf16 vs fp32 cosine min {cos.min():.4f} mean {cos.mean():.4f} (need >= 0.99)")

    print_table(rows)
    naive_rate = totals["naive"][0] / totals["naive"][1]
    ours_rate = totals["ours"][0] / totals["ours"][1]
    ours_mfu = totals["ours"][2] / totals["ours"][1] / 1e9 / anchor
    print(f"all lengths: naive {naive_rate:.0f} tokens/s, ours {ours_rate:.0f} tokens/s; "
          f"goals: >= 3x naive fp32, MFU >= 75%")
    print(f"ratio: {ours_rate / naive_rate:.2f} mfu: {ours_mfu:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
