"""SFT step: forward + backward + optimizer at the profiles' shapes, the step as it was vs ours, against the machine.

For each profile (params.yaml: ``default`` and ``scifact`` by default) one trainee is set up exactly as
``train_sft`` sets it up (``trainer_setup.load_trainee``: LoRA or full, the profile's precision) and the two
step paths run interleaved on the same rows, step after step:

  main  the step as it was on main before the packed path: padded batches (right padding to the longest
        row), the LM head over every position from the earliest target on, the reference pass over every
        row, AdamW with torch's default per-tensor loop;
  ours  what ``train_sft`` runs now (``Trainee.fast``; ``SFTBatchBuilder(packed=True)``: no padding,
        attention per sequence, the LM head only where a target is, the reference only over rows with a KL
        target; the document pass without gradient with LoRA merged, ``trainer_setup.merged_lora``) and the
        trainee's optimizer (``trainer_setup.load_trainee``).

Rows: SciFact train queries (../shared/data/scifact), each with its positive and seeded random documents as
negatives; every row carries a trace (the regime after ``trace_warmup_steps``, when the KL term is on): the
positive's first words, cut at ``max_trace_tokens`` like a kept trace. ``--direct`` times the warm-up
regime instead (no traces, no reference pass).

Where the time goes: build (tokenise, pad or pack), query (forward with gradient + LM head), documents
(forward, without gradient unless ``doc_grad``), reference (KL pass), loss, backward, optimizer (clip +
AdamW + zero_grad); seconds per step and share. Speed is the rows' real tokens per second (query +
documents + the reference's rows, no padding, the same count for both paths). MFU = the model FLOPs a
path computes on non-padding tokens, per second, over the machine anchor (benchmarks/machine.py, measured
in this run): 3 x forward FLOPs for the passes with gradient (the convention; LoRA's frozen weights get
no weight gradient, so its real work is nearer 2 x) and 1 x for the passes without (documents when
``doc_grad`` is off, reference), LM head FLOPs at the target positions included. Ours computes fewer
FLOPs for the same rows (a template's system prompt once per batch, the reference over KL rows only), so
its speed-up is larger than its MFU gain.

    python benchmarks/sft_step.py --quick                  # 3 timed steps per path and profile: a few minutes
    python benchmarks/sft_step.py --steps 8 --profiles scifact

Ends with ``ratio: R mfu: M``: main's step seconds over ours (all profiles together) and ours' MFU.
Exits 1 if the two paths' losses on the same batch differ by more than 1e-4 (relative): the comparison
would be void.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from machine import (attention_flops, describe, has_train_split, linear_flops_per_token, matmul_rate,
                     model_dir_or_random, model_flops, scifact_train_rows)

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
PHASES = ("build", "query", "documents", "reference", "loss", "backward", "optimizer")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "base"),
                   help="model folder (default: models/base; absent: SmolLM2-135M's architecture, random weights)")
    p.add_argument("--data", default=str(SCIFACT), help="BEIR folder with a train split (default: ../shared/data/scifact)")
    p.add_argument("--profiles", nargs="+", default=["default", "scifact"], help="params.yaml profiles (default: default scifact)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per path and profile (default: 6)")
    p.add_argument("--quick", action="store_true", help="3 timed steps per path and profile")
    p.add_argument("--direct", action="store_true", help="rows without traces (the warm-up regime: no KL pass)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def pass_flops(config, packed) -> float:
    """Forward FLOPs a packed pass computes: each segment's tokens, attending to its prefix segments and itself."""
    lengths = (packed.cu[1:] - packed.cu[:-1]).tolist()
    context = [sum(b - a for a, b in r) if r else 0 for r in (packed.prefix or [None] * len(lengths))]
    return sum(n * linear_flops_per_token(config) + attention_flops(config, n, c) for n, c in zip(lengths, context))


