#!/bin/bash
# SciFact profile, run stage by stage (the index stage is skipped: evaluate encodes the same corpus)
set -eo pipefail
cd /work/scifact
export PYTHONPATH=/work/scifact PATH=/work/main/.venv/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
for s in data validate traces sft; do
  echo "=== stage $s $(date -u +%T)"
  /usr/bin/time -v searchr3 stage $s --no-progress > runlog/$s.log 2> runlog/$s.err
  grep -E "Elapsed|Maximum resident" runlog/$s.err
done
echo "=== eval sft $(date -u +%T)"
searchr3 evaluate --model models/sft --dataset data/eval/scifact-test --out runlog/eval_sft.json > runlog/eval_sft.log 2>&1
searchr3 evaluate --model models/sft --dataset data/eval/scifact-test --reasoning --out runlog/eval_sft_reasoning.json > runlog/eval_sft_reasoning.log 2>&1
echo "=== stage rl $(date -u +%T)"
/usr/bin/time -v searchr3 stage rl --no-progress > runlog/rl.log 2> runlog/rl.err
grep -E "Elapsed|Maximum resident" runlog/rl.err
echo "=== eval rl $(date -u +%T)"
searchr3 evaluate --model models/rl --dataset data/eval/scifact-test --reasoning --out runlog/eval_rl_reasoning.json > runlog/eval_rl_reasoning.log 2>&1
searchr3 evaluate --model models/rl --dataset data/eval/scifact-test --out runlog/eval_rl.json > runlog/eval_rl.log 2>&1
echo "=== done $(date -u +%T)"
