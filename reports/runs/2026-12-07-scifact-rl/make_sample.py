"""A SciFact test folder over a 1,000-abstract sample (BEIR layout): every abstract judged for a test claim plus
seeded random others. For a paired comparison of two models when encoding the whole corpus twice does not fit.

    make_sample.py SCIFACT_DIR OUT_DIR [--docs 1000] [--seed 0]
"""
import argparse, json, random
from pathlib import Path

args = argparse.ArgumentParser()
args.add_argument("src", type=Path); args.add_argument("out", type=Path)
args.add_argument("--docs", type=int, default=1000); args.add_argument("--seed", type=int, default=0)
args = args.parse_args()
qrels = (args.src / "qrels" / "test.tsv").read_text().splitlines()
judged = {line.split("\t")[1] for line in qrels[1:] if line.strip()}
corpus = [json.loads(line) for line in (args.src / "corpus.jsonl").read_text().splitlines() if line.strip()]
others = sorted(d["_id"] for d in corpus if d["_id"] not in judged)
keep = judged | set(random.Random(args.seed).sample(others, max(0, args.docs - len(judged))))
(args.out / "qrels").mkdir(parents=True, exist_ok=True)
with open(args.out / "corpus.jsonl", "w") as out:
    for d in corpus:
        if d["_id"] in keep:
            out.write(json.dumps(d) + "\n")
(args.out / "queries.jsonl").write_text((args.src / "queries.jsonl").read_text())
(args.out / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
print(f"{args.out}: {len(keep)} abstracts ({len(judged)} judged for test claims), seed {args.seed}")
