#!/bin/bash
# Issues 13/14: documents with gradient at 96 steps, without and with bare reasoning rows (share 0.5), from the same
# base, data and traces as ../2026-11-28-default-levers (whose run.sh trains the earlier arms: arm-48 ... arm-s192)
# and ../2026-11-28-bare-reasoning (arm-s96-bare); every arm scored on the 300-query codesearch-dev (picks) and the
# new arms on codesearch-test (reported), direct and with reasoning, at the 256-token cap. Run from the root of a
# clone after `make install` (the data stage builds the 300-query dev since 0ad3176); about 55 min on 2 cores
# with native bf16 (SFT 21 min each).
set -euo pipefail
HERE=reports/runs/2026-11-28-doc-grad
for s in base_model sources data validate traces; do bin/searchr3 stage $s --no-progress; done
SFT96="--set sft.temperature=0.02 --set sft.steps=96 --set sft.eval_every=24"
run_arm() {  # NAME --set ... : the SFT stage in its own folder
  local A=arm-$1; shift
  mkdir -p $A/models $A/traces
  ln -sfn ../../models/base $A/models/base; ln -sfn ../data $A/data; ln -sfn ../../traces/traces.jsonl $A/traces/traces.jsonl
  (cd $A && ../bin/searchr3 --params ../params.yaml $SFT96 "$@" stage sft --no-progress)
  cp $A/metrics/sft.json $HERE/sft-${A#arm-}.json
  cp $A/dvclive/sft/plots/metrics/dev/ndcg@10.tsv $HERE/sft-${A#arm-}-dev-checks.tsv
}
score() {  # FOLDER SPLIT TAG [--reasoning] [NAME]: FOLDER/models/sft, written as sft-NAME-TAG-256[-reasoning].json
  bin/searchr3 evaluate --model $1/models/sft --dataset data/eval/codesearch-$2 --split $2 --cap 256 ${4:-} \
    --out $HERE/sft-${5:-${1#arm-}}-$3-256${4:+-reasoning}.json
}
run_arm s96-dg --set sft.doc_grad=true --set sft.bare_reasoning_share=0.0
run_arm s96-dg-bare --set sft.doc_grad=true --set sft.bare_reasoning_share=0.5
for arm in s96-dg s96-dg-bare; do
  for r in "" --reasoning; do score arm-$arm dev dev300 "$r"; score arm-$arm test test "$r"; done
done
# the earlier arms' models (trained by the two folders' run.sh into arm-<name>/) on the 300-query dev
# (folder:name) ../2026-11-28-default-tau's 48-step tau-0.02 arm, the levers' arms, the bare-reasoning arm
for pair in arm0.02:48 arm-dg:dg48 arm-s96:s96 arm-s144:s144 arm-s192:s192 arm-bare:s96-bare; do
  score ${pair%%:*} dev dev300 "" ${pair#*:}
done
for pair in arm-s96:s96 arm-bare:s96-bare; do score ${pair%%:*} dev dev300 --reasoning ${pair#*:}; done
for m in minilm bm25; do
  bin/searchr3 evaluate --model $m --dataset data/eval/codesearch-dev --split dev --cap 256 --out $HERE/$m-dev300-256.json
done
