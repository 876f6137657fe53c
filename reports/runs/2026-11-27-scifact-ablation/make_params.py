"""SciFact lever ablation (shortened, CPU): profiles over the committed params.yaml.

    make_params.py MAIN_PARAMS OUT [--sft KEY=VALUE ...] [--score SCORE_OUT]

``--sft`` overrides the SFT settings of every lever profile (``--sft seed=3 --sft temperature=0.02``; values are
read as YAML); ``--score`` also writes the same params with ``model.precision: fp32`` (how every SciFact row is
scored, whatever the CPU)."""
import argparse, copy, yaml

args = argparse.ArgumentParser()
args.add_argument("main"); args.add_argument("out")
args.add_argument("--sft", action="append", default=[], metavar="KEY=VALUE")
args.add_argument("--score", default=None)
args = args.parse_args()
P = yaml.safe_load(open(args.main))
sf = P["profiles"]["scifact"]
only = copy.deepcopy(sf); only["data"]["sources"] = [sf["data"]["sources"][0]]
# temperature: the InfoNCE tau every run of these profiles used; params.yaml's default became 0.02 on 2026-11-28
SHORT = {"steps": 32, "eval_every": 16, "checkpoint_every": 16, "traces": "none", "temperature": 0.05}
levers = {
    "only":    (only, {}),
    "mix":     (sf, {}),
    "docgrad": (only, {"doc_grad": True}),
    "docgrad_gc": (only, {"doc_grad": True, "gradient_checkpointing": True}),
    "docgrad_gc48": (only, {"doc_grad": True, "gradient_checkpointing": True, "steps": 48}),  # 2026-11-28: longer
    "full":    (only, {"mode": "full", "lr": 2.0e-5}),
    "tau02":   (only, {"temperature": 0.02}),
    "neg3":    (only, {"negatives_per_query": 3}),
}
overrides = {}
for pair in args.sft:
    key, sep, value = pair.partition("=")
    if not sep:
        raise SystemExit(f"make_params.py: --sft {pair!r} is not KEY=VALUE")
    overrides[key] = yaml.safe_load(value)
for name, (base, sft) in levers.items():
    v = copy.deepcopy(base); v.setdefault("sft", {}).update(SHORT); v["sft"].update(sft); v["sft"].update(overrides)
    P["profiles"][name] = v
yaml.safe_dump(P, open(args.out, "w"), sort_keys=False)
if args.score:
    P["model"]["precision"] = "fp32"
    yaml.safe_dump(P, open(args.score, "w"), sort_keys=False)
