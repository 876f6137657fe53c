#!/bin/bash
# RL arm: the SFT model of a clone after `make run` (R), one stage rl with --set overrides, then dev-300 scoring
# (reasoning and direct).  usage: arm.sh NAME [--set rl.KEY=VALUE ...]
set -euo pipefail
R=${R:-/work/run30/searchr3}; OUT=${OUT:-/work/rla}; cd $R
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 DVC_STUDIO_OFFLINE=1 PREFECT_HOME=$PWD/.prefect
name=$1; shift
A=$OUT/arm-$name; rm -rf $A; mkdir -p $A/models
ln -sfn $R/models/sft $A/models/sft; ln -sfn $R/data $A/data
date; (cd $A && /usr/bin/time -f "rl $name: %e s %M KB" $R/bin/searchr3 --params $R/params.yaml "$@" stage rl --no-progress) > $A/rl.log 2>&1
tail -1 $A/rl.log
for r in --reasoning ""; do
  $R/bin/searchr3 --params $R/params.yaml evaluate --model $A/models/rl --dataset data/eval/codesearch-dev --split dev --cap 256 $r --out $OUT/dev-$name$r.json 2>&1 | grep -v "Warn\|Loading\|it/s" | tail -2
done
date
