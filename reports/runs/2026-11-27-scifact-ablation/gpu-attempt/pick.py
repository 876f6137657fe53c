"""Scratch: pick the ablation with the best scifact-dev nDCG@10; write profile `final` (traces on, full evaluation)."""
import copy, glob, json, os, sys, yaml
out = sys.argv[1]; P_PATH = os.path.join(os.path.dirname(__file__), "params.yaml")
score = {}
for f in glob.glob(os.path.join(out, "a_*.dev.json")):
    d = json.load(open(f)); name = os.path.basename(f).split(".")[0]
    score[name] = d.get("ndcg@10") or d.get("metrics", {}).get("ndcg@10")
score = {k: v for k, v in score.items() if v is not None}
win = max(score, key=score.get) if score else "a_only"
print(json.dumps(score), file=sys.stderr)
P = yaml.safe_load(open(P_PATH))
f = copy.deepcopy(P["profiles"][win]); f["sft"]["traces"] = "self"
f["evaluate"] = {"sets": ["scifact-dev", "scifact-test"], "gate_set": "scifact-dev",
                 "systems": ["bm25", "base", "sft", "rl", "rl+bm25"], "reasoning": ["sft", "rl"]}
P["profiles"]["final"] = f
yaml.safe_dump(P, open(P_PATH, "w"), sort_keys=False)
print(win)
