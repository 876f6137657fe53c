#!/bin/bash
# Issue 14: two levers on the default profile (code-search) at InfoNCE tau 0.02, each against the 48-step SFT of
# ../2026-11-28-default-tau (same base, data and traces): documents with gradient (sft.doc_grad true, 48 steps) and
# twice and four times the steps (sft.steps 96 and 192, documents forward-only). Each SFT model scored by the evaluation harness on
# codesearch-dev (picks) and codesearch-test (reported) at the 256-token cap. Run from the root of a clone (after
# `make install`); about 65 minutes on 2 cores with native bf16 (SFT 12, 11 and 22 min).
set -euo pipefail
HERE=reports/runs/2026-11-28-default-levers
for s in base_model sources data validate traces; do bin/searchr3 stage $s --no-progress; done
run_arm() {  # NAME --set ... : the SFT stage in its own folder, then dev and test at cap 256
  local A=arm-$1; shift
  mkdir -p $A/models $A/traces
  ln -sfn ../../models/base $A/models/base; ln -sfn ../data $A/data; ln -sfn ../../traces/traces.jsonl $A/traces/traces.jsonl
  (cd $A && ../bin/searchr3 --params ../params.yaml --set sft.temperature=0.02 "$@" stage sft --no-progress)
  cp $A/metrics/sft.json $HERE/sft-${A#arm-}.json
  for split in dev test; do
    bin/searchr3 evaluate --model $A/models/sft --dataset data/eval/codesearch-$split --split $split --cap 256 \
      --out $HERE/sft-${A#arm-}-$split-256.json
  done
}
run_arm dg --set sft.steps=48 --set sft.doc_grad=true
run_arm s96 --set sft.steps=96 --set sft.doc_grad=false
run_arm s192 --set sft.steps=192 --set sft.doc_grad=false
run_arm s144 --set sft.steps=144 --set sft.doc_grad=false
cp arm-s144/dvclive/sft/plots/metrics/dev/ndcg@10.tsv $HERE/sft-s144-dev-checks.tsv
cp arm-s192/dvclive/sft/plots/metrics/dev/ndcg@10.tsv $HERE/sft-s192-dev-checks.tsv   # the stage's dev check every 24 steps
for split in dev test; do  # MiniLM on the same data (the code-search set depends on the interpreter's stdlib)
  bin/searchr3 evaluate --model minilm --dataset data/eval/codesearch-$split --split $split --cap 256 \
    --out $HERE/minilm-$split-256.json
done
for s in dev test; do  # the 48-step arm at tau 0.02 (run beside the 0.05 one, same base, data and traces)
  cp reports/runs/2026-11-28-default-tau/sft-tau0.02-$s-256.json $HERE/sft-48-$s-256.json; done
python3 reports/runs/metrics_json.py $HERE codesearch-dev:minilm=minilm-dev-256.json codesearch-test:minilm=minilm-test-256.json \
  codesearch-dev:sft@48=sft-48-dev-256.json \
  codesearch-dev:sft@48+doc_grad=sft-dg-dev-256.json codesearch-dev:sft@96=sft-s96-dev-256.json \
  codesearch-dev:sft@144=sft-s144-dev-256.json codesearch-dev:sft@192=sft-s192-dev-256.json \
  codesearch-test:sft@48=sft-48-test-256.json codesearch-test:sft@144=sft-s144-test-256.json \
  codesearch-test:sft@48+doc_grad=sft-dg-test-256.json codesearch-test:sft@96=sft-s96-test-256.json \
  codesearch-test:sft@192=sft-s192-test-256.json
