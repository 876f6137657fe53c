#!/bin/sh
# Score this run's models on codesearch-test (default profile): sft with reasoning, rl direct and with reasoning.
# From the repository root, after `searchr3 stage sft` and `searchr3 stage rl`, under `flock /work/cpu.lock`.
set -eu
out=reports/runs/2026-11-27-mechanism
set_dir=data/eval/codesearch-test
.venv/bin/searchr3 evaluate --model models/sft --dataset "$set_dir" --reasoning --out "$out/eval-sft+reasoning.json"
.venv/bin/searchr3 evaluate --model models/rl --dataset "$set_dir" --reasoning --out "$out/eval-rl+reasoning.json"
.venv/bin/searchr3 evaluate --model models/rl --dataset "$set_dir" --out "$out/eval-rl.json"