def step_flops(config, packed: dict, padded: dict, sft) -> dict:
    """Tokens and FLOPs of one step. ``tokens``: the rows' real tokens (query + documents + the reference rows; no
    padding, no sharing), the same for both paths. ``main``/``ours``: the model FLOPs each path computes on
    non-padding tokens (3 x forward for passes with gradient, 1 x without; the LM head at the target positions);
    ours computes fewer (each template's system prompt once, the reference over KL rows only, cut)."""
    head = 2 * config.hidden_size * config.vocab_size
    n_targets = len(packed["positions"])
    q_len = padded["q"][1].sum(1).tolist()
    d_len = padded["d"][1].sum(1).tolist()
    docs_x = 3 if sft.doc_grad else 1
    kl = packed["ref"] is not None and sft.lambda_kl > 0
    main = 3 * (model_flops(config, q_len) + head * n_targets) + docs_x * model_flops(config, d_len)
    ours = 3 * (pass_flops(config, packed["q"]) + head * n_targets) + docs_x * pass_flops(config, packed["d"])
    tokens = sum(q_len) + sum(d_len)
    if kl:
        main += model_flops(config, q_len) + head * n_targets  # main's reference: every row, every target position
        ours += pass_flops(config, packed["ref"]) + head * len(packed["ref_positions"])
        tokens += sum(q_len)
    return {"tokens": tokens, "main": main, "ours": ours}


