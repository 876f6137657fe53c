#!/bin/bash
# Issue 13 ablation: the RL stage with rl.lambda_trace_nce = 0 on the idle run's models/sft (same data, same seed),
# then rl and rl+reasoning on codesearch-test. The baseline (lambda_trace_nce 0.1) is the idle run's own rl rows.
set -uo pipefail
src=/work/idle_after/searchr3; w=/work/abl_nce
rm -rf $w && mkdir -p $w/models && cd $w
ln -s $src/models/base models/base; ln -s $src/models/sft models/sft; ln -s $src/data data
sed 's/^  lambda_trace_nce: 0.1 /  lambda_trace_nce: 0.0 /' $src/params.yaml > params.yaml
grep -n "lambda_trace_nce" params.yaml
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false
S=$src/.venv/bin/searchr3
date -u; $S stage rl --no-progress 2>&1 | grep -v "Warning\|warn" | tail -5; date -u
for r in "" "--reasoning"; do
  $S evaluate --model models/rl --dataset data/eval/codesearch-test $r --out rl$r.json 2>&1 | grep -v "it/s\|text/s\|Warning\|warn" | tail -6
done
date -u
