#!/bin/bash
# Issue 14: the picked SciFact model (the third cycle of ../2026-11-28-scifact-tau02) fused with BM25 by
# reciprocal-rank fusion (k = 60; `evaluate --hybrid`, the pipeline's `<system>+bm25`), beside MiniLM fused the same
# way and the dev-split baselines, all by the same harness on the whole SciFact corpus at the 256-token cap, fp32.
# Run from the root of a clone after ../2026-11-28-scifact-tau02/run.sh (it leaves cycle3/models/base, the third
# cycle's base, and data/). About 12 minutes on 2 cores when that run's document vectors are cached (MiniLM encodes
# the corpus once, for dev; test reads the cache).
set -euo pipefail
HERE=reports/runs/2026-11-28-scifact-hybrid
python3 reports/runs/2026-11-27-scifact-ablation/make_params.py params.yaml /tmp/scifact-hybrid-params.yaml \
  --score /tmp/scifact-hybrid-score-params.yaml                     # scoring in fp32, as every SciFact row
E="bin/searchr3 --params /tmp/scifact-hybrid-score-params.yaml --profile docgrad_gc48"
OURS="--model reports/runs/2026-11-28-scifact-tau02/delta --base cycle3/models/base"
DEV="--dataset data/eval/scifact-dev --split dev --cap 256"
TEST="--dataset ../shared/data/scifact --split test --cap 256"
$E evaluate $OURS $DEV --hybrid --out $HERE/sft-hybrid-dev-256.json
$E evaluate $OURS $TEST --hybrid --out $HERE/sft-hybrid-test-256.json
$E evaluate --model bm25 $DEV --out $HERE/bm25-dev.json
$E evaluate --model minilm $DEV --out $HERE/minilm-dev-256.json
$E evaluate --model minilm $DEV --hybrid --out $HERE/minilm-hybrid-dev-256.json
$E evaluate --model minilm $TEST --hybrid --out $HERE/minilm-hybrid-test-256.json
python3 reports/runs/metrics_json.py $HERE scifact-dev:bm25=bm25-dev.json scifact-dev:minilm=minilm-dev-256.json \
  scifact-dev:minilm+bm25=minilm-hybrid-dev-256.json scifact-dev:sft+bm25=sft-hybrid-dev-256.json \
  scifact-test:minilm+bm25=minilm-hybrid-test-256.json scifact-test:sft+bm25=sft-hybrid-test-256.json
