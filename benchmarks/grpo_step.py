"""GRPO step: where the time goes (generation, scoring, reference, reward search, update, refresh), as it was vs ours.

One trainee is set up exactly as ``train_grpo`` sets it up (``trainer_setup.load_trainee`` with the profile's
``rl:`` section; the start model is models/base) and the step's phases are the trainer's own functions
(``searchr3.train.grpo``: rollout, score, reward, update, refresh_index), timed around each call; the score
phase is split into the policy pass and the reference pass. Two paths run in pairs of steps on the same rows
with the same sampling seed (alternating which goes first), on one trainee and one live index:

  main  the step as it was on main (``Trainee.fast = False``): generation with one prompt pass per trace,
        LoRA layers unmerged, padded scoring and update passes, the direct InfoNCE's documents encoded again;
  ours  ``Trainee.fast = True`` (what ``train_grpo`` runs): one prompt pass per group, LoRA merged for every
        pass without gradient (generation, scoring, refresh), packed passes without padding (the reference
        cut after the last generated token), the direct InfoNCE's documents read from the index when it
        holds the current policy's vectors (the previous refresh prefetched them).

Shapes: the profile's (scifact by default: 4 queries x group of 4 = 16 traces of up to model.max_new_tokens,
micro_batch 16, documents <= rl.max_doc_tokens, refresh budget and rotation of index.refresh). Data:
SciFact train queries (../shared/data/scifact) with their positives and seeded random negatives; the live
index holds --docs SciFact documents (the rows' documents + distractors). Its initial vectors are random
unit vectors at version 0 (building it with the model would take minutes and changes no phase's cost:
every vector is stale after the first update either way); the refresh then re-encodes as the run does.
The fidelity probe (a full re-encode of the index every ``probe_every`` steps) is a measurement, not
part of the step: it is left out unless --probe (then timed once per path, with its documents).

    python benchmarks/grpo_step.py --quick        # 2 steps per path: a few minutes on 2 cores
    python benchmarks/grpo_step.py --steps 4 --probe

Ends with ``ratio: R``: main's step seconds over ours, over the same number of steps.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from machine import describe, has_train_split, matmul_rate, model_dir_or_random, scifact_train_rows

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
PHASES = ("rollout", "score/policy", "score/reference", "reward", "update", "refresh")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "base"),
                   help="start model folder (default: models/base; absent: SmolLM2-135M's architecture, random weights)")
    p.add_argument("--data", default=str(SCIFACT), help="BEIR folder with a train split (default: ../shared/data/scifact)")
    p.add_argument("--profile", default="scifact", help="params.yaml profile (default: scifact)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per path (default: 4)")
    p.add_argument("--quick", action="store_true", help="2 timed steps per path")
    p.add_argument("--docs", type=int, default=300, help="documents in the live index (default: 300)")
    p.add_argument("--probe", action="store_true", help="also time one fidelity probe per path")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    steps = 2 if args.quick else args.steps
    data = Path(args.data)
    if not has_train_split(data):
        return 1

    import torch

    from searchr3.config import load_params, section
    from searchr3.index.config import IndexConfig
    from searchr3.index.refresh import RefreshPolicy, fidelity
    from searchr3.index.store import DocumentIndex
    from searchr3.model.config import ModelConfig
    from searchr3.train import common, grpo
    from searchr3.train.grpo_config import GRPOConfig
    from searchr3.train.losses.clipped_policy import ClippedPolicyLoss
    from searchr3.train.losses.infonce import InfoNCELoss
    from searchr3.train.trainer_setup import known_positives, load_trainee

    print(describe() + " (run under flock /work/cpu.lock: the 2 cores to this benchmark)")
    tmp = tempfile.TemporaryDirectory()
    model_dir, what = model_dir_or_random(Path(args.model), Path(tmp.name))
    print(f"model: {what}")
    params = load_params(REPO / "params.yaml", args.profile)
    cfg, model_cfg = section(params, "rl", GRPOConfig), section(params, "model", ModelConfig)
    index_cfg = section(params, "index", IndexConfig)
    trainee = load_trainee(model_dir, model_cfg, cfg, max_doc_tokens=cfg.max_doc_tokens,
                           max_query_tokens=cfg.max_query_tokens)
    config = trainee.embedder.model.config
    anchor = matmul_rate(config, 2048, torch.float32)
    print(f"anchor: one decoder layer's linear matmuls at 2048 tokens: {anchor:.0f} GFLOP/s (fp32)")

    n_rows = cfg.queries_per_step * (2 * steps + 2)
    rows, corpus = scifact_train_rows(data, n_rows, 1, args.seed, docs=args.docs)
    positives = known_positives(rows)
    index = DocumentIndex.from_config(index_cfg)
    vectors = np.random.default_rng(args.seed).standard_normal((len(corpus), config.hidden_size)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.build_from_vectors(list(corpus), vectors, version=0, texts=corpus)
    refresher = RefreshPolicy(index, index_cfg.refresh, progress=False)
    probe_every = index_cfg.refresh.probe_every
    refresher.config.probe_every = 0  # the probe is timed apart (--probe)
    policy_loss = ClippedPolicyLoss(clip_eps=cfg.clip_eps, beta=cfg.beta)
    nce = InfoNCELoss(temperature=cfg.nce_temperature, in_batch_negatives=True)
    search_k = max(cfg.reward_cutoff, index_cfg.refresh.topk_stale)
    print(f"profile {args.profile}: {cfg.mode}, {cfg.queries_per_step} queries x group {cfg.group_size} = "
          f"{cfg.queries_per_step * cfg.group_size} traces of <= {model_cfg.max_new_tokens} new tokens at temperature "
          f"{cfg.temperature}, micro_batch {cfg.micro_batch}, beta {cfg.beta}, lambda_nce {cfg.lambda_nce}, "
          f"lambda_trace_nce {cfg.lambda_trace_nce}, documents <= {cfg.max_doc_tokens} tokens; live index "
          f"{len(index)} SciFact documents (random vectors at version 0), refresh budget "
          f"{index_cfg.refresh.budget_per_step} + rotation 1/{index_cfg.refresh.full_refresh_every} of the index per "
          f"step; fidelity probe every {probe_every} steps ({'timed once per path' if args.probe else 'not timed'})")

    version = 0
    sums = {p: {k: 0.0 for k in (*PHASES, "step")} for p in ("main", "ours")}
    counts = {p: {"traces": 0, "generated": 0, "refreshed": 0} for p in sums}

    def one_step(path: str, batch: list[dict], upcoming: list[dict]) -> None:
        nonlocal version
        trainee.fast = path == "ours"
        timer = common.PhaseTimer()
        with timer("rollout"):
            reasoning = grpo.rollout(trainee, batch, cfg)
        with timer("score/policy"), torch.no_grad(), trainee.autocast():  # grpo.score, its two passes timed apart
            e, seqs = trainee.embedder, reasoning.sequences()
            old_logp, vecs = [], []
            for part in grpo.chunks(seqs, cfg.micro_batch):
                with trainee.merged():
                    got, vec = grpo.sequence_logprobs(trainee, trainee.model, part, e.embed_token_id, cfg.temperature)
                old_logp += got
                vecs.append(vec.cpu())
        with timer("score/reference"), torch.no_grad(), trainee.autocast():
            ref_logp = []
            for part in grpo.chunks(seqs, cfg.micro_batch):
                with trainee.reference() as reference:
                    ref_logp += grpo.sequence_logprobs(trainee, reference, part, temperature=cfg.temperature)[0]
        scores = grpo.Scores(seqs, old_logp, ref_logp, torch.cat(vecs).numpy())
        with timer("reward"):
            rewards = grpo.reward(index, batch, reasoning, scores, cfg, search_k)
        with timer("update"):
            grpo.update(trainee, batch, scores, rewards, policy_loss, nce, cfg, index, positives, version=version)
        version += 1
        with timer("refresh"):
            stats = grpo.refresh_index(refresher, trainee, upcoming, rewards, version - 1, version, [], cfg)
        total = time.perf_counter() - timer.started
        for k, v in timer.seconds.items():
            sums[path][k] += v
        sums[path]["step"] += total
        counts[path]["traces"] += len(seqs)
        counts[path]["generated"] += sum(len(g) for g in reasoning.generated)
        counts[path]["refreshed"] += stats["refreshed"]
        print(f"  step {version} ({path}): {total:.1f} s, " + ", ".join(f"{k} {v:.1f}" for k, v in timer.seconds.items())
              + f"; rewards {np.mean(rewards.rewards):.3f}, {len(rewards.active)} active traces, "
              f"{stats['refreshed']} documents refreshed", flush=True)

    order = [rows[i:i + cfg.queries_per_step] for i in range(0, len(rows), cfg.queries_per_step)]
    with torch.no_grad():
        trainee.embedder.generate_reasoning([rows[0]["query"]], max_new_tokens=2)  # warm-up
    # Pairs: both paths take the same rows with the same sampling seed, in alternating order; each step's refresh
    # prefetches the next step's rows, as in the loop (the pair's second step takes the same rows, then the next pair's).
    for j in range(steps):
        for n, path in enumerate(("main", "ours") if j % 2 == 0 else ("ours", "main")):
            torch.manual_seed(args.seed + j)
            one_step(path, order[j], order[j] if n == 0 else order[j + 1])

    probe_s = {}
    if args.probe:
        probe_queries = [r["query"] for r in rows[: index_cfg.refresh.probe_size]]
        for path in ("main", "ours"):
            trainee.fast = path == "ours"
            start = time.perf_counter()
            q = trainee.encode_queries(probe_queries, cfg.micro_batch)
            fidelity(index, partial(trainee.encode_documents, batch_size=cfg.micro_batch), q, k=10)
            probe_s[path] = time.perf_counter() - start

    print()
    print(f"{'path':<5} {'step s':>7} | " + " ".join(f"{k:>22}" for k in PHASES))
    for path in ("main", "ours"):
        s = sums[path]
        print(f"{path:<5} {s['step'] / steps:>7.1f} | "
              + " ".join(f"{s[k] / steps:>13.2f}s {s[k] / s['step']:>6.1%}" for k in PHASES))
    for path in ("main", "ours"):
        c = counts[path]
        print(f"{path}: {c['traces'] / steps:.0f} traces and {c['generated'] / steps:.0f} generated tokens per step "
              f"({c['generated'] / sums[path]['rollout']:.1f} tokens/s in the rollout); "
              f"{c['refreshed'] / steps:.0f} documents refreshed per step"
              + (f"; a fidelity probe ({len(index)} documents re-encoded + {index_cfg.refresh.probe_size} queries) "
                 f"{probe_s[path]:.1f} s, every {probe_every} steps" if path in probe_s else ""))
    ratio = sums["main"]["step"] / sums["ours"]["step"]
    print(f"steps: main {sums['main']['step']:.1f} s, ours {sums['ours']['step']:.1f} s for {steps} steps each; "
          "goal: >= 1.5x the step on main")
    print(f"ratio: {ratio:.2f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
