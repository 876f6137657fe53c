#!/bin/bash
# SciFact lever ablation, shortened (32 SFT steps, direct only, dev = SFT's dev check: 100 scifact-dev claims over a
# 300-document sample). Usage: run.sh NAME...   (under flock /work/cpu.lock)
set -uo pipefail
A=/work/sfabl; S=/work/main/.venv/bin/searchr3
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false DVC_NO_ANALYTICS=1
for NAME in "$@"; do
  R=$A/runs/$NAME; rm -rf $R; mkdir -p $R/models; cd $R
  ln -s /work/idle_after/searchr3/models/base models/base
  case $NAME in mix) ln -s /work/gpu_data/mix/data data;; *) ln -s /work/gpu_data/only/data data;; esac
  echo "== sft $NAME $(date -u +%T)"
  /usr/bin/time -v $S --params $A/params.yaml --profile $NAME stage sft --no-progress > sft.log 2> sft.err || { tail -20 sft.err; continue; }
  grep -E "Elapsed|Maximum resident" sft.err
  cp metrics/sft.json $A/$NAME.sft.json; python3 -c "import json;d=json.load(open('$A/$NAME.sft.json'));print({k:d[k] for k in ('best_step','dev_ndcg@10','base_dev_ndcg@10','train_rows','wall_s')})"
  rm -rf models/sft checkpoints
done
echo "== done $(date -u +%T)"
