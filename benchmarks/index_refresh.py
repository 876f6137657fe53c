"""Selective index refresh vs full re-encode: on a real RL run (--rl), or replayed over a simulated one.

--rl: runs the rl stage's GRPO (train_grpo, with the parameters and inputs `searchr3 stage rl` uses:
params.yaml + profile, models/sft, data/) into a temporary folder, with a measurement hook after every
step. The hook reads what the selective refresh did (documents re-encoded, seconds: select + encode +
update + graph) and, at step 1 and every --measure-every steps, re-encodes every document of the live
index with the current policy (the full-refresh arm, timed), then scores top-10 fidelity of the
selective index, the full one and the never-refreshed version-0 index against those fresh vectors, on
held-out probe queries (rows no step trains on). The hook draws no random numbers, so the run is the
rl stage's run: its per-step rewards are compared with the stage's dvclive log when one is there.

    python benchmarks/index_refresh.py --rl                     # the repo's rl stage (params.yaml profile)
    python benchmarks/index_refresh.py --rl --profile scifact --measure-every 4

--drift (the drift regime, real model): SFT steps with document-side gradient at a high learning rate move the
document vectors; four copies of the index are kept: selective (before step s scores, the documents of
order[s] and their graph neighbours, within a budget, plus a rotating slice), random (as many stale
documents, drawn at random), full (everything) and none (version 0). Top-10 fidelity on held-out probe
queries; before it, the budget curve (``budget_curve``: a random 10-75 % of the documents re-encoded, the rest stale or
moved by ``align_stale``); the last line is `ratio: R selective: S none: N` (R = selective cost / full cost, S and N
the fidelities at the last step).

    python benchmarks/index_refresh.py --drift --quick        # models/sft (else models/base) on data/, a few minutes

Without --rl (synthetic):

What is simulated: the document encoder (the RL policy) drifts each step. The drift model is a
linear map on the base vectors, f_v(x) = normalise(x + D_v (x - mu)), with D updated every step by
a small global random matrix plus rank-one terms u_i (x_i - mu)^T on the documents the step used
(the shape a gradient step on a linear layer has: documents near the batch move most). Queries
drift through the same map. Base vectors are synthetic clustered points, or, with --model, real
Embedder vectors of SciFact documents and train queries (the drift is still synthetic).

Each step: B train queries search the selective index (their top-k are "the current queries' top-k";
positives + the top hard negatives are "the docs just used"), the policy moves to version v+1, then
  selective: RefreshPolicy.step (priority tiers capped by the budget + the rotating slice + graph rebuild),
  full:      every document re-encoded and updated,
  none:      nothing re-encoded (shows what staleness costs).
Fidelity = top-10 overlap with an index of freshly encoded vectors, on held-out probe queries,
measured every step outside the timed region. Cost = documents encoded (what scales with an LLM
encoder); wall time is the replay's own select + encode + update + graph time.

    python benchmarks/index_refresh.py --quick
    python benchmarks/index_refresh.py --model models/sft --quick
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from searchr3.files import write_json_atomic
from searchr3.index import DocumentIndex, RefreshConfig, RefreshPolicy, fidelity, refresh
from searchr3.index.refresh import align_stale, row_cosine
from searchr3.index.store import encode_in_batches

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


class DriftModel:
    """The simulated policy: base vectors plus a drift that grows at every step.

    f_v(x) = normalise(x + D_v (x - mu) + sum_i k(x, a_i) u_i): a global linear part D (a small random
    matrix added per step) and a local part, one bump per document used in a step (anchor a_i, random
    displacement u_i) weighted by k = exp((cos(x - mu, a_i - mu) - 1) / width), so documents near the
    ones a step trained on move most.
    """

    def __init__(self, base_docs: np.ndarray, global_rate: float, local_rate: float, width: float, seed: int):
        self.base = base_docs.astype(np.float64)
        self.mu = self.base.mean(axis=0)
        self.scale = float(np.linalg.norm(self.base - self.mu, axis=1).mean())
        self.dim = self.base.shape[1]
        self.D = np.zeros((self.dim, self.dim))
        self.anchors = np.zeros((0, self.dim))
        self.moves = np.zeros((0, self.dim))
        self.global_rate, self.local_rate, self.width = global_rate, local_rate, width
        self.rng = np.random.default_rng(seed)

    def _encode(self, x: np.ndarray, D: np.ndarray, anchors: np.ndarray, moves: np.ndarray) -> np.ndarray:
        xc = np.asarray(x, dtype=np.float64) - self.mu
        y = x + xc @ D.T
        if len(anchors):
            cos = (xc / np.linalg.norm(xc, axis=1, keepdims=True)) @ anchors.T
            y = y + np.exp((cos - 1.0) / self.width) @ moves
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Encode raw base vectors (documents or queries) with the current version."""
        return self._encode(np.asarray(x, dtype=np.float64), self.D, self.anchors, self.moves)

    def encoder(self, counter: list[int]):
        """encode_fn frozen at the current version; texts are row numbers of the base vectors; counts docs."""
        D, anchors, moves = self.D.copy(), self.anchors, self.moves

        def encode(texts: list[str]) -> np.ndarray:
            counter[0] += len(texts)
            return self._encode(self.base[[int(t) for t in texts]], D, anchors, moves)
        return encode

    def update(self, used_rows: list[int]) -> None:
        """One optimiser step that trained on the documents ``used_rows``."""
        d = self.dim
        self.D = self.D + self.global_rate * self.rng.normal(size=(d, d)) / np.sqrt(d)
        xc = self.base[used_rows] - self.mu
        self.anchors = np.vstack([self.anchors, xc / np.linalg.norm(xc, axis=1, keepdims=True)])
        step_moves = self.local_rate * self.scale * self.rng.normal(size=(len(used_rows), d)) / np.sqrt(d)
        self.moves = np.vstack([self.moves, step_moves])


