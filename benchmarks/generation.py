"""Reasoning generation: transformers' generate (the default) vs searchr3.model.generation.decode.

Both sides get the same reasoning prompts (the model's reasoning template around a seeded sample of
SciFact test queries, ../shared/data/scifact), left-padded batches of 1, 8 and 32, the same stop set
(the embed token and EOS), the same length cap (model.max_new_tokens) and greedy decoding, and both use
a KV cache:

  generate  model.generate(do_sample=False, eos_token_id=stop, pad_token_id=pad): every row stays in the
            batch until the last one stops, plus its per-step logits-processor/stopping machinery;
  ours      decode(): a row that emits a stop token leaves the batch and the cache the same step.

Speed is reasoning tokens/s: generated tokens up to and including each row's stop token (what a trace
keeps), over wall time including the prompt pass. The anchor (benchmarks/machine.py) is printed for
scale: decoding few rows is bound by memory bandwidth, not by the matmul rate, so its MFU is low by nature.
Greedy traces must agree (exit 1 if fewer than 95% match exactly: ties in near-equal logits may flip
when batch shapes differ).

    python benchmarks/generation.py --quick        # 8 queries at batch 1, 32 at batches 8 and 32
    python benchmarks/generation.py                # 32 queries at every batch size
    python benchmarks/generation.py --temperature 0.7 --batch-sizes 32      # sampling, as GRPO does

Ends with ``ratio: R`` (ours over generate, tokens/s, all batch sizes together).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from machine import describe, linear_flops_per_token, matmul_rate, missing_inputs

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "base"), help="model folder (default: models/base)")
    p.add_argument("--data", default=str(SCIFACT), help="BEIR folder (default: ../shared/data/scifact)")
    p.add_argument("--queries", type=int, default=32, help="queries per batch size (default: 32)")
    p.add_argument("--quick", action="store_true", help="only 8 queries at batch 1")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--max-new-tokens", type=int, default=None, help="length cap (default: model.max_new_tokens)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def hf_generate(emb, prompts, stop, max_new, temperature):
    from searchr3.model.padding import pad_batch

    ids, mask, _ = pad_batch(prompts, emb.pad_id, "left", emb.device)
    kwargs = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else dict(do_sample=False)
    out = emb.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, eos_token_id=sorted(stop),
                             pad_token_id=emb.pad_id, **kwargs)
    return [until_stop(row[ids.shape[1]:].tolist(), stop) for row in out]


def until_stop(ids: list[int], stop: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in stop:
            return ids[:i + 1]
    return ids


def run(fn, emb, prompts, batch_size, stop, max_new, temperature):
    import torch

    out: list[list[int]] = []
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(prompts), batch_size):
            out += fn(emb, prompts[s:s + batch_size], stop, max_new, temperature)
    return out, time.perf_counter() - start


def ours_decode(emb, prompts, stop, max_new, temperature):
    from searchr3.model.generation import decode

    return decode(emb.model, prompts, emb.pad_id, stop, max_new, temperature)


def main(argv=None) -> int:
    args = parse_args(argv)
    data, model_dir = Path(args.data), Path(args.model)
    if missing_inputs(data, "queries.jsonl", model_dir):
        return 1

    import torch

    from searchr3.data.beir import load_beir
    from searchr3.model.embedder import Embedder

    print(describe())
    queries = list(load_beir(data, "test").queries.values())
    queries = random.Random(args.seed).sample(queries, min(args.queries, len(queries)))
    emb = Embedder.from_pretrained(str(model_dir))
    prompts = emb.tokenize_reasoning_prompts(queries)
    stop = emb.eos_ids | {emb.embed_token_id}
    max_new = args.max_new_tokens or emb.config.max_new_tokens
    config = emb.model.config
    anchor = matmul_rate(config, 512, emb.model.dtype)
    print(f"model {model_dir} | {str(emb.model.dtype).removeprefix('torch.')} | {len(queries)} SciFact test queries "
          f"(prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens) | max_new_tokens {max_new} | "
          f"temperature {args.temperature}")
    print(f"anchor: one decoder layer's linear matmuls at 512 tokens: {anchor:.0f} GFLOP/s "
          f"({str(emb.model.dtype).removeprefix('torch.')})")
    run(ours_decode, emb, prompts[:2], 2, stop, 4, 0.0)  # warm-up
    run(hf_generate, emb, prompts[:2], 2, stop, 4, 0.0)

    per_token = linear_flops_per_token(config, lm_head=True)
    print(f"{'batch':>5} {'path':<9} {'queries':>7} {'tokens':>6} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU':>6} "
          f"{'vs generate':>11} {'seconds':>8} {'stopped':>7}")
    totals = {"generate": [0, 0.0], "ours": [0, 0.0]}
    agree = compared = 0
    for bs in args.batch_sizes:
        n = 8 if args.quick and bs == 1 else len(prompts)
        subset = prompts[:n]
        results = {}
        for name, fn in (("generate", hf_generate), ("ours", ours_decode)):
            torch.manual_seed(args.seed)
            out, seconds = run(fn, emb, subset, bs, stop, max_new, args.temperature)
            results[name] = (out, seconds)
        base_rate = None
        for name, (out, seconds) in results.items():
            tokens = sum(len(g) for g in out)
            # linear layers (+ LM head) per generated token and per prompt token; attention is small at these lengths
            flops = per_token * tokens + linear_flops_per_token(config) * sum(map(len, subset))
            rate = tokens / seconds
            base_rate = base_rate or rate
            stopped = sum(1 for g in out if g and g[-1] in stop)
            print(f"{bs:>5} {name:<9} {n:>7} {tokens:>6} {rate:>9.1f} {flops / seconds / 1e9:>8.1f} "
                  f"{flops / seconds / 1e9 / anchor:>6.1%} {rate / base_rate:>10.2f}x {seconds:>8.1f} {stopped:>7}")
            totals[name][0] += tokens
            totals[name][1] += seconds
        if args.temperature == 0:
            agree += sum(a == b for a, b in zip(results["generate"][0], results["ours"][0]))
            compared += n
    if compared:
        print(f"greedy traces identical to generate's: {agree} of {compared}")
        if agree < 0.95 * compared:
            print("error: ours and generate disagree on greedy traces; the comparison is void", file=sys.stderr)
            return 1
    ratio = (totals["ours"][0] / totals["ours"][1]) / (totals["generate"][0] / totals["generate"][1])
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
