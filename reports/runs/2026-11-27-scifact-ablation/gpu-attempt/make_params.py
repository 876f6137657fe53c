"""Scratch: params for the GPU SciFact ablation (profiles over the committed params.yaml)."""
import copy, yaml, sys
P = yaml.safe_load(open("params.yaml"))
sf = P["profiles"]["scifact"]
only = copy.deepcopy(sf); only["data"]["sources"] = [sf["data"]["sources"][0]]
prof = {"sfmix": copy.deepcopy(sf), "sfonly": only}
def variant(base, **over):
    v = copy.deepcopy(prof[base])
    for dotted, val in over.items():
        d = v
        *path, last = dotted.split("__")
        for k in path: d = d.setdefault(k, {})
        d[last] = val
    return v
abl = {
  "a_mix":      ("sfmix", {}),
  "a_only":     ("sfonly", {}),
  "a_docgrad":  ("sfonly", {"sft__doc_grad": True}),
  "a_full":     ("sfonly", {"sft__mode": "full", "sft__lr": 2.0e-5}),
  "a_neg3":     ("sfonly", {"sft__negatives_per_query": 3}),
  "a_tau02":    ("sfonly", {"sft__temperature": 0.02}),
  "a_epochs":   ("sfonly", {"sft__steps": 480, "sft__eval_every": 80}),
  "a_all":      ("sfonly", {"sft__doc_grad": True, "sft__mode": "full", "sft__lr": 2.0e-5,
                            "sft__negatives_per_query": 3, "sft__steps": 480, "sft__eval_every": 80}),
}
for name, (base, over) in abl.items():
    v = variant(base, **over); v.setdefault("sft", {})["traces"] = "none"
    prof[name] = v
tiny = copy.deepcopy(P["profiles"]["tiny"])
tiny["model"]["precision"] = "auto"; tiny["sft"]["precision"] = "auto"; tiny["rl"]["precision"] = "auto"
tiny["evaluate"]["systems"] = ["bm25", "base", "sft", "rl", "rl+bm25"]
prof["tinygpu"] = tiny
P["profiles"].update(prof)
yaml.safe_dump(P, open(sys.argv[1], "w"), sort_keys=False)
print(sorted(prof))
