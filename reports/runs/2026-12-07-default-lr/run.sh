#!/bin/bash
# Issue 14 (code-search half): the SFT learning rate on the default profile. Arms from the same base model, data
# and trace candidates, each the `sft` stage in its own folder with one `--set`: lr 2e-4 (the default until this
# run), 4e-4, 8e-4, and 4e-4 with the embed token's row kept at its old rate (token_lr_scale 25: 4e-4 x 25 = 2e-4 x 50).
# Every SFT model is scored on codesearch-dev (300 queries over 500 functions: picks) and codesearch-test (200 over
# 1,000: reported), direct and with reasoning, at the 256-token cap; MiniLM and BM25 by the same harness on the same
# build; the default RL stage on top of the 2e-4, 4e-4 and 8e-4 models. Two arms ran at a time, one thread each (OMP_NUM_THREADS=1),
# on 2 cores without native bf16 (fp32); about 2 h in all. Run from the root of a clone after `make install`
# (the code-search set depends on the Python that builds it: this run's was 3.11.7, 2,290 training pairs).
set -euo pipefail
# (`params.yaml` says lr 8e-4 from this run on; each arm names its lr, so the script runs the same either way)
HERE=reports/runs/2026-12-07-default-lr
for s in base_model sources data validate traces; do bin/searchr3 stage $s --no-progress; done
run_arm() {  # NAME --set ...: the SFT stage in arm-NAME/ (shares models/base, data/ and the trace candidates)
  local A=arm-$1; shift
  mkdir -p $A/models $A/traces
  ln -sfn ../../models/base $A/models/base; ln -sfn ../data $A/data; ln -sfn ../../traces/traces.jsonl $A/traces/traces.jsonl
  (cd $A && ../bin/searchr3 --params ../params.yaml "$@" stage sft --no-progress)
  cp $A/metrics/sft.json $HERE/sft-${A#arm-}.json
  cp $A/dvclive/sft/plots/metrics/dev/ndcg@10.tsv $HERE/sft-${A#arm-}-dev-checks.tsv   # the stage's sample dev check
}
score() {  # ARM STAGE: models/STAGE of arm-ARM on dev and test, direct and with reasoning
  for split in dev test; do for r in "" --reasoning; do
    bin/searchr3 evaluate --model arm-$1/models/$2 --dataset data/eval/codesearch-$split --split $split --cap 256 $r \
      --out $HERE/$2-$1-$split${r:+-reasoning}.json
  done; done
}
run_arm ctl --set sft.lr=2e-4
run_arm lr4 --set sft.lr=4e-4
run_arm lr8 --set sft.lr=8e-4
run_arm lr4tok25 --set sft.lr=4e-4 --set sft.token_lr_scale=25
for a in ctl lr4 lr8 lr4tok25; do score $a sft; done
for a in ctl lr4 lr8; do   # the default RL stage (12 steps) on top of each learning rate's SFT model
  (cd arm-$a && ../bin/searchr3 --params ../params.yaml stage rl --no-progress)
  cp arm-$a/metrics/rl.json $HERE/rl-$a.json
  score $a rl
done
for m in minilm bm25; do for split in dev test; do
  bin/searchr3 evaluate --model $m --dataset data/eval/codesearch-$split --split $split --cap 256 --out $HERE/$m-$split.json
done; done
rows=""
for a in ctl lr4 lr8 lr4tok25; do for split in dev test; do
  rows="$rows codesearch-$split:sft-$a=sft-$a-$split.json codesearch-$split:sft-$a+reasoning=sft-$a-$split-reasoning.json"
done; done
for a in ctl lr4 lr8; do for split in dev test; do
  rows="$rows codesearch-$split:rl-$a=rl-$a-$split.json codesearch-$split:rl-$a+reasoning=rl-$a-$split-reasoning.json"
done; done
for m in minilm bm25; do rows="$rows codesearch-dev:$m=$m-dev.json codesearch-test:$m=$m-test.json"; done
python3 reports/runs/metrics_json.py $HERE $rows
