"""Write FOLDER/metrics.json, in the shape of metrics/eval.json, from the JSONs `searchr3 evaluate --out` wrote there.

    python3 reports/runs/metrics_json.py FOLDER SET:SYSTEM=FILE [SET:SYSTEM=FILE ...]
    e.g.    python3 reports/runs/metrics_json.py reports/runs/X scifact-dev:sft=sft-dev-256.json scifact-test:sft=sft-test-256.json

Each row keeps the metric fields (split, cap, queries, nDCG@10, Recall@100, MRR@10 and, for reasoning rows, the
emission figures) in the order the file has them; sets and systems in the order given."""
import json
import sys

KEYS = ("split", "cap", "queries", "ndcg@10", "recall@100", "mrr@10", "fallbacks", "emission_rate",
        "mean_reasoning_tokens")


def main(folder: str, *rows: str) -> None:
    out: dict[str, dict] = {}
    for spec in rows:
        where, _, name = spec.partition("=")
        dataset, _, system = where.partition(":")
        if not (name and dataset and system):
            sys.exit(f"metrics_json.py: {spec!r} is not SET:SYSTEM=FILE")
        result = json.load(open(f"{folder}/{name}"))
        out.setdefault(dataset, {})[system] = {k: v for k, v in result.items() if k in KEYS}
    json.dump(out, open(f"{folder}/metrics.json", "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
