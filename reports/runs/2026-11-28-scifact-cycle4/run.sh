#!/bin/bash
# Issue 14: a FOURTH cycle of 48 SFT steps on top of the third-cycle model of ../2026-11-28-scifact-tau02, nothing
# changed but the seed: the same `docgrad_gc48` recipe at tau 0.02 (SciFact train alone, LoRA r16, documents with
# gradient + gradient checkpointing, one BM25 negative, batch 16, documents at 256 tokens), a fresh LoRA, warm-up +
# cosine again, seed 3. So cycle 3 -> cycle 4 is one more epoch at a fixed temperature. Scored on the whole SciFact
# corpus at the 256-token cap in fp32, like every earlier row, then fused with BM25 (--hybrid). Run from the root of
# a clone after ../2026-11-28-scifact-48/run.sh (it leaves models/base and data/). About 41 min (SFT, bf16 autocast
# on a CPU with native bf16) + 40 min (scoring) on 2 cores.
set -euo pipefail
HERE=reports/runs/2026-11-28-scifact-cycle4
python3 reports/runs/2026-11-27-scifact-ablation/make_params.py params.yaml /tmp/scifact-cycle4-params.yaml \
  --sft seed=3 --sft temperature=0.02 --score /tmp/scifact-cycle4-score-params.yaml   # scoring in fp32, as every row
S="bin/searchr3 --params /tmp/scifact-cycle4-params.yaml --profile docgrad_gc48"
E="bin/searchr3 --params /tmp/scifact-cycle4-score-params.yaml --profile docgrad_gc48"
# this cycle's base: the 96-step model rebuilt from its committed delta (weights sha256 4077335197ef), then the
# third cycle's delta on it (weights sha256 5fd33ed8aa4c)
$S model apply reports/runs/2026-11-28-scifact-96/delta --base models/base --out models/scifact-96
$S model apply reports/runs/2026-11-28-scifact-tau02/delta --base models/scifact-96 --out cycle4/models/base
ln -sfn ../data cycle4/data
(cd cycle4 && ../$S stage sft --no-progress)   # cycle4/models/sft, cycle4/metrics/sft.json (dev at 16, 32, 48)
cp cycle4/metrics/sft.json $HERE/sft.json
$S model delta cycle4/models/sft --base cycle4/models/base --out $HERE/delta   # rank 16: this cycle's LoRA only
for split in dev test; do
  data=data/eval/scifact-dev; [ $split = test ] && data=../shared/data/scifact
  $E evaluate --model $HERE/delta --base cycle4/models/base --dataset $data --split $split --cap 256 \
     --out $HERE/sft-$split-256.json                                  # dev encodes the corpus (40 min); test: cached
  $E evaluate --model $HERE/delta --base cycle4/models/base --dataset $data --split $split --cap 256 --hybrid \
     --out $HERE/hybrid-$split-256.json                               # reciprocal-rank fusion with BM25, k = 60
done
python3 reports/runs/metrics_json.py $HERE scifact-dev:sft=sft-dev-256.json scifact-dev:sft+bm25=hybrid-dev-256.json \
  scifact-test:sft=sft-test-256.json scifact-test:sft+bm25=hybrid-test-256.json   # baselines: ../2026-11-27-scifact
