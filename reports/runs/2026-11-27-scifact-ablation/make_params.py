"""SciFact lever ablation (shortened, CPU): profiles over the committed params.yaml. Usage: make_params.py MAIN_PARAMS OUT"""
import copy, sys, yaml
P = yaml.safe_load(open(sys.argv[1]))
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
for name, (base, sft) in levers.items():
    v = copy.deepcopy(base); v.setdefault("sft", {}).update(SHORT); v["sft"].update(sft)
    P["profiles"][name] = v
yaml.safe_dump(P, open(sys.argv[2], "w"), sort_keys=False)
