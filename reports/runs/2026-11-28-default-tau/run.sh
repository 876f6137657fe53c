#!/bin/bash
# Issue 14: the InfoNCE temperature alone, on the default profile (code-search). The stages up to traces once, then
# the SFT stage at sft.temperature 0.05 (the default until this run) and at 0.02 from the same base, data and
# traces, each in its own folder; each SFT model scored by the evaluation harness on codesearch-dev (picks) and
# codesearch-test (reported) at the 256-token cap. Run from the root of a clone of 8817af5 (after `make install`)
# with ../shared/data; about 32 minutes on 2 cores (SFT 7 min per arm with bf16 autocast on a CPU with native bf16).
set -euo pipefail
HERE=reports/runs/2026-11-28-default-tau
for s in base_model sources data validate traces; do bin/searchr3 stage $s --no-progress; done
for t in 0.05 0.02; do
  A=arm$t; mkdir -p $A/models $A/traces
  ln -sfn ../../models/base $A/models/base; ln -sfn ../data $A/data; ln -sfn ../../traces/traces.jsonl $A/traces/traces.jsonl
  .venv/bin/python -c "
import yaml; p = yaml.safe_load(open('params.yaml')); p['sft']['temperature'] = $t
yaml.safe_dump(p, open('/tmp/params-$t.yaml', 'w'), sort_keys=False)"
  (cd $A && ../bin/searchr3 --params /tmp/params-$t.yaml stage sft --no-progress)   # $A/models/sft, $A/metrics/sft.json
  cp $A/metrics/sft.json $HERE/sft-tau$t.json
  for split in dev test; do
    bin/searchr3 --params /tmp/params-$t.yaml evaluate --model $A/models/sft --dataset data/eval/codesearch-$split \
      --split $split --cap 256 --out $HERE/sft-tau$t-$split-256.json
  done
done
python3 reports/runs/metrics_json.py $HERE codesearch-dev:sft@tau0.05=sft-tau0.05-dev-256.json \
  codesearch-dev:sft@tau0.02=sft-tau0.02-dev-256.json codesearch-test:sft@tau0.05=sft-tau0.05-test-256.json \
  codesearch-test:sft@tau0.02=sft-tau0.02-test-256.json
