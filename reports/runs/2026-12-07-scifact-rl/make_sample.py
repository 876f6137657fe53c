"""A SciFact test folder over a 1,000-abstract sample (BEIR layout): every abstract judged for a test claim plus
seeded random others. For a paired comparison of two models when encoding the whole corpus twice does not fit.
Reads and writes through the project's BEIR loader (``load_beir`` / ``save_beir``); run with the project's Python:

    .venv/bin/python make_sample.py SCIFACT_DIR OUT_DIR [--docs 1000] [--seed 0]
"""
import argparse
import random

from searchr3.data.beir import load_beir, save_beir
from searchr3.data.types import RetrievalSet

args = argparse.ArgumentParser()
args.add_argument("src"); args.add_argument("out")
args.add_argument("--docs", type=int, default=1000); args.add_argument("--seed", type=int, default=0)
args = args.parse_args()
rs = load_beir(args.src, "test")
judged = {d for docs in rs.qrels.values() for d in docs}
others = sorted(d for d in rs.corpus if d not in judged)
keep = judged | set(random.Random(args.seed).sample(others, max(0, args.docs - len(judged))))
sample = RetrievalSet(name=rs.name, corpus={d: t for d, t in rs.corpus.items() if d in keep}, queries=rs.queries,
                      qrels=rs.qrels, meta=dict(rs.meta))
save_beir(sample, args.out, "test")
print(f"{args.out}: {len(sample.corpus)} abstracts ({len(judged)} judged for test claims), seed {args.seed}")
