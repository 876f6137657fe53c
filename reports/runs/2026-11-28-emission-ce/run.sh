#!/bin/bash
# Issue 13: the default SFT (documents with gradient, bare rows 0.5, tau 0.02, 96 steps) with sft.lambda_ce 1.0
# instead of 0.5, from the same base, data and traces as ../2026-11-28-doc-grad (run from the root of a clone in
# which that folder's run.sh has run); scored direct and with reasoning on the 300-query dev and on test at cap 256.
# About 25 minutes on 2 cores with native bf16.
set -euo pipefail
HERE=reports/runs/2026-11-28-emission-ce
A=arm-ce1; mkdir -p $A/models $A/traces
ln -sfn ../../models/base $A/models/base; ln -sfn ../data $A/data; ln -sfn ../../traces/traces.jsonl $A/traces/traces.jsonl
(cd $A && ../bin/searchr3 --params ../params.yaml --set sft.temperature=0.02 --set sft.steps=96 --set sft.eval_every=24 \
  --set sft.doc_grad=true --set sft.bare_reasoning_share=0.5 --set sft.lambda_ce=1.0 stage sft --no-progress)
cp $A/metrics/sft.json $HERE/sft-ce1.json
for r in --reasoning ""; do
  for s in dev:dev300 test:test; do
    bin/searchr3 evaluate --model $A/models/sft --dataset data/eval/codesearch-${s%%:*} --split ${s%%:*} --cap 256 $r \
      --out $HERE/sft-ce1-${s#*:}-256${r:+-reasoning}.json
  done
done