def synthetic_vectors(n_docs: int, n_queries: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n_docs // 20, 1), dim))
    docs = centres[rng.integers(0, len(centres), n_docs)] + 0.6 * rng.normal(size=(n_docs, dim))
    positives = rng.integers(0, n_docs, n_queries)
    queries = docs[positives] + 0.5 * rng.normal(size=(n_queries, dim))
    norm = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return norm(docs), norm(queries), [[int(p)] for p in positives], 0.0


def scifact_vectors(model_path: str, n_docs: int | None, seed: int):
    """Real Embedder vectors: SciFact docs (every positive of a train query, then others) and train queries."""
    from searchr3.data.beir import load_beir
    from searchr3.model.embedder import Embedder

    if not SCIFACT.exists():
        sys.exit(f"--model needs SciFact at {SCIFACT} (not found)")
    data = load_beir(SCIFACT, split="train")
    corpus, queries = data.corpus, data.queries
    qrels = {q: [d for d, rel in judged.items() if rel > 0] for q, judged in data.qrels.items()}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    qids = sorted(qrels)
    if n_docs is not None:  # keep a quarter as many queries as documents, and all their positives
        qids = qids[:max(1, min(len(qids), n_docs // 4))]
    doc_ids = list(dict.fromkeys(d for q in qids for d in qrels[q]))
    taken = set(doc_ids)
    others = [d for d in np.random.default_rng(seed).permutation(sorted(corpus)).tolist() if d not in taken]
    if n_docs is not None:
        others = others[:max(0, n_docs - len(doc_ids))]
    doc_ids += others
    row = {d: i for i, d in enumerate(doc_ids)}
    emb = Embedder.from_pretrained(model_path)
    t0 = time.perf_counter()
    docs = emb.encode_documents([corpus[d] for d in doc_ids], progress=True)
    sec_per_doc = (time.perf_counter() - t0) / len(doc_ids)
    qvec = emb.encode_queries([queries[q] for q in qids]).vectors
    return docs, qvec, [[row[d] for d in qrels[q]] for q in qids], sec_per_doc


class RLRefreshRecorder:
    """The ``on_step`` hook of ``train_grpo``: records the selective refresh and measures the full one."""

    def __init__(self, probe_queries: list[str], full_every: int, steps: int):
        self.probe_queries, self.full_every, self.steps = probe_queries, full_every, steps
        self.rows: list[dict] = []
        self.version0: DocumentIndex | None = None

    def __call__(self, view: dict) -> None:
        index, step = view["index"], view["step"]
        if view["refresh"] is None:  # after the initial build: keep the version-0 vectors (the "none" arm)
            self.version0 = index.with_vectors(index.vectors(index.doc_ids), version=0)
            print(f"live index: {len(index)} documents\n\n{RL_HEADER}\n{'-' * len(RL_HEADER)}", flush=True)
            return
        m = view["metrics"]
        row = {"step": step, "sel_docs": int(m["refresh/size"]), "sel_s": float(m["time/refresh_s"]),
               "lag_mean": float(m["index/staleness_mean"]), "lag_max": float(m["index/staleness_max"]),
               "reward": float(m["reward/mean"]), "step_s": float(m["time/step_s"]),
               "graph_rebuilt": bool(view["refresh"]["graph_rebuilt"])}
        if step == 1 or step % self.full_every == 0 or step == self.steps:
            t = time.perf_counter()
            fresh = encode_in_batches(view["encode_documents"], [index.texts[d] for d in index.doc_ids],
                                      index.encode_batch, desc="full re-encode")
            full = index.with_vectors(fresh, version=step)
            row["full_s"] = time.perf_counter() - t
            row["full_docs"] = len(index)
            probe = view["encode_queries"](self.probe_queries)
            row["sel_fid"] = fidelity(index, fresh, probe, k=10)
            row["full_fid"] = fidelity(full, fresh, probe, k=10)
            row["none_fid"] = fidelity(self.version0, fresh, probe, k=10)
        self.rows.append(row)
        print(_rl_line(row), flush=True)


RL_HEADER = (f"{'step':>4} | {'sel docs':>8} {'sel s':>7} {'sel fid':>7} {'lag mean/max':>12} | "
             f"{'full docs':>9} {'full s':>7} {'full fid':>8} | {'none fid':>8} | {'reward':>6} {'step s':>6}")


def _rl_line(r: dict) -> str:
    full = (f"{r['full_docs']:>9} {r['full_s']:>7.1f} {r['full_fid']:>8.3f} | {r['none_fid']:>8.3f}" if "full_s" in r
            else f"{'-':>9} {'-':>7} {'-':>8} | {'-':>8}")
    sel_fid = f"{r['sel_fid']:>7.3f}" if "sel_fid" in r else f"{'-':>7}"
    return (f"{r['step']:>4} | {r['sel_docs']:>8} {r['sel_s']:>7.1f} {sel_fid} {r['lag_mean']:>5.2f}/{r['lag_max']:<6.0f} | "
            f"{full} | {r['reward']:>6.3f} {r['step_s']:>6.1f}" + ("  (graph rebuilt)" if r["graph_rebuilt"] else ""))


def logged_rewards(live_dir: Path) -> dict[int, float]:
    """Per-step reward/mean of a DVCLive log (``{live_dir}/plots/metrics/reward/mean.tsv``), or {} when absent."""
    path = live_dir / "plots" / "metrics" / "reward" / "mean.tsv"
    if not path.exists():
        return {}
    lines = path.read_text().split("\n")[1:]
    return {int(a): float(b) for a, b in (line.split("\t")[:2] for line in lines if line.strip())}


def run_rl(args) -> int:
    """--rl: the rl stage's GRPO run with the measurement hook; prints the side-by-side table."""
    from searchr3.config import load_params, section
    from searchr3.data.build import load_train_with_corpus
    from searchr3.index.config import IndexConfig
    from searchr3.model.config import ModelConfig
    from searchr3.train.common import batch_order
    from searchr3.train.grpo import train_grpo
    from searchr3.train.grpo_config import GRPOConfig

    params = load_params(args.params, profile=args.profile)
    rl_cfg, index_cfg = section(params, "rl", GRPOConfig), section(params, "index", IndexConfig)
    model_cfg = section(params, "model", ModelConfig)
    if args.steps:
        rl_cfg.steps = args.steps
    index_cfg.refresh.probe_every = 0  # the hook measures fidelity (every --measure-every steps) instead
    for path in (args.start, args.data):
        if not Path(path).exists():
            sys.exit(f"{path} not found: run `dvc repro rl` (or the stages before rl) first")
    rows, corpus = load_train_with_corpus(args.data)
    trained = {i for step in batch_order(len(rows), rl_cfg.queries_per_step, rl_cfg.steps, rl_cfg.seed) for i in step}
    held_out = [i for i in range(len(rows)) if i not in trained]
    picked = random.Random(args.seed).sample(held_out, min(args.probe, len(held_out)))
    probe = [rows[i]["query"] for i in sorted(picked)]
    if not probe:
        sys.exit("no held-out rows for probe queries: every training row is used by some step")
    full_every = max(1, args.measure_every)
    recorder = RLRefreshRecorder(probe, full_every, rl_cfg.steps)
    r = index_cfg.refresh
    print(f"real RL run: profile {params['_profile']}, start {args.start}, {len(rows)} training rows, "
          f"{rl_cfg.steps} steps x {rl_cfg.queries_per_step} queries x G={rl_cfg.group_size}, "
          f"live index max_corpus_docs={rl_cfg.max_corpus_docs} (0 = all), {index_cfg.kind}")
    print(f"policy: budget={r.budget_per_step} graph_k={r.graph_k} neighbours_per_doc={r.neighbours_per_doc} "
          f"topk_stale={r.topk_stale} rotating full refresh T={r.full_refresh_every}")
    print(f"full re-encode + fidelity ({len(probe)} held-out probe queries, top-10) at step 1 and every {full_every} steps")
    print("command: python benchmarks/index_refresh.py " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="refresh-bench-") as tmp:
        t = Path(tmp)
        train_grpo(rl_cfg, model_cfg, index_cfg, args.start, rows, corpus, t / "model", t / "ckpt", t / "index",
                   live_dir=None, progress=False, on_step=recorder)
    return report_rl(recorder.rows, logged_rewards(Path(args.logged)), args.json)


def report_rl(rows: list[dict], logged: dict[int, float], json_out: str | None) -> int:
    measured = [r for r in rows if "full_s" in r]
    steps = len(rows)
    sel_docs = sum(r["sel_docs"] for r in rows)
    full_docs = measured[0]["full_docs"] * steps
    sel_s = sum(r["sel_s"] for r in rows)
    full_s_mean = float(np.mean([r["full_s"] for r in measured]))
    fid = {arm: [r[f"{arm}_fid"] for r in measured] for arm in ("sel", "full", "none")}
    print()
    print(f"mean top-10 fidelity over {len(measured)} measured steps: selective {np.mean(fid['sel']):.3f} "
          f"(min {min(fid['sel']):.3f})  full {np.mean(fid['full']):.3f}  none {np.mean(fid['none']):.3f}")
    print(f"documents encoded over {steps} steps: selective {sel_docs}  full {full_docs} "
          f"({measured[0]['full_docs']} per step)")
    print(f"wall seconds per step: selective {sel_s / steps:.1f} (mean of all steps)  "
          f"full {full_s_mean:.1f} (mean of {len(measured)} measured)  wall ratio {sel_s / steps / full_s_mean:.2f}")
    if logged:
        same = [r["step"] for r in rows if r["step"] in logged and abs(logged[r["step"]] - r["reward"]) < 1e-6]
        compared = [r["step"] for r in rows if r["step"] in logged]
        print(f"same run as the rl stage's dvclive log: reward/mean equal at {len(same)}/{len(compared)} logged steps")
    else:
        print("no rl stage dvclive log to compare rewards with")
    ratio = sel_docs / full_docs
    print(f"ratio: {ratio:.2f}")
    if json_out:
        write_json_atomic(json_out, {"steps": rows, "ratio": ratio, "full_s_mean": full_s_mean,
                                     "selective_s_mean": sel_s / steps})
    return 0


# ---- --drift: a real training run whose documents drift, the arms side by side -------------------

class DriftRun:
    """The live index during SFT with document-side gradient (the drift regime): real training steps of
    ``searchr3.train.sft`` (``compute_loss`` with ``doc_grad``) at a learning rate high enough that document
    vectors move, and four copies of the index refreshed four ways after every step."""

    ARMS = ("selective", "aligned", "random", "full", "none")

    def __init__(self, args):
        from searchr3.data.build import load_train_with_corpus
        from searchr3.model.config import ModelConfig
        from searchr3.train.common import batch_order
        from searchr3.train.grpo import used_doc_ids
        from searchr3.train.sft import SFTBatchBuilder
        from searchr3.train.sft_config import SFTConfig
        from searchr3.train.trainer_setup import drop_rows_without_negatives, known_positives, load_trainee, with_distractors

        quick = args.quick
        self.steps = args.steps or (8 if quick else 24)
        batch = args.batch if args.batch != 16 else 8
        rows, corpus = load_train_with_corpus(args.data)
        rows = drop_rows_without_negatives([dict(r) for r in rows], 1)
        self.order = batch_order(len(rows), batch, self.steps + 1, args.seed)
        trained = {i for b in self.order for i in b}
        held_out = [i for i in range(len(rows)) if i not in trained]
        probe_rows = sorted(random.Random(args.seed).sample(held_out, min(args.probe, len(held_out))))
        if not probe_rows:
            sys.exit("no held-out rows for probe queries")
        used = [rows[i] for b in self.order for i in b] + [rows[i] for i in probe_rows]
        n_docs = args.docs or (200 if quick else 1000)
        keep = {d for r in used for d in used_doc_ids(r, 1)}  # the documents the run scores (k = 1), not all mined ones
        self.texts = {d: corpus[d] for d in with_distractors(keep, corpus, n_docs, args.seed)}
        self.rows, self.probe = rows, [rows[i]["query"] for i in probe_rows]
        self.cfg = SFTConfig(mode="lora", lr=args.lr, warmup_steps=0, steps=self.steps, batch_size=batch, doc_grad=True,
                             negatives_per_query=1, lambda_ce=0.1, lambda_kl=0.0, precision="fp32", seed=args.seed,
                             max_doc_tokens=args.doc_tokens)
        self.trainee = load_trainee(args.model, ModelConfig(precision="fp32"), self.cfg, max_doc_tokens=args.doc_tokens)
        self.builder = SFTBatchBuilder(self.trainee.embedder, self.cfg, {}, known_positives(rows))
        budget = args.budget if args.budget is not None else max(1, len(self.texts) // 14)
        full_every = 50 if args.full_every is None else args.full_every
        self.refresh_cfg = RefreshConfig(budget_per_step=budget, graph_k=8, neighbours_per_doc=2,
                                         full_refresh_every=full_every, probe_every=0, probe_size=len(self.probe),
                                         topk_stale=10)
        self.rng = random.Random(args.seed + 1)

    def encode_docs(self, texts: list[str]) -> np.ndarray:
        return self.trainee.encode_documents(texts, batch_size=64)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.trainee.encode_queries(texts, batch_size=64)

    def train_step(self, step: int) -> float:
        from searchr3.train.losses.composite import CompositeLoss
        from searchr3.train.sft import compute_loss

        t, model, c = self.trainee, self.trainee.model, self.cfg
        loss_fn = CompositeLoss(c.lambda_ce, 0.0, c.lambda_nce, c.lambda_tri, temperature=c.temperature, margin=c.margin)
        model.train()
        result = compute_loss(model, self.builder.build([self.rows[i] for i in self.order[step]]), loss_fn,
                              t.embed_id, c, t.reference)
        result.total.backward()
        t.optimizer_step(c.max_grad_norm)
        return float(result.total.detach())

    def run(self) -> dict:
        from searchr3.train.grpo import used_doc_ids

        ids, texts = list(self.texts), list(self.texts.values())
        counter = {arm: 0 for arm in self.ARMS}
        arms = {}
        t = time.perf_counter()
        start = self.encode_docs(texts)
        build_s = time.perf_counter() - t
        for arm in self.ARMS:
            arms[arm] = DocumentIndex(kind="flat", encode_batch=64)
            arms[arm].build_from_vectors(ids, start, version=0, texts=dict(zip(ids, texts)))
        policy = RefreshPolicy(arms["selective"], self.refresh_cfg)
        aligned = RefreshPolicy(arms["aligned"], replace(self.refresh_cfg, align_stale=True))
        print(f"{len(ids)} documents encoded once at version 0 in {build_s:.1f}s ({build_s / len(ids) * 1000:.0f} ms/doc)\n")
        previous, position = start, {d: i for i, d in enumerate(ids)}
        header = (f"{'step':>4} {'loss':>6} | {'sel docs':>8} {'sel fid':>7} {'next fid':>8} | {'aln docs':>8} {'aln fid':>7} "
                  f"{'next fid':>8} | {'rand docs':>9} {'rand fid':>8} | "
                  f"{'full docs':>9} {'full s':>6} | {'none fid':>8} {'none next':>9} | {'mv trained':>10} {'mv other':>8}")
        print(header + "\n" + "-" * len(header), flush=True)
        rows = []
        for step in range(self.steps):
            loss = self.train_step(step)  # the policy is now version step + 1
            version = step + 1
            upcoming = [self.rows[i] for i in self.order[step + 1]]
            next_q = self.encode_queries([r["query"] for r in upcoming])
            _, topk = arms["selective"].search(next_q, self.refresh_cfg.topk_stale)
            _, topk_aligned = arms["aligned"].search(next_q, self.refresh_cfg.topk_stale)
            used = list(dict.fromkeys(d for r in upcoming for d in used_doc_ids(r, 1) if d in arms["selective"].int_of))

            def counting(arm):
                def encode(batch):
                    counter[arm] += len(batch)
                    return self.encode_docs(batch)
                return encode

            before = counter["selective"]
            stats = policy.step(step, counting("selective"), used, topk, version)
            sel_docs = counter["selective"] - before
            before = counter["aligned"]
            aligned.step(step, counting("aligned"), used, topk_aligned, version)
            aln_docs = counter["aligned"] - before
            stale = [d for d, v in zip(arms["random"].doc_ids, arms["random"].versions) if v < version]
            refresh(arms["random"], self.rng.sample(stale, min(sel_docs, len(stale))), counting("random"), version)
            t = time.perf_counter()
            before = counter["full"]
            refresh(arms["full"], ids, counting("full"), version)
            full_s, full_docs = time.perf_counter() - t, counter["full"] - before
            fresh = arms["full"].vectors(ids)
            trained = {position[d] for r in (self.rows[i] for i in self.order[step]) for d in used_doc_ids(r, 1)
                       if d in position}
            moved = moved_by_step(previous, fresh, sorted(trained))
            previous = fresh
            probe = self.encode_queries(self.probe)
            fid = {arm: fidelity(arms[arm], fresh, probe, k=10) for arm in self.ARMS}
            curve = budget_curve(ids, start, fresh, probe, seed=version)
            nxt = {arm: fidelity(arms[arm], fresh, next_q, k=10) for arm in ("selective", "aligned", "none")}
            row = {"step": version, "loss": loss, "sel_docs": sel_docs, "aln_docs": aln_docs,
                   "rand_docs": counter["random"] - sum(
                r["rand_docs"] for r in rows), "full_docs": full_docs, "full_s": full_s,
                "lag_mean": stats["staleness_mean"]} | {f"{a}_fid": fid[a] for a in self.ARMS} | {
                "sel_next_fid": nxt["selective"], "aln_next_fid": nxt["aligned"], "none_next_fid": nxt["none"]} | moved | curve
            rows.append(row)
            print(f"{version:>4} {loss:>6.3f} | {sel_docs:>8} {fid['selective']:>7.3f} {nxt['selective']:>8.3f} | "
                  f"{aln_docs:>8} {fid['aligned']:>7.3f} {nxt['aligned']:>8.3f} | "
                  f"{row['rand_docs']:>9} {fid['random']:>8.3f} | {full_docs:>9} {full_s:>6.1f} | {fid['none']:>8.3f} "
                  f"{nxt['none']:>9.3f} | {moved['moved_trained']:>10.4f} {moved['moved_other']:>8.4f}", flush=True)
        return {"rows": rows, "docs": len(ids)}


SHARES = (0.1, 0.25, 0.5, 0.75)  # budget_curve: shares of the index re-encoded at random


def share_keys(share: float) -> tuple[str, str]:
    """The row keys ``budget_curve`` writes for ``share``: (re-encoded only, re-encoded + ``align_stale``)."""
    return f"share{int(share * 100)}_fid", f"share{int(share * 100)}_aligned_fid"


def budget_curve(ids: list[str], stale: np.ndarray, fresh: np.ndarray, probe: np.ndarray, seed: int) -> dict:
    """What a budget buys at this step, without choosing: for each share in ``SHARES``, top-10 fidelity of the index
    with that share of documents (drawn at random) re-encoded and every other one left at ``stale`` (the
    never-refreshed vectors), and the same with those others moved by ``align_stale`` (the correction fitted on the
    re-encoded ones). When even the corrected arm at a large share stays below a target,
    no refresh at a small budget reaches it in this regime."""
    rows = np.random.default_rng(seed).permutation(len(ids))
    out = {}
    for share in SHARES:
        plain, aligned = share_keys(share)
        taken = rows[:max(1, int(round(share * len(ids))))]
        index = DocumentIndex(kind="flat", encode_batch=64)
        index.build_from_vectors(ids, stale, version=0)
        index.update([ids[i] for i in taken], fresh[taken], 1)
        out[plain] = fidelity(index, fresh, probe, k=10)
        align_stale(index, stale[taken], fresh[taken], current_version=1)  # the rest, as align_stale moves them
        out[aligned] = fidelity(index, fresh, probe, k=10)
    return out


def moved_by_step(before: np.ndarray, after: np.ndarray, trained: list[int]) -> dict:
    """Mean cosine distance of each document's vector ``after`` one training step to ``before`` it, over the rows
    ``trained`` (the documents the step's loss read) and over every other row: where the drift is."""
    distance = 1.0 - row_cosine(before, after)
    other = np.ones(len(distance), dtype=bool)
    other[trained] = False
    return {"moved_trained": float(distance[trained].mean()) if trained else float("nan"),
            "moved_other": float(distance[other].mean()) if other.any() else float("nan")}


def run_drift(args) -> int:
    """--drift: the drift regime on a real model (see ``DriftRun``); prints the arms side by side, then the ratio line."""
    if args.model is None:
        args.model = "models/sft" if Path("models/sft").exists() else "models/base"
    for path in (args.model, args.data):
        if not Path(path).exists():
            sys.exit(f"{path} not found: run the base_model and data stages (and sft) first")
    run = DriftRun(args)
    r = run.refresh_cfg
    print(f"drift regime: the live index during SFT with document-side gradient (doc_grad) at lr {args.lr}, "
          f"LoRA, start {args.model}; {run.steps} steps x {run.cfg.batch_size} rows of {args.data}; "
          f"documents cut at {args.doc_tokens} tokens; 2 CPU cores, fp32")
    print(f"selective: before step s scores, the positives and negatives of step s's rows (known from batch_order), their "
          f"graph neighbours (neighbours_per_doc={r.neighbours_per_doc}) and stale docs in those queries' top-"
          f"{r.topk_stale}, at most {r.budget_per_step}/step, + a rotating slice (T={r.full_refresh_every})")
    print(f"aligned: selective, then every stale vector moved by the linear correction fitted on the documents just "
          f"re-encoded (ridge chosen by leave-one-out; index.refresh.align_stale)")
    print(f"random: the same number of stale documents per step, drawn at random; full: every document; none: version 0")
    print(f"fidelity: top-10 overlap with the fresh index on {len(run.probe)} held-out probe queries (no step trains on "
          "them); next fid: the same for the queries the next step scores")
    print("command: python benchmarks/index_refresh.py " + " ".join(sys.argv[1:]))
    out = run.run()
    rows = out["rows"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("selective_fid", "aligned_fid", "random_fid", "full_fid",
                                                              "none_fid", "sel_next_fid", "aln_next_fid", "none_next_fid")}
    last = rows[-1]
    sel, full = sum(r["sel_docs"] for r in rows), sum(r["full_docs"] for r in rows)
    print()
    print(f"mean top-10 fidelity over {len(rows)} steps (held-out probes): selective {mean['selective_fid']:.3f}  "
          f"aligned {mean['aligned_fid']:.3f}  random {mean['random_fid']:.3f}  full {mean['full_fid']:.3f}  "
          f"none {mean['none_fid']:.3f}")
    print(f"at the last step: selective {last['selective_fid']:.3f}  aligned {last['aligned_fid']:.3f}  "
          f"random {last['random_fid']:.3f}  none {last['none_fid']:.3f}")
    print(f"next step's queries (what the reward reads): selective {mean['sel_next_fid']:.3f}  "
          f"aligned {mean['aln_next_fid']:.3f}  none {mean['none_next_fid']:.3f}")
    print("what a budget buys at the last step, without choosing (that share of documents re-encoded at random, the rest "
          "never refreshed | the rest moved by the correction fitted on them): " + "  ".join(
              f"{int(x * 100)}% {last[share_keys(x)[0]]:.3f} | {last[share_keys(x)[1]]:.3f}" for x in SHARES))
    trained, other = (float(np.mean([r[k] for r in rows])) for k in ("moved_trained", "moved_other"))
    print(f"how far a document moves in one step (mean cosine distance to its previous vector): the documents the step "
          f"trained on {trained:.4f}, every other document {other:.4f} (ratio {trained / max(other, 1e-12):.2f}; "
          "a selective refresh pays off only where this ratio is large)")
    print(f"documents encoded: selective {sel}  aligned {sum(r['aln_docs'] for r in rows)}  "
          f"random {sum(r['rand_docs'] for r in rows)}  full {full}")
    if args.json:
        write_json_atomic(args.json, {"steps": rows, "mean": mean, "ratio": sel / full})
    print(f"ratio: {sel / full:.2f} selective: {last['selective_fid']:.3f} none: {last['none_fid']:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small corpus and few steps (about a minute on 2 CPU cores)")
    ap.add_argument("--model", help="Embedder folder: base vectors from SciFact through this model (drift stays synthetic)")
    ap.add_argument("--docs", type=int, help="corpus size (synthetic) or cap on SciFact docs")
    ap.add_argument("--steps", type=int, help="RL steps to replay")
    ap.add_argument("--batch", type=int, default=16, help="queries per RL step")
    ap.add_argument("--negatives", type=int, default=7, help="hard negatives used per query")
    ap.add_argument("--budget", type=int, help="refresh budget per step (priority tiers)")
    ap.add_argument("--full-every", type=int, help="T: rotating full refresh cycle in steps")
    ap.add_argument("--global-rate", type=float, default=0.02, help="drift: global random change per step")
    ap.add_argument("--local-rate", type=float, default=0.3, help="drift: displacement around each used document per step")
    ap.add_argument("--local-width", type=float, default=0.15, help="drift: how far (in 1 - cosine) a local bump reaches")
    ap.add_argument("--seed", type=int, default=0)
    rl = ap.add_argument_group("--rl: a real RL run (the rl stage's)")
    rl.add_argument("--rl", action="store_true", help="measure on the rl stage's GRPO run instead of simulated drift")
    rl.add_argument("--params", default="params.yaml")
    rl.add_argument("--profile", help="params.yaml profile (default: the file's `profile:`)")
    rl.add_argument("--start", default="models/sft", help="model the RL run starts from")
    rl.add_argument("--data", default="data", help="data stage output")
    rl.add_argument("--measure-every", type=int, default=1, help="full re-encode + fidelity at step 1 and every N steps")
    rl.add_argument("--probe", type=int, default=64, help="held-out probe queries for fidelity")
    rl.add_argument("--logged", default="dvclive/rl", help="the rl stage's DVCLive folder (rewards compared)")
    rl.add_argument("--json", help="also write the per-step rows as JSON here")
    dr = ap.add_argument_group("--drift: the live index during SFT with document-side gradient (real model)")
    dr.add_argument("--drift", action="store_true", help="real training steps drift the documents; arms side by side")
    dr.add_argument("--lr", type=float, default=1e-3, help="--drift: learning rate (high, so documents move)")
    dr.add_argument("--doc-tokens", type=int, default=128, help="--drift: document length cap")
    args = ap.parse_args(argv)
    if args.rl:
        return run_rl(args)
    if args.drift:
        return run_drift(args)

    steps = args.steps or (12 if args.quick else 40)
    if args.model:
        cap = args.docs or (800 if args.quick else None)
        docs, queries, positives, sec_per_doc = scifact_vectors(args.model, cap, args.seed)
        source = f"real Embedder vectors of SciFact ({args.model}); SYNTHETIC drift replayed on top (not a real RL run)"
    else:
        n = args.docs or (2000 if args.quick else 5000)
        docs, queries, positives, sec_per_doc = synthetic_vectors(n, max(4 * args.batch * steps, 256), 64, args.seed)
        source = "synthetic clustered vectors; SYNTHETIC drift (not a real RL run)"
    n_docs = len(docs)
    budget = (128 if args.quick else 256) if args.budget is None else args.budget
    full_every = (10 if args.quick else 50) if args.full_every is None else args.full_every
    cfg = RefreshConfig(budget_per_step=budget, graph_k=8, neighbours_per_doc=4, full_refresh_every=full_every,
                        probe_every=0, probe_size=64, topk_stale=10)
    rng = np.random.default_rng(args.seed + 1)
    order = rng.permutation(len(queries))
    probe_rows, train_rows = order[:cfg.probe_size], order[cfg.probe_size:]
    if len(train_rows) == 0:
        sys.exit("not enough queries: need more than probe_size (64)")

    drift = DriftModel(docs, args.global_rate, args.local_rate, args.local_width, args.seed + 2)
    ids, texts = [f"d{i}" for i in range(n_docs)], [str(i) for i in range(n_docs)]
    counters = {"build": [0], "selective": [0], "full": [0]}
    arms = {}
    for name in ("selective", "full", "none"):
        arms[name] = DocumentIndex(kind="flat", encode_batch=1024)
        arms[name].build(ids, texts, drift.encoder(counters["build"]), version=0)
    t0 = time.perf_counter()
    policy = RefreshPolicy(arms["selective"], cfg)
    graph_seconds = time.perf_counter() - t0

    print(f"vectors: {source}")
    print(f"drift: global_rate={args.global_rate}, local_rate={args.local_rate} per used doc, "
          f"local_width={args.local_width}; "
          f"docs={n_docs} dim={docs.shape[1]} steps={steps} batch={args.batch} negatives={args.negatives}")
    print(f"policy: budget={cfg.budget_per_step} graph_k={cfg.graph_k} neighbours_per_doc={cfg.neighbours_per_doc} "
          f"topk_stale={cfg.topk_stale} rotating slice="
          + (f"{-(-n_docs // full_every)}/step (T={full_every})" if full_every else "off"))
    print(f"not counted per step (same for both arms): initial build of {n_docs} docs; initial graph {graph_seconds:.2f}s; "
          "fidelity probes (a full re-encode each, measurement only)")
    if sec_per_doc:
        print(f"encoder cost measured on this machine: {sec_per_doc * 1000:.1f} ms/doc (est. columns = docs x that)")
    print("command: python benchmarks/index_refresh.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print()
    header = (f"{'step':>4} | {'sel docs':>8} {'sel s':>7} {'sel fid':>7} {'lag mean/max':>12} | "
              f"{'full docs':>9} {'full s':>7} {'full fid':>8} | {'none fid':>8}")
    if sec_per_doc:
        header += f" | {'est sel s':>9} {'est full s':>10}"
    print(header)
    print("-" * len(header))

    totals = {"selective": [0, 0.0], "full": [0, 0.0]}
    fids = {"selective": [], "full": [], "none": []}
    for step in range(1, steps + 1):
        version = step
        batch_rows = rng.choice(train_rows, size=min(args.batch, len(train_rows)), replace=False)
        qvec = drift.apply(queries[batch_rows])  # the rollout: current (pre-update) policy, selective index
        _, topk = arms["selective"].search(qvec, max(cfg.topk_stale, max(map(len, positives)) + args.negatives))
        used_rows: list[int] = []
        for qrow, found in zip(batch_rows, topk):
            pos = positives[qrow]
            negs = [int(d[1:]) for d in found if int(d[1:]) not in pos][:args.negatives]
            used_rows += list(pos) + negs
        used_rows = list(dict.fromkeys(used_rows))
        drift.update(used_rows)  # optimiser step -> policy version `version`

        before = counters["selective"][0]
        t = time.perf_counter()
        stats = policy.step(step, drift.encoder(counters["selective"]), [f"d{r}" for r in used_rows], topk, version)
        sel_s = time.perf_counter() - t
        sel_docs = counters["selective"][0] - before

        before = counters["full"][0]
        t = time.perf_counter()
        refresh(arms["full"], ids, drift.encoder(counters["full"]), version)
        full_s = time.perf_counter() - t
        full_docs = counters["full"][0] - before

        fresh = drift.apply(docs)
        probe = drift.apply(queries[probe_rows])
        fid = {name: fidelity(arms[name], fresh, probe, k=10) for name in arms}
        for name in fids:
            fids[name].append(fid[name])
        totals["selective"][0] += sel_docs
        totals["selective"][1] += sel_s
        totals["full"][0] += full_docs
        totals["full"][1] += full_s
        line = (f"{step:>4} | {sel_docs:>8} {sel_s:>7.3f} {fid['selective']:>7.3f} "
                f"{stats['staleness_mean']:>5.2f}/{stats['staleness_max']:<6.0f} | "
                f"{full_docs:>9} {full_s:>7.3f} {fid['full']:>8.3f} | {fid['none']:>8.3f}")
        if sec_per_doc:
            line += f" | {sel_docs * sec_per_doc:>9.1f} {full_docs * sec_per_doc:>10.1f}"
        print(line + ("  (graph rebuilt)" if stats["graph_rebuilt"] else ""))

    print()
    print(f"mean top-10 fidelity: selective {np.mean(fids['selective']):.3f}  full {np.mean(fids['full']):.3f}  "
          f"none {np.mean(fids['none']):.3f}")
    print(f"documents encoded: selective {totals['selective'][0]}  full {totals['full'][0]}")
    print(f"wall seconds (replay, synthetic-drift encoder): selective {totals['selective'][1]:.2f}  "
          f"full {totals['full'][1]:.2f}  wall ratio {totals['selective'][1] / totals['full'][1]:.2f}")
    print(f"ratio: {totals['selective'][0] / totals['full'][0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
