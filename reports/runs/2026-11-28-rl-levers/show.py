"""Print each arm's dev nDCG@10 (and emission) from the dev-*.json beside this file."""
import glob
import json
from pathlib import Path

for f in sorted(glob.glob(str(Path(__file__).parent / "dev-*.json"))):
    d = json.load(open(f))
    print(f"{Path(f).name:32s} ndcg@10 {d['ndcg@10']:.4f} emission {d.get('emission_rate', '')}")
