#!/bin/bash
# Issue 14: a THIRD cycle of 48 SFT steps on top of the 96-step model of ../2026-11-28-scifact-96, with one lever
# changed: InfoNCE temperature 0.02 (was 0.05). The same `docgrad_gc48` recipe otherwise (SciFact train alone, LoRA
# r16, documents with gradient + gradient checkpointing, one BM25 negative, batch 16, documents at 256 tokens),
# a fresh LoRA, warm-up + cosine again, seed 2. Scored on the whole SciFact corpus at the 256-token cap in fp32,
# like every earlier row. Run from the root of a clone after ../2026-11-28-scifact-48/run.sh (it leaves
# models/base and data/). About 46 min (SFT, bf16 autocast here) + 40 min (scoring) on 2 cores.
set -euo pipefail
HERE=reports/runs/2026-11-28-scifact-tau02
python3 reports/runs/2026-11-27-scifact-ablation/make_params.py params.yaml /tmp/scifact-ablation-params.yaml
python3 - <<'PY'
import yaml
p = yaml.safe_load(open("/tmp/scifact-ablation-params.yaml"))
p["profiles"]["docgrad_gc48"]["sft"].update(seed=2, temperature=0.02)
yaml.safe_dump(p, open("/tmp/scifact-tau02-params.yaml", "w"), sort_keys=False)
p["model"]["precision"] = "fp32"   # scoring: fp32 whatever the CPU, as the earlier rows
yaml.safe_dump(p, open("/tmp/scifact-tau02-score-params.yaml", "w"), sort_keys=False)
PY
S="bin/searchr3 --params /tmp/scifact-tau02-params.yaml --profile docgrad_gc48"
E="bin/searchr3 --params /tmp/scifact-tau02-score-params.yaml --profile docgrad_gc48"
# the 96-step model as this cycle's base: its committed delta rebuilt on models/base (weights sha256 4077335197ef)
$S model apply reports/runs/2026-11-28-scifact-96/delta --base models/base --out cycle3/models/base
ln -sfn ../data cycle3/data
(cd cycle3 && ../$S stage sft --no-progress)   # cycle3/models/sft, cycle3/metrics/sft.json (dev at 16, 32, 48)
cp cycle3/metrics/sft.json $HERE/sft.json
$S model delta cycle3/models/sft --base cycle3/models/base --out $HERE/delta   # rank 16: this cycle's LoRA only
$E evaluate --model $HERE/delta --base cycle3/models/base --dataset data/eval/scifact-dev --split dev --cap 256 \
   --out $HERE/sft-dev-256.json
$E evaluate --model $HERE/delta --base cycle3/models/base --dataset ../shared/data/scifact --split test --cap 256 \
   --out $HERE/sft-test-256.json                                     # the corpus vectors are cached: a minute
python3 reports/runs/metrics_json.py $HERE scifact-dev:sft=sft-dev-256.json scifact-test:sft=sft-test-256.json   # baselines: ../2026-11-27-scifact
