"""nDCG@10 of the scifact-dev claims over the whole corpus and over document samples, from cached vectors.

Run in the folder where ``searchr3 evaluate --model DELTA --base BASE --dataset data/eval/scifact-dev --split dev
--cap 256`` ran (its ``cache/embeddings`` hold the corpus vectors; nothing is re-encoded: a cache miss stops):

    python sample_size.py --params PARAMS --profile docgrad_gc DELTA BASE

The whole-corpus line equals that evaluate command's nDCG@10. Metrics by ``searchr3.eval.metrics`` (ir-measures).
"""
import argparse
import random
import sys
from pathlib import Path

import numpy as np

from searchr3.config import load_params, section
from searchr3.data.beir import load_beir
from searchr3.data.bm25 import Bm25Index
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.dense import cache_key, document_embeddings
from searchr3.eval.evaluate import load_encoder
from searchr3.eval.metrics import compute_metrics
from searchr3.model.config import ModelConfig

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model")
parser.add_argument("base")
parser.add_argument("--params", default="params.yaml")
parser.add_argument("--profile", default=None)
parser.add_argument("--cap", type=int, default=256)
args = parser.parse_args()

params = load_params(args.params, args.profile)
config = section(params, "evaluate", EvaluateConfig)
encoder = load_encoder(args.model, config, section(params, "model", ModelConfig), args.cap, base=args.base)
dev = load_beir("data/eval/scifact-dev", "dev")
ids = list(dev.corpus)  # the order dense search (and so the cache) uses
texts = [dev.corpus[d] for d in ids]
if not (Path(config.cache_dir) / f"{cache_key(encoder, ids, texts)}.npy").exists():
    sys.exit(f"{config.cache_dir}: no cached vectors for this model and corpus; run the evaluate command first")
docs, _ = document_embeddings(encoder, ids, texts, config.cache_dir)
qids = sorted(dev.queries)
scores = encoder.encode_queries([dev.queries[q] for q in qids]).vectors @ docs.T


def ndcg_over(columns: list[int]) -> float:
    """nDCG@10 when only ``columns`` (corpus positions) are in the index."""
    sub = scores[:, columns]
    top = np.argsort(-sub, axis=1)[:, :100]
    run = {q: {ids[columns[j]]: float(sub[i, j]) for j in top[i]} for i, q in enumerate(qids)}
    return round(compute_metrics(dev.qrels, run)["ndcg@10"], 4)


positives = {d for q in qids for d, rel in dev.qrels[q].items() if rel > 0}
kept = [i for i, d in enumerate(ids) if d in positives]
others = [i for i, d in enumerate(ids) if d not in positives]
print(f"dev over the whole corpus ({len(ids)}):", ndcg_over(list(range(len(ids)))))
for n in (300, 1000, 2500):
    print(f"dev over {n}-document samples (3 seeds):",
          [ndcg_over(sorted(kept + random.Random(s).sample(others, n - len(kept)))) for s in range(3)])
# hard distractors: each dev claim's BM25 top-k over the same texts, then a random fill
bm25 = Bm25Index(texts)
hits, _ = bm25.retrieve(bm25.tokenize([dev.queries[q] for q in qids]), 50)
for k, n in ((2, 300), (5, 300), (5, 600), (10, 1000), (20, 1500)):
    hard = set(kept) | {int(j) for row in hits for j in row[:k]}
    rest = [i for i in range(len(ids)) if i not in hard]
    columns = sorted(hard | set(random.Random(0).sample(rest, max(0, n - len(hard)))))
    print(f"dev over positives + BM25 top-{k} ({len(hard)} documents) + random fill to {len(columns)}:",
          ndcg_over(columns))
