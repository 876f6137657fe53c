#!/bin/bash
# Issue 13 on SciFact: GRPO (the `rl` stage, the scifact profile's RL settings: 20 steps of 4 claims x 4 samples,
# a live index of 1,000 abstracts, lr 3e-4, lambda_trace_nce 1.0) on top of the SciFact model dev picked
# (../2026-11-28-scifact-tau02: 144 SFT steps, dev 0.6423 / test 0.5614 in fp32); the RL model scored direct and with
# reasoning on the 100 dev claims and the 300 test claims over the whole corpus (5,183 abstracts at 256 tokens), in
# fp32 like every earlier SciFact row (this session's CPU has no native bf16: `auto` is fp32 too); SFT against RL on
# a 1,000-abstract sample (below). About 26 min (RL) + 55 min (whole corpus) + 30 min (sample) + 63 min (the SFT model over the whole corpus) on 2 cores.
# Run from the root of a clone (after `make install`) with SciFact at ../shared/data/scifact.
set -euo pipefail
HERE=reports/runs/2026-12-07-scifact-rl
python3 reports/runs/2026-11-27-scifact-ablation/make_params.py params.yaml /tmp/scifact-ablation-params.yaml
S="bin/searchr3 --params /tmp/scifact-ablation-params.yaml --profile docgrad_gc48"
$S stage base_model                      # models/base
$S stage data                            # data/: SciFact train minus the 100 dev claims, BM25 negatives, dev/test sets
# the picked SFT model: the 96-step delta on the base, then the third cycle's delta on that
$S model apply reports/runs/2026-11-28-scifact-96/delta --base models/base --out models/scifact-96
$S model apply reports/runs/2026-11-28-scifact-tau02/delta --base models/scifact-96 --out sfrl/models/sft
ln -sfn ../data sfrl/data
# probe_every 0 and no final refresh: both are measurement / index output only (the weights do not depend on them); with
# the profile's probe_every 10 the first try spent 29 min of its first step re-encoding the 1,000-document index
(cd sfrl && /usr/bin/time -v ../$S --set index.refresh.probe_every=0 --set rl.final_refresh=false stage rl --no-progress) \
  2> $HERE/rl-time.txt                                                  # sfrl/models/rl, sfrl/metrics/rl.json
cp sfrl/metrics/rl.json $HERE/rl.json
$S model delta sfrl/models/rl --base sfrl/models/sft --out $HERE/delta        # the RL LoRA only, against the SFT model
E="$S evaluate --cap 256 --precision fp32"
# the RL model on the whole corpus (38-48 min to encode it on 2 cores, then every row from the cached vectors)
$E --model sfrl/models/rl --dataset data/eval/scifact-dev --split dev --out $HERE/rl-dev.json
$E --model sfrl/models/rl --dataset data/eval/scifact-dev --split dev --reasoning --out $HERE/rl-dev-reasoning.json
$E --model sfrl/models/rl --dataset ../shared/data/scifact --split test --out $HERE/rl-test.json
$E --model sfrl/models/rl --dataset ../shared/data/scifact --split test --reasoning --out $HERE/rl-test-reasoning.json
# SFT and RL, direct and with reasoning, on the test claims over a 1,000-abstract sample (every judged abstract + random)
.venv/bin/python $HERE/make_sample.py ../shared/data/scifact sample/scifact-test-1k
for m in sft rl; do
  $E --model sfrl/models/$m --dataset sample/scifact-test-1k --split test --reasoning --out $HERE/$m-test1k-reasoning.json
  $E --model sfrl/models/$m --dataset sample/scifact-test-1k --split test --out $HERE/$m-test1k.json
done
# the SFT model over the whole corpus (a later session: one 63-min run that encodes it, then every row from the cached vectors; the
# direct rows repeat ../2026-11-28-scifact-tau02/sft-{dev,test}-256.json, same weights, sha256 5fd33ed8aa4c)
/usr/bin/time -v $E --model sfrl/models/sft --dataset ../shared/data/scifact --split test --reasoning \
  --out $HERE/sft-test-reasoning.json 2> /tmp/sft-test-reasoning-time.txt
sed -n '/Command being timed/,$p' /tmp/sft-test-reasoning-time.txt > $HERE/sft-test-reasoning-time.txt   # without the progress bars
$E --model sfrl/models/sft --dataset ../shared/data/scifact --split test --out $HERE/sft-test.json
$E --model sfrl/models/sft --dataset data/eval/scifact-dev --split dev --reasoning --out $HERE/sft-dev-reasoning.json
$E --model sfrl/models/sft --dataset data/eval/scifact-dev --split dev --out $HERE/sft-dev.json
python3 reports/runs/metrics_json.py $HERE \
  scifact-dev:sft=sft-dev.json scifact-dev:sft+reasoning=sft-dev-reasoning.json \
  scifact-dev:rl=rl-dev.json scifact-dev:rl+reasoning=rl-dev-reasoning.json \
  scifact-test:sft=sft-test.json scifact-test:sft+reasoning=sft-test-reasoning.json \
  scifact-test:rl=rl-test.json scifact-test:rl+reasoning=rl-test-reasoning.json \
  scifact-test-1k:sft=sft-test1k.json scifact-test-1k:sft+reasoning=sft-test1k-reasoning.json \
  scifact-test-1k:rl=rl-test1k.json scifact-test-1k:rl+reasoning=rl-test1k-reasoning.json
