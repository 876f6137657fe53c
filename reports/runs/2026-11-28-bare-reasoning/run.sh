#!/bin/bash
# Issue 13: reasoning rows with an empty trace (sft.bare_reasoning_share 0.5) against the 96-step SFT of
# ../2026-11-28-default-levers (same base, data and traces, tau 0.02); both scored direct and with reasoning on
# codesearch-dev (picks) and codesearch-test at the 256-token cap; MiniLM beside them on the same data. Run from
# the root of a clone (after `make install`) in which ../2026-11-28-default-levers/run.sh has run (its arm-s96 model,
# base, data and traces); about 30 minutes on 2 cores with native bf16.
set -euo pipefail
HERE=reports/runs/2026-11-28-bare-reasoning
A=arm-bare; mkdir -p $A/models $A/traces
ln -sfn ../../models/base $A/models/base; ln -sfn ../data $A/data; ln -sfn ../../traces/traces.jsonl $A/traces/traces.jsonl
(cd $A && ../bin/searchr3 --params ../params.yaml --set sft.temperature=0.02 --set sft.steps=96 \
  --set sft.bare_reasoning_share=0.5 stage sft --no-progress)
cp $A/metrics/sft.json $HERE/sft-bare.json
for split in dev test; do
  bin/searchr3 evaluate --model $A/models/sft --dataset data/eval/codesearch-$split --split $split --cap 256 \
    --out $HERE/sft-bare-$split-256.json
  for arm in bare s96; do
    bin/searchr3 evaluate --model arm-$arm/models/sft --dataset data/eval/codesearch-$split --split $split --cap 256 \
      --reasoning --out $HERE/sft-$arm-$split-256-reasoning.json
  done
  bin/searchr3 evaluate --model minilm --dataset data/eval/codesearch-$split --split $split --cap 256 \
    --out $HERE/minilm-$split-256.json
  cp reports/runs/2026-11-28-default-levers/sft-s96-$split-256.json $HERE/
done
python3 reports/runs/metrics_json.py $HERE codesearch-dev:minilm=minilm-dev-256.json \
  codesearch-dev:sft=sft-s96-dev-256.json codesearch-dev:sft+reasoning=sft-s96-dev-256-reasoning.json \
  codesearch-dev:sft@bare0.5=sft-bare-dev-256.json codesearch-dev:sft@bare0.5+reasoning=sft-bare-dev-256-reasoning.json \
  codesearch-test:minilm=minilm-test-256.json codesearch-test:sft=sft-s96-test-256.json \
  codesearch-test:sft+reasoning=sft-s96-test-256-reasoning.json codesearch-test:sft@bare0.5=sft-bare-test-256.json \
  codesearch-test:sft@bare0.5+reasoning=sft-bare-test-256-reasoning.json
