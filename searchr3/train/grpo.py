"""Stage 2: GRPO whose reward is the rank of the positive document in a live FAISS index (one readable loop).

Setup: the start (SFT) model is the policy (LoRA on top, or all weights) and, with its adapter disabled or
as a frozen copy, the KL reference. It encodes the training corpus (capped at ``max_corpus_docs``: every
document the run's rows use plus seeded distractors) into a ``DocumentIndex`` stamped version 0, and a
``RefreshPolicy`` builds its document kNN graph.

Each step ``s`` (the policy is version ``s``):
  1. take ``queries_per_step`` rows (``common.batch_order``: a pure function of seed and step) and sample
     ``group_size`` reasoning traces per query at ``temperature``;
  2. one no-grad pass over prompt + trace (+ fallback suffix) gives each trace's embedding at the token and
     the log-probs of its generated tokens (``old_logp``); a pass of the reference gives ``ref_logp``;
  3. search the index: rank of the positive → ``combined_reward`` (rank + format); ``group_advantages``;
  4. ``updates_per_step`` optimizer updates of ``clipped_policy_loss + beta · k3 KL`` over the traces of
     groups with a reward spread (groups whose rewards are all equal carry no signal and are skipped, but
     logged), plus ``lambda_nce · InfoNCE`` on (direct query, positive, negatives);
  5. the policy becomes version ``s + 1`` and ``RefreshPolicy.step`` re-encodes the documents just used,
     their graph neighbours, stale documents in the traces' top-k and the rotating slice; every
     ``index.refresh.probe_every`` steps it measures fidelity against a full re-encode on probe queries.
Every ``checkpoint_every`` steps the trainable weights, optimizer, scheduler, RNG states (incl. the torch
generator that samples), step, history, kNN graph and an index snapshot are written; rerunning resumes
there and reaches the same weights as an uninterrupted run. At the end the policy (LoRA merged) is
exported to ``out`` and the index snapshot, stamped with the exported weights' checksum, to ``index_out``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from searchr3.index.config import IndexConfig
from searchr3.index.refresh import REASONS as REFRESH_REASONS, KnnGraph, RefreshPolicy, refresh
from searchr3.index.snapshot import load_snapshot, save_snapshot
from searchr3.index.store import DocumentIndex
from searchr3.model.config import ModelConfig
from searchr3.model.embedder import Embedder, pad_batch
from searchr3.train import common
from searchr3.train.advantages import clipped_policy_loss, group_advantages, masked_sequence_mean
from searchr3.train.grpo_config import GRPOConfig
from searchr3.train.losses.infonce import InfoNCELoss, has_negatives
from searchr3.train.losses.reasoning_ce import IGNORE_INDEX, token_logprobs
from searchr3.train.losses.reference_kl import kl_k3
from searchr3.train.rewards import combined_reward, rank_of

log = logging.getLogger(__name__)

# (ids, mask, positions, start) -> (final hidden states (B, T, h), LM logits from position `start` on (B, T - start, V))
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
REQUIRED_KEYS = ("query_id", "query", "positive", "negatives")
INDEX_CHECKPOINTS = "index"


# ---- data: rows → doc ids, the corpus the index holds -------------------------------------------

def attach_doc_ids(rows: list[dict], corpus: dict[str, str]) -> tuple[list[dict], dict[str, str]]:
    """Rows with ``positive_id`` and ``negative_ids`` naming documents of the returned corpus.

    An id given in the row is kept (its text added to the corpus when missing); a document without an
    id is found in ``corpus`` by its exact text, else added as ``rl:<query_id>:pos`` / ``rl:<query_id>:neg<j>``.
    """
    corpus = dict(corpus)
    by_text = {text: doc_id for doc_id, text in corpus.items()}

    def resolve(given, text: str, synthetic: str) -> str:
        doc_id = given if given else by_text.get(text, synthetic)
        if doc_id not in corpus:
            corpus[doc_id] = text
            by_text.setdefault(text, doc_id)
        return doc_id

    out = []
    for n, row in enumerate(rows):
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise ValueError(f"train row {n} ({row.get('query_id', '?')}): missing {missing}")
        qid = row["query_id"]
        given_negs = list(row.get("negative_ids") or [])
        negative_ids = [resolve(given_negs[j] if j < len(given_negs) else None, text, f"rl:{qid}:neg{j}")
                        for j, text in enumerate(row["negatives"])]
        out.append(dict(row, positive_id=resolve(row.get("positive_id"), row["positive"], f"rl:{qid}:pos"),
                        negative_ids=negative_ids))
    return out, corpus


def used_doc_ids(row: dict, negatives_per_query: int) -> list[str]:
    return [row["positive_id"]] + list(row["negative_ids"][:negatives_per_query])


def select_corpus(rows: list[dict], corpus: dict[str, str], max_docs: int, seed: int) -> dict[str, str]:
    """Every document ``rows`` use, plus seeded distractors up to ``max_docs`` (0 = the whole corpus); sorted by id."""
    keep = {d for row in rows for d in [row["positive_id"], *row["negative_ids"]]}
    others = sorted(set(corpus) - keep)
    if max_docs > 0:
        random.Random(seed).shuffle(others)
        others = others[: max(0, max_docs - len(keep))]
    return {d: corpus[d] for d in sorted(keep | set(others))}


# ---- traces → tensors ---------------------------------------------------------------------------

def trace_sequences(reasoning) -> tuple[list[list[int]], list[list[int]]]:
    """``(ids, labels)`` per trace: prompt + generated (+ fallback suffix); labels on the generated tokens only.

    The generated tokens include ``<|embed_token|>`` when the model emitted it; the fallback suffix is
    not the policy's action and is not labelled.
    """
    seqs, labels = [], []
    for prompt, generated, full in zip(reasoning.prompts, reasoning.generated, reasoning.full_ids):
        tail = len(full) - len(prompt) - len(generated)
        seqs.append(list(full))
        labels.append([IGNORE_INDEX] * len(prompt) + list(generated) + [IGNORE_INDEX] * tail)
    return seqs, labels


def generated_logprobs(forward: Forward, seqs: list[list[int]], labels: list[list[int]], pad_id: int, device,
                       embed_id: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Per sequence, the log-probs of its labelled tokens (1-D float32); the embeddings at the token if ``embed_id``.

    Logits are computed only from the position before the earliest labelled token on (the prompt needs none),
    which saves most of the (B, T, vocabulary) tensor.
    """
    ids, mask, pos = pad_batch(seqs, pad_id, "right", device)
    lab = torch.full_like(ids, IGNORE_INDEX)
    for i, row in enumerate(labels):
        lab[i, : len(row)] = torch.tensor(row)
    labelled = (lab != IGNORE_INDEX).any(dim=0).nonzero()
    start = max(int(labelled[0]) - 1, 0) if len(labelled) else 0
    hidden, logits = forward(ids, mask, pos, start)
    logp, keep = token_logprobs(logits, lab[:, start:])
    rows = [logp[i][keep[i]] for i in range(len(seqs))]
    return rows, (common.pool(hidden, ids, embed_id) if embed_id is not None else None)


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length 1-D rows into ``(values (B, L), mask (B, L))``, zero padded."""
    values = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    lengths = torch.tensor([len(r) for r in rows], device=values.device)
    return values, torch.arange(values.shape[1], device=values.device)[None, :] < lengths[:, None]


def chunks(items: list, size: int) -> list[list]:
    return [items[i: i + size] for i in range(0, len(items), max(1, size))]


# ---- one step's pieces --------------------------------------------------------------------------

def score_traces(policy: Forward, reference: Forward, seqs, labels, embedder: Embedder, micro: int):
    """No-grad pass of policy and reference: ``(old_logp rows, ref_logp rows, trace embeddings (n, d))``."""
    old_rows, ref_rows, vectors = [], [], []
    with torch.no_grad():
        for part in chunks(list(range(len(seqs))), micro):
            s, lab = [seqs[i] for i in part], [labels[i] for i in part]
            rows, vec = generated_logprobs(policy, s, lab, embedder.pad_id, embedder.device, embedder.embed_token_id)
            old_rows += rows
            vectors.append(vec.cpu())
            ref_rows += generated_logprobs(reference, s, lab, embedder.pad_id, embedder.device)[0]
    return old_rows, ref_rows, torch.cat(vectors).numpy()


def policy_update(policy: Forward, seqs, labels, active: list[int], old_rows, ref_rows, advantages: torch.Tensor,
                  embedder: Embedder, config: GRPOConfig, bf16: bool) -> dict[str, float]:
    """Backward ``clipped_policy_loss + beta · k3 KL`` over the ``active`` traces, chunk by chunk (no optimizer step).

    Each chunk's loss is weighted by its share of the active traces, so the gradient is that of the mean
    over traces, whatever ``micro_batch``.
    """
    total = {"policy": 0.0, "kl_penalty": 0.0}
    clipped_tokens, tokens = 0.0, 0
    for part in chunks(active, config.micro_batch):
        with common.autocast(bf16, embedder.device):
            rows, _ = generated_logprobs(policy, [seqs[i] for i in part], [labels[i] for i in part],
                                         embedder.pad_id, embedder.device)
        logp, mask = pad_rows(rows)
        old, ref = pad_rows([old_rows[i] for i in part])[0], pad_rows([ref_rows[i] for i in part])[0]
        result = clipped_policy_loss(logp, old, advantages[part].to(logp.device), mask, config.clip_eps)
        kl = masked_sequence_mean(kl_k3(logp, ref), mask)
        share = len(part) / len(active)
        loss = (result.loss + config.beta * kl) * share
        if loss.requires_grad:
            loss.backward()
        total["policy"] += float(result.loss.detach()) * share
        total["kl_penalty"] += float(kl.detach()) * share
        n_tokens = int(mask.sum())
        clipped_tokens += result.clip_fraction * n_tokens
        tokens += n_tokens
    return total | {"clip_fraction": clipped_tokens / tokens if tokens else 0.0}


def nce_loss(model, embedder: Embedder, rows: list[dict], loss_fn: InfoNCELoss, config: GRPOConfig) -> torch.Tensor:
    """InfoNCE on (direct query embedding, positive, ``negatives_per_query`` hard negatives), with gradient."""
    k = config.negatives_per_query
    q_ids, q_mask, q_pos = pad_batch(embedder.tokenize_queries([r["query"] for r in rows]), embedder.pad_id, "right", embedder.device)
    q_vec = common.pool(common.hidden_and_logits(model, q_ids, q_mask, q_pos, False)[0], q_ids, embedder.embed_token_id)
    docs = []
    for r in rows:
        negs = list(r["negatives"][:k])
        negs += [negs[-1] if negs else r["positive"]] * (k - len(negs))  # pad short lists by repetition
        docs += [r["positive"]] + negs
    d_ids, d_mask, d_pos = pad_batch(embedder.tokenize_documents(docs), embedder.pad_id, "right", embedder.device)
    with torch.set_grad_enabled(config.nce_doc_grad):
        d_hidden = common.hidden_and_logits(model, d_ids, d_mask, d_pos, False)[0]
        d_vec = common.pool(d_hidden, d_ids, embedder.embed_token_id).view(len(rows), 1 + k, -1)
    return loss_fn(q_vec, d_vec[:, 0], d_vec[:, 1:] if k else None)


def step_metrics(rewards: list[float], emitted: list[bool], group_size: int, old_rows, ref_rows,
                 reasoning) -> dict[str, float]:
    r = np.asarray(rewards, dtype=np.float64)
    groups = r.reshape(-1, group_size)
    old, mask = pad_rows(old_rows)
    kl = float(masked_sequence_mean(kl_k3(old, pad_rows(ref_rows)[0]), mask))
    return {"reward/mean": float(r.mean()), "reward/std": float(r.std()), "reward/share_ge_half": float((r >= 0.5).mean()),
            "emitted": float(np.mean(emitted)), "groups/active": float((groups.max(1) > groups.min(1)).mean()),
            "kl": kl, "trace_tokens": float(np.mean([len(g) for g in reasoning.generated]))}


# ---- the loop -----------------------------------------------------------------------------------

def train_grpo(config: GRPOConfig, model_config: ModelConfig, index_config: IndexConfig, start_dir: str | Path,
               train_rows: list[dict], corpus: dict[str, str], out: str | Path, checkpoint_dir: str | Path,
               index_out: str | Path, live_dir: str | Path | None = "dvclive/rl", progress: bool = True,
               on_step: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) GRPO from the model in ``start_dir``; export it to ``out``, the index to ``index_out``; return the summary.

    ``on_step`` (measurement hook, e.g. ``benchmarks/index_refresh.py --rl``) is called once after the index is
    built or restored (``step`` 0 for a fresh run) and after every step's refresh, with ``{"step", "index",
    "encode_documents", "encode_queries", "metrics", "refresh"}``; the encoders use the current policy. It must
    not change the index or the model; it draws no random numbers, so the run stays the same with or without it.
    """
    _check_config(config)
    if not train_rows:
        raise ValueError("no training rows")
    common.seed_everything(config.seed)
    started = time.time()
    embedder = Embedder.from_pretrained(start_dir, config=copy.deepcopy(model_config), precision="fp32")
    embedder.config.max_doc_tokens, embedder.config.max_query_tokens = config.max_doc_tokens, config.max_query_tokens
    tokenizer, device, embed_id = embedder.tokenizer, embedder.device, embedder.embed_token_id
    start_checksum = embedder.checksum
    bf16 = common.use_bf16(config.precision, device)
    model, policy, reference = policy_and_reference(embedder, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: common.lr_factor(s, config.warmup_steps, config.steps))
    nce = InfoNCELoss(temperature=config.nce_temperature, in_batch_negatives=True)

    order = common.batch_order(len(train_rows), config.queries_per_step, config.steps, config.seed)
    rows, full_corpus = attach_doc_ids(train_rows, corpus)
    texts = select_corpus([rows[i] for step in order for i in step], full_corpus, config.max_corpus_docs, config.seed)
    probe = [rows[i]["query"] for i in sorted(random.Random(config.seed).sample(
        range(len(rows)), min(index_config.refresh.probe_size, len(rows))))]

    def encode_fn(batch: list[str]) -> np.ndarray:
        model.eval()
        with common.autocast(bf16, device):
            return embedder.encode_documents(batch, batch_size=config.micro_batch)

    fingerprint = common.fingerprint(config, start_checksum, train_rows, [dataclasses.asdict(index_config), sorted(corpus)])
    state = {"step": 0, "policy_version": 0, "history": [], "fingerprint": fingerprint}
    ckpt = common.restore(checkpoint_dir, fingerprint, model, optimizer, scheduler)
    if ckpt is not None:
        state = ckpt["state"]
        index = load_snapshot(Path(checkpoint_dir) / INDEX_CHECKPOINTS / ckpt["index_dir"], texts=texts)
        index.encode_batch = index_config.encode_batch
        refresher = RefreshPolicy(index, index_config.refresh, graph=KnnGraph(ckpt["graph"]), progress=progress)
    else:
        index = DocumentIndex.from_config(index_config)
        index.build(list(texts), list(texts.values()), encode_fn, version=0, progress=progress)
        refresher = RefreshPolicy(index, index_config.refresh, progress=progress)

    def encode_queries(queries: list[str]) -> np.ndarray:
        model.eval()
        with common.autocast(bf16, device):
            return embedder.encode_queries(queries, batch_size=config.micro_batch).vectors

    def notify(metrics: dict, refresh_stats: dict | None) -> None:
        if on_step is not None:
            on_step({"step": state["step"], "index": index, "encode_documents": encode_fn, "encode_queries": encode_queries,
                     "metrics": metrics, "refresh": refresh_stats})

    notify({}, None)
    live = common.open_live(live_dir, resume=ckpt is not None)
    search_k = max(config.reward_cutoff, index_config.refresh.topk_stale)
    G = config.group_size

    bar = common.progress_bar(config.steps, state["step"], progress, "rl")
    for step in range(state["step"], config.steps):
        step_started = time.time()
        batch = [rows[i] for i in order[step]]
        # 1-3. sample G traces per query with policy version `step`, score them against the live index
        model.eval()
        with common.autocast(bf16, device):
            reasoning = embedder.generate_reasoning([r["query"] for r in batch for _ in range(G)], batch_size=config.micro_batch,
                                                    temperature=config.temperature, max_new_tokens=config.max_new_tokens)
            timings = {"time/generate_s": time.time() - step_started}
            seqs, labels = trace_sequences(reasoning)
            old_rows, ref_rows, vectors = score_traces(policy, reference, seqs, labels, embedder, config.micro_batch)
        _, ranked = index.search(vectors, search_k)
        ranks = [rank_of(batch[i // G]["positive_id"], hits) for i, hits in enumerate(ranked)]
        rewards = combined_reward(ranks, reasoning.emitted, config.reward_cutoff, config.w_rank, config.w_format)
        advantages = group_advantages(rewards, G)
        active = [i for i in range(len(seqs)) if has_spread(rewards[i // G * G:(i // G + 1) * G])]
        metrics = step_metrics(rewards, reasoning.emitted, G, old_rows, ref_rows, reasoning)
        timings["time/score_s"] = time.time() - step_started - sum(timings.values())
        # 4. policy update(s): clipped surrogate + β·KL on groups with a reward spread, λ·InfoNCE on the documents
        model.train()
        for _ in range(config.updates_per_step):
            losses = {"policy": 0.0, "kl_penalty": 0.0, "clip_fraction": 0.0}
            if active:
                losses = policy_update(policy, seqs, labels, active, old_rows, ref_rows, advantages, embedder, config, bf16)
            if config.lambda_nce > 0:
                with common.autocast(bf16, device):
                    term = nce_loss(model, embedder, batch, nce, config)
                (config.lambda_nce * term).backward()
                losses["nce"] = float(term.detach())
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        state["step"] = state["policy_version"] = step + 1
        timings["time/update_s"] = time.time() - step_started - sum(timings.values())
        # 5. refresh the index with policy version step + 1; probe fidelity when due
        probe_vectors = None
        if index_config.refresh.probe_every > 0 and step % index_config.refresh.probe_every == 0:
            probe_vectors = encode_queries(probe)
        used = list(dict.fromkeys(d for r in batch for d in used_doc_ids(r, config.negatives_per_query)))
        stats = refresher.step(step, encode_fn, used, ranked, state["policy_version"], probe_query_vectors=probe_vectors)
        timings["time/refresh_s"] = time.time() - step_started - sum(timings.values())  # probe included when due
        metrics |= {f"loss/{k}": v for k, v in losses.items() if k != "clip_fraction"}
        metrics |= {"clip_fraction": losses["clip_fraction"], "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                    "refresh/size": stats["refreshed"], **{f"refresh/{k}": stats[k] for k in REFRESH_REASONS},
                    "index/staleness_mean": stats["staleness_mean"], "index/staleness_max": stats["staleness_max"],
                    **timings, "time/step_s": time.time() - step_started}
        if stats["fidelity"] is not None:
            metrics["index/fidelity"] = stats["fidelity"]
        common.log_metrics(live, metrics, state["step"])
        notify(metrics, stats)
        state["history"].append({"step": state["step"], **metrics})
        if bar:
            bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", emit=f"{metrics['emitted']:.2f}")
            bar.update(1)
        if state["step"] % config.checkpoint_every == 0 or state["step"] == config.steps:
            save_checkpoint(checkpoint_dir, model, optimizer, scheduler, state, index, refresher.graph, start_checksum)
    if bar:
        bar.close()

    final_refreshed = 0
    if config.final_refresh:
        stale = [d for d, v in zip(index.doc_ids, index.versions) if v < state["policy_version"]]
        final_refreshed = refresh(index, stale, encode_fn, state["policy_version"], progress=progress)
    summary = summarize(state["history"], config, len(rows), len(index), final_refreshed, time.time() - started)
    manifest = {"stage": "rl", "start": str(start_dir), "start_weights_sha256": start_checksum, "embed_token_id": embed_id,
                "rl": summary}
    common.export_model(model, tokenizer, out, manifest)
    summary["model_checksum"] = json.loads((Path(out) / "manifest.json").read_text())["weights_sha256"]
    stale_now = index.staleness(state["policy_version"])
    save_snapshot(index, index_out, {"model_checksum": summary["model_checksum"], "stage": "rl", "model_dir": str(out),
                                     "policy_version": state["policy_version"], "staleness_mean": stale_now["mean_lag"],
                                     "staleness_max": stale_now["max_lag"]})
    if live is not None:
        live.end()
    return summary


def has_spread(group_rewards: list[float]) -> bool:
    """Whether a group's rewards differ (else its advantages are all 0 and it carries no policy signal)."""
    return max(group_rewards) > min(group_rewards)


def policy_and_reference(embedder: Embedder, config: GRPOConfig):
    """``(trainable model, policy forward, reference forward)``; the reference is the start model, never trained."""
    model = embedder.model
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if config.mode == "lora":
        model = common.wrap_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets,
                                 embedder.embed_token_id)

        def reference(ids, mask, pos, start):
            with model.disable_adapter():
                return hidden_and_tail_logits(model, ids, mask, pos, start)
    else:
        frozen = copy.deepcopy(model).eval().requires_grad_(False)

        def reference(ids, mask, pos, start):
            return hidden_and_tail_logits(frozen, ids, mask, pos, start)

    def policy(ids, mask, pos, start):
        return hidden_and_tail_logits(model, ids, mask, pos, start)

    return model, policy, reference


def hidden_and_tail_logits(model, ids, mask, pos, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states of every position, LM logits only from position ``start`` on."""
    hidden, _ = common.hidden_and_logits(model, ids, mask, pos, False)
    return hidden, common.causal_lm(model).get_output_embeddings()(hidden[:, start:])


def save_checkpoint(checkpoint_dir, model, optimizer, scheduler, state: dict, index: DocumentIndex, graph: KnnGraph,
                    start_checksum: str) -> None:
    """Index snapshot in a folder named after the step, then the atomic checkpoint that names it, then drop older snapshots.

    A kill at any point leaves ``checkpoint.pt`` pointing at a complete snapshot of the same step.
    """
    snapshots = Path(checkpoint_dir) / INDEX_CHECKPOINTS
    name = f"step-{state['step']:06d}"
    save_snapshot(index, snapshots / name, {"model_checksum": f"{start_checksum}+rl-step-{state['step']}",
                                            "policy_version": state["policy_version"]})
    common.save_checkpoint(checkpoint_dir, {
        "weights": common.trainable_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": common.rng_state(),
        "state": state, "index_dir": name, "graph": graph.neighbours.copy()})
    for old in snapshots.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def summarize(history: list[dict], config: GRPOConfig, n_rows: int, n_docs: int, final_refreshed: int, wall_s: float) -> dict:
    fidelity = [(h["step"], h["index/fidelity"]) for h in history if "index/fidelity" in h]
    first, last = (history[0], history[-1]) if history else ({}, {})
    return {
        "steps": config.steps, "mode": config.mode, "train_rows": n_rows, "index_docs": n_docs,
        "traces_per_step": config.queries_per_step * config.group_size,
        "reward_first": first.get("reward/mean"), "reward_last": last.get("reward/mean"),
        "reward_mean": float(np.mean([h["reward/mean"] for h in history])) if history else None,
        "emission_rate": float(np.mean([h["emitted"] for h in history])) if history else None,
        "emission_rate_last": last.get("emitted"),
        "staleness_mean": float(np.mean([h["index/staleness_mean"] for h in history])) if history else None,
        "staleness_max": max((h["index/staleness_max"] for h in history), default=None),
        "fidelity": fidelity[-1][1] if fidelity else None, "fidelity_step": fidelity[-1][0] if fidelity else None,
        "refreshed_total": int(sum(h["refresh/size"] for h in history)), "final_refreshed": final_refreshed,
        "train_s": round(float(sum(h["time/step_s"] for h in history)), 1), "wall_s": round(wall_s, 1),
    }


def _check_config(config: GRPOConfig) -> None:
    problems = []
    if config.mode not in ("lora", "full"):
        problems.append(f"mode must be lora or full, not {config.mode!r}")
    if config.group_size < 2:
        problems.append(f"group_size must be >= 2 (advantages need a spread), got {config.group_size}")
    if config.temperature <= 0:
        problems.append(f"temperature must be > 0 (greedy traces of a group are identical), got {config.temperature}")
    for name in ("steps", "queries_per_step", "updates_per_step", "max_new_tokens", "micro_batch", "checkpoint_every"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.negatives_per_query < 0 or config.max_corpus_docs < 0:
        problems.append("negatives_per_query and max_corpus_docs must be >= 0")
    if config.lambda_nce > 0 and not has_negatives(config.queries_per_step, None, True) and config.negatives_per_query == 0:
        problems.append("lambda_nce > 0 needs negatives_per_query >= 1 or queries_per_step >= 2")
    if problems:
        raise ValueError("rl: " + "; ".join(problems))