def main(argv=None) -> int:
    args = parse_args(argv)
    steps = 3 if args.quick else args.steps
    data = Path(args.data)
    if not has_train_split(data):
        return 1

    import torch

    from searchr3.config import load_params, section
    from searchr3.model.config import ModelConfig
    from searchr3.train import common
    from searchr3.train.losses.composite import CompositeLoss
    from searchr3.train.sft import SFTBatchBuilder, compute_loss
    from searchr3.train.sft_config import SFTConfig
    from searchr3.train.trainer_setup import known_positives, load_trainee, param_groups

    print(describe() + " (run under flock /work/cpu.lock: the 2 cores to this benchmark)")
    tmp = tempfile.TemporaryDirectory()
    model_dir, what = model_dir_or_random(Path(args.model), Path(tmp.name))
    print(f"model: {what}")
    anchor = None
    table, totals = [], {"main": [0.0, 0.0], "ours": [0.0, 0.0]}  # seconds, flops
    for profile in args.profiles:
        params = load_params(REPO / "params.yaml", profile)
        cfg, model_cfg = section(params, "sft", SFTConfig), section(params, "model", ModelConfig)
        trainee = load_trainee(model_dir, model_cfg, cfg, max_doc_tokens=cfg.max_doc_tokens)
        trainee.model.train()
        config = trainee.embedder.model.config
        if anchor is None:
            anchor = matmul_rate(config, 2048, torch.float32)
            print(f"anchor: one decoder layer's linear matmuls at 2048 tokens: {anchor:.0f} GFLOP/s (fp32); "
                  f"MFU is over it")
        rows = scifact_train_rows(data, cfg.batch_size * (steps + 1), 3, args.seed)[0]
        traces = {} if args.direct else {r["query_id"]: r["trace"] for r in rows}
        positives = known_positives(rows)
        loss_fn = CompositeLoss(cfg.lambda_ce, cfg.lambda_kl, cfg.lambda_nce, cfg.lambda_tri,
                                temperature=cfg.temperature, in_batch_negatives=cfg.in_batch_negatives, margin=cfg.margin)
        builders = {"main": SFTBatchBuilder(trainee.embedder, cfg, traces, positives, packed=False),
                    "ours": SFTBatchBuilder(trainee.embedder, cfg, traces, positives, packed=True)}
        optimizers = {"main": torch.optim.AdamW(param_groups(trainee.model, cfg.lr, cfg.token_lr_scale), lr=cfg.lr,
                                                weight_decay=cfg.weight_decay),
                      "ours": trainee.optimizer}
        kind = "direct rows (warm-up regime)" if args.direct else "every row traced (KL on)"
        print(f"profile {profile}: {cfg.mode}, batch {cfg.batch_size}, {cfg.negatives_per_query} negative(s), query <= "
              f"{cfg.max_query_tokens} + trace <= {cfg.max_trace_tokens}, documents <= {cfg.max_doc_tokens} tokens, "
              f"doc_grad {cfg.doc_grad}, lambda_kl {cfg.lambda_kl}, {kind}; {steps} timed steps per path after 1 warm-up")

        def one_step(path: str, batch_rows: list[dict]) -> tuple[dict, dict]:
            trainee.fast = path == "ours"  # merged LoRA for the document pass (Trainee.merged) only on ours
            timer = common.PhaseTimer()
            with timer("build"):
                batch = builders[path].build(batch_rows)
            with trainee.autocast():
                result = compute_loss(trainee.model, batch, loss_fn, trainee.embed_id, cfg, trainee.reference, timer,
                                      merged=trainee.merged)
            with timer("backward"):
                result.total.backward()
            with timer("optimizer"):
                torch.nn.utils.clip_grad_norm_(trainee.params, cfg.max_grad_norm)
                optimizers[path].step()
                optimizers[path].zero_grad(set_to_none=True)
            return timer.seconds | {"step": time.perf_counter() - timer.started}, result.components

        # same batch, both paths, before any timing: the losses must agree (the comparison is void otherwise)
        check = rows[: cfg.batch_size]
        got = {}
        for p in builders:
            trainee.fast = p == "ours"
            with torch.no_grad(), trainee.autocast():
                got[p] = compute_loss(trainee.model, builders[p].build(check), loss_fn, trainee.embed_id, cfg,
                                      trainee.reference, merged=trainee.merged).components
        for term, value in got["main"].items():
            if abs(got["ours"][term] - value) > 1e-4 * max(1.0, abs(value)):
                print(f"error: profile {profile}: {term} {got['ours'][term]:.6f} (ours) vs {value:.6f} (main) on the same "
                      "batch; the comparison is void", file=sys.stderr)
                return 1
        print(f"same batch, both paths: " + ", ".join(f"{t} {v:.5f}/{got['ours'][t]:.5f}" for t, v in got["main"].items()))

        sums = {p: {k: 0.0 for k in (*PHASES, "step")} for p in builders}
        work = {"main": 0.0, "ours": 0.0, "tokens": 0, "qd": 0, "padded": 0}
        for i in range(steps + 1):
            batch_rows = rows[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            for path in ("main", "ours") if i % 2 == 0 else ("ours", "main"):  # interleaved, alternating first
                seconds, _ = one_step(path, batch_rows)
                if i > 0:
                    for k, v in seconds.items():
                        sums[path][k] += v
            if i > 0:
                packed, padded = builders["ours"].build(batch_rows), builders["main"].build(batch_rows)
                for k, v in step_flops(config, packed, padded, cfg).items():
                    work[k] += v
                work["padded"] += padded["q"][0].numel() + padded["d"][0].numel()
                work["qd"] += int(padded["q"][1].sum() + padded["d"][1].sum())
        for path in ("main", "ours"):
            s = sums[path]
            row = {"profile": profile, "path": path, "step": s["step"] / steps,
                   "tokens/s": work["tokens"] / s["step"], "mfu": work[path] / s["step"] / 1e9 / anchor,
                   **{k: s[k] / steps for k in PHASES}}
            table.append(row)
            totals[path][0] += s["step"]
            totals[path][1] += work[path]
        print(f"profile {profile}: {work['tokens'] / steps:.0f} real tokens per step (query + documents + reference "
              f"rows); query + document real tokens {work['qd'] / steps:.0f} vs {work['padded'] / steps:.0f} "
              f"positions in main's padded batches ({1 - work['qd'] / work['padded']:.0%} padding); model FLOPs per "
              f"step: main {work['main'] / steps / 1e9:.0f} G, ours {work['ours'] / steps / 1e9:.0f} G (system prompts "
              f"packed once, reference over KL rows only)")
        del trainee, optimizers, builders

    print()
    print(f"{'profile':<8} {'path':<5} {'step s':>7} {'tokens/s':>9} {'MFU':>6} | "
          + " ".join(f"{k:>15}" for k in PHASES))
    for r in table:
        shares = " ".join(f"{r[k]:>7.2f}s {r[k] / r['step']:>6.1%}" for k in PHASES)
        print(f"{r['profile']:<8} {r['path']:<5} {r['step']:>7.2f} {r['tokens/s']:>9.0f} {r['mfu']:>6.1%} | {shares}")
    ratio = totals["main"][0] / totals["ours"][0]
    mfu = totals["ours"][1] / totals["ours"][0] / 1e9 / anchor
    print(f"all profiles: main {totals['main'][0]:.1f} s, ours {totals['ours'][0]:.1f} s for the same steps; "
          f"goals: >= 1.5x the step on main, MFU >= 50%")
    print(f"ratio: {ratio:.2f} mfu: {mfu:.2f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
