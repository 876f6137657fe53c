#!/bin/bash
# Issue 14, training length, continued: a SECOND cycle of 48 SFT steps of the `docgrad_gc48` recipe on top of the
# 48-step model of ../2026-11-28-scifact-48 (its exported models/sft, LoRA merged, is this cycle's base; a fresh
# rank-16 LoRA, warm-up + cosine again, seed 1 so the batch order and the dev sample differ from the first cycle),
# then dev + test on the whole SciFact corpus at the 256-token cap through the delta against the ORIGINAL base.
# Run from the root of a clone after ../2026-11-28-scifact-48/run.sh (it leaves models/base, models/sft, data/).
# About 71 min (SFT) + 20 min (scoring) on 2 cores.
set -euo pipefail
HERE=reports/runs/2026-11-28-scifact-96
python3 reports/runs/2026-11-27-scifact-ablation/make_params.py params.yaml /tmp/scifact-ablation-params.yaml
python3 - <<'PY'   # the same profile, seed 1
import yaml
p = yaml.safe_load(open("/tmp/scifact-ablation-params.yaml"))
p["profiles"]["docgrad_gc48"]["sft"]["seed"] = 1
yaml.safe_dump(p, open("/tmp/scifact-96-params.yaml", "w"), sort_keys=False)
PY
S="bin/searchr3 --params /tmp/scifact-96-params.yaml --profile docgrad_gc48"
mkdir -p cycle2/models && ln -sfn ../../models/sft cycle2/models/base && ln -sfn ../data cycle2/data
(cd cycle2 && ../$S stage sft --no-progress)   # cycle2/models/sft, cycle2/metrics/sft.json (dev at 16, 32, 48)
cp cycle2/metrics/sft.json $HERE/sft.json
$S model delta cycle2/models/sft --base models/base --out $HERE/delta   # rank 32: both cycles' LoRA
$S evaluate --model $HERE/delta --base models/base --dataset data/eval/scifact-dev --split dev --cap 256 \
   --out $HERE/sft-dev-256.json
$S evaluate --model $HERE/delta --base models/base --dataset ../shared/data/scifact --split test --cap 256 \
   --out $HERE/sft-test-256.json                                     # the corpus vectors are cached: minutes
python3 reports/runs/metrics_json.py $HERE scifact-dev:sft=sft-dev-256.json scifact-test:sft=sft-test-256.json   # baselines: ../2026-11-27-scifact
