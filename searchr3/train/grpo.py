"""Stage 2: GRPO whose reward is the rank of the positive document in a live FAISS index (one readable loop).

Setup (``trainer_setup.load_trainee``, shared with SFT): the start (SFT) model is the policy (LoRA on top, or
all weights) and, with its adapter disabled or as a frozen copy, the KL reference. It encodes the training
corpus (capped at ``max_corpus_docs``: every document the run's rows use plus seeded distractors) into a
``DocumentIndex`` stamped version 0, and a ``RefreshPolicy`` builds its document kNN graph. Document ids are
the data stage's, unchanged (``<source>:<doc id>``): the rows name their positive and negatives by them, the
index is keyed by them, the reward looks the positive up by them.

Each step ``s`` (the policy is version ``s``) runs five phases, each a function below, each timed
(``time/<phase>_s``):
  1. ``rollout``: take ``queries_per_step`` rows (``common.batch_order``: a pure function of seed and step) and
     sample ``group_size`` reasoning traces per query at ``temperature``;
  2. ``score``: one no-grad pass over prompt + trace (+ fallback suffix) gives each trace's embedding at the
     token and the log-probs of its generated tokens (``old_logp``); a pass of the reference gives ``ref_logp``;
  3. ``reward``: search the index: rank of the positive → ``combined_reward`` (rank + format) →
     ``group_advantages``; groups whose rewards are all equal carry no signal (skipped by the update, logged);
  4. ``update``: ``updates_per_step`` optimizer updates of ``ClippedPolicyLoss`` (clipped surrogate + beta · k3
     KL, ``losses/clipped_policy.py``) over the traces of groups with a reward spread, plus ``lambda_nce ·
     InfoNCE`` on (direct query, positive, negatives); the policy becomes version ``s + 1``;
  5. ``refresh``: ``RefreshPolicy.step`` re-encodes the documents just used, their graph neighbours, stale
     documents in the traces' top-k and the rotating slice; every ``index.refresh.probe_every`` steps it
     measures fidelity against a full re-encode on probe queries.
Every ``checkpoint_every`` steps the trainable weights, optimizer, scheduler, RNG states (incl. the torch
generator that samples), step, history, kNN graph and an index snapshot are written; rerunning resumes
there and reaches the same weights as an uninterrupted run. At the end the policy (LoRA merged) is
exported to ``out`` and the index snapshot, stamped with the exported weights' checksum, to ``index_out``.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from searchr3.index.config import IndexConfig
from searchr3.index.refresh import REASONS as REFRESH_REASONS, KnnGraph, RefreshPolicy, refresh
from searchr3.index.snapshot import load_snapshot, save_snapshot
from searchr3.index.store import DocumentIndex
from searchr3.model.config import ModelConfig
from searchr3.model.embedder import LabelledSequence, Reasoning, pad_labelled
from searchr3.model.padding import pad_batch
from searchr3.train import common
from searchr3.train.advantages import group_advantages
from searchr3.train.common import PhaseTimer
from searchr3.train.distributed import SINGLE, Dist
from searchr3.train.distributed import init as init_distributed
from searchr3.train.grpo_config import GRPOConfig
from searchr3.train.losses.clipped_policy import ClippedPolicyLoss, masked_sequence_mean
from searchr3.train.losses.infonce import InfoNCELoss, has_negatives
from searchr3.train.losses.reasoning_ce import token_logprobs
from searchr3.train.losses.reference_kl import kl_k3
from searchr3.train.rewards import combined_reward, rank_of
from searchr3.train.trainer_setup import (Trainee, drop_rows_without_negatives, infonce_ignore, known_positives, load_trainee,
                                          row_document_ids, row_documents, with_distractors)

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("query", "positive_id", "positive", "negative_ids", "negatives")
INDEX_CHECKPOINTS = "index"


# ---- data: the rows' documents, the corpus the index holds ----------------------------------------

def check_rows(rows: list[dict], corpus: dict[str, str]) -> None:
    """Refuse, before anything loads, a row that lacks a key the loop reads or names a document not in ``corpus``."""
    if not rows:
        raise ValueError("no training rows")
    for n, row in enumerate(rows):
        where = f"train row {n} ({row.get('query_id', '?')})"
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise ValueError(f"{where}: missing {missing}")
        if len(row["negative_ids"]) != len(row["negatives"]):
            raise ValueError(f"{where}: {len(row['negative_ids'])} negative_ids for {len(row['negatives'])} negatives")
        unknown = [d for d in [row["positive_id"], *row["negative_ids"]] if d not in corpus]
        if unknown:
            raise ValueError(f"{where}: document id(s) {unknown[:3]} not in the training corpus "
                             "(rows and corpus must come from the same data stage)")


def used_doc_ids(row: dict, negatives_per_query: int) -> list[str]:
    return [row["positive_id"]] + list(row["negative_ids"][:negatives_per_query])


def select_corpus(rows: list[dict], corpus: dict[str, str], max_docs: int, seed: int) -> dict[str, str]:
    """Every document ``rows`` use, plus seeded distractors up to ``max_docs`` (0 = the whole corpus); sorted by id."""
    keep = {d for row in rows for d in [row["positive_id"], *row["negative_ids"]]}
    return {d: corpus[d] for d in with_distractors(keep, corpus, max_docs, seed)}


def open_index(trainee: Trainee, texts: dict[str, str], index_config: IndexConfig, ckpt: dict | None,
               checkpoint_dir: str | Path, micro_batch: int, progress: bool,
               dist: Dist = SINGLE) -> tuple[DocumentIndex, RefreshPolicy]:
    """The live index and its refresh policy: the checkpoint's snapshot and kNN graph, or ``texts`` encoded at version 0."""
    if ckpt is not None:
        index = load_snapshot(Path(checkpoint_dir) / INDEX_CHECKPOINTS / ckpt["index_dir"], texts=texts)
        index.encode_batch = index_config.encode_batch
        return index, RefreshPolicy(index, index_config.refresh, graph=KnnGraph(ckpt["graph"]), progress=progress)
    index = DocumentIndex.from_config(index_config)
    index.build(list(texts), list(texts.values()), dist.encode_split(partial(trainee.encode_documents, batch_size=micro_batch)),
                version=0, progress=progress)  # scale-out: each rank encodes its share, every rank gets the index
    return index, RefreshPolicy(index, index_config.refresh, progress=progress)


# ---- traces → tensors ---------------------------------------------------------------------------

def generated_logprobs(model, seqs: list[LabelledSequence], pad_id: int, device, embed_id: int | None = None,
                       temperature: float = 1.0) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Per sequence, the log-probs of its labelled tokens (1-D float32) under ``softmax(logits / temperature)``, the
    distribution the tokens were sampled from; the embeddings at the token if ``embed_id``.

    Logits are computed only from the position before the earliest labelled token on (the prompt needs none),
    which saves most of the (B, T, vocabulary) tensor.
    """
    ids, mask, pos, lab = pad_labelled(seqs, pad_id, device)
    start = common.first_target_position(lab)
    hidden, _ = common.hidden_and_logits(model, ids, mask, pos, False)
    logits = common.lm_logits(model, hidden[:, start:])
    logp, keep = token_logprobs(logits.float() / temperature, lab[:, start:])
    rows = [logp[i][keep[i]] for i in range(len(seqs))]
    return rows, (common.pool(hidden, ids, embed_id) if embed_id is not None else None)


def packed_logprobs(model, seqs: list[LabelledSequence], device, embed_id: int | None = None,
                    temperature: float = 1.0, splits: list[list[int]] | None = None
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """``generated_logprobs`` without padding: the sequences packed end to end (``common.packed_hidden``) and the LM
    head only at the positions that predict a labelled token. Without ``embed_id`` (no embedding wanted) each
    sequence is cut after its last such position: attention is causal, so its log-probs are the same.
    ``splits`` (per sequence, increasing cut points): the parts before the cuts are packed once for all the
    sequences that share them (``common.pack_with_prefixes``: the template's system prompt, a group's prompt);
    the same hidden states for a fraction of the tokens."""
    from searchr3.model.config import IGNORE_INDEX

    if embed_id is None:
        cut = [max((i for i, t in enumerate(s.labels) if t != IGNORE_INDEX), default=1) for s in seqs]
        ids = [s.ids[:max(n, 1)] for s, n in zip(seqs, cut)]
    else:
        ids = [s.ids for s in seqs]
    labels = [s.labels[:len(i) + 1] for s, i in zip(seqs, ids)]  # the label after a cut is still predicted
    if splits is not None:
        packed = common.pack_with_prefixes(ids, splits, device)
        where = packed.where
    else:
        packed = common.pack_sequences(ids, device)
        where = [range(start, start + len(i)) for start, i in zip(packed.starts, ids)]
    positions, targets, counts = [], [], []
    for row, at in zip(labels, where):
        hits = [(at[t], row[t + 1]) for t in range(len(row) - 1) if row[t + 1] != IGNORE_INDEX]
        positions += [h[0] for h in hits]
        targets += [h[1] for h in hits]
        counts.append(len(hits))
    hidden = common.packed_hidden(model, packed)
    logits = common.lm_logits(model, hidden[torch.tensor(positions, dtype=torch.long, device=device)]).float()
    logits = logits / temperature
    chosen = logits.gather(-1, torch.tensor(targets, dtype=torch.long, device=device)[:, None]).squeeze(-1)
    logp = chosen - logits.logsumexp(-1)
    vectors = common.packed_pool(hidden, packed, embed_id) if embed_id is not None else None
    return list(logp.split(counts)), vectors


def prompt_length(seq: LabelledSequence) -> int:
    """Tokens before the first labelled one (the prompt the sampled tokens continue)."""
    from searchr3.model.config import IGNORE_INDEX

    return next((t for t, v in enumerate(seq.labels) if v != IGNORE_INDEX), len(seq.ids))


def sequence_logprobs(trainee: Trainee, model, seqs: list[LabelledSequence], embed_id: int | None = None,
                      temperature: float = 1.0) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """``packed_logprobs`` when the trainee packs (``Trainee.packed``; the template's system prompt and each group's
    prompt packed once), else ``generated_logprobs`` (padded)."""
    e = trainee.embedder
    if trainee.packed:
        splits = [[e.template_prefix_length(s.ids), prompt_length(s)] for s in seqs]
        return packed_logprobs(model, seqs, e.device, embed_id, temperature, splits)
    return generated_logprobs(model, seqs, e.pad_id, e.device, embed_id, temperature)


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length 1-D rows into ``(values (B, L), mask (B, L))``, zero padded."""
    values = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    lengths = torch.tensor([len(r) for r in rows], device=values.device)
    return values, torch.arange(values.shape[1], device=values.device)[None, :] < lengths[:, None]


def chunks(items: list, size: int) -> list[list]:
    return [items[i: i + size] for i in range(0, len(items), max(1, size))]


# ---- the five phases of one step ----------------------------------------------------------------

@dataclass
class Scores:
    """Phase 2's output, one entry per trace."""

    seqs: list[LabelledSequence]  # prompt + trace (+ fallback suffix), labelled on the generated tokens
    old_logp: list[torch.Tensor]  # log-probs of the generated tokens under the policy that sampled them
    ref_logp: list[torch.Tensor]  # ... under the frozen reference
    vectors: np.ndarray  # (n, d) embeddings at the token


@dataclass
class Rewards:
    """Phase 3's output, one entry per trace (groups of ``group_size`` consecutive traces)."""

    ranked: list[list[str]]  # doc ids of the top hits in the live index
    rewards: list[float]
    advantages: torch.Tensor  # group-normalised rewards
    active: list[int]  # traces of groups whose rewards differ (the others carry no policy signal)


def rollout(trainee: Trainee, batch: list[dict], config: GRPOConfig) -> Reasoning:
    """1. ``group_size`` reasoning traces per query, sampled from the current policy (no n-gram ban: the log-probs
    ``score`` computes are those of the distribution the traces were drawn from)."""
    trainee.model.eval()
    with trainee.autocast(), torch.no_grad(), trainee.merged():
        return trainee.embedder.generate_reasoning([r["query"] for r in batch for _ in range(config.group_size)],
                                                   batch_size=config.micro_batch, temperature=config.temperature,
                                                   share_prompts=trainee.fast, no_repeat_ngram=0)


def score(trainee: Trainee, reasoning: Reasoning, micro_batch: int, temperature: float) -> Scores:
    """2. No-grad passes over each trace: the policy's embedding and old log-probs, the reference's log-probs (both
    at the sampling temperature; the actions are the generated tokens and the stop, ``Reasoning.sequences``)."""
    e, seqs = trainee.embedder, reasoning.sequences()
    old_logp, ref_logp, vectors = [], [], []
    with torch.no_grad(), trainee.autocast():
        for part in chunks(seqs, micro_batch):
            with trainee.merged():
                rows, vec = sequence_logprobs(trainee, trainee.model, part, e.embed_token_id, temperature)
            old_logp += rows
            vectors.append(vec.cpu())
            with trainee.reference() as reference:
                ref_logp += sequence_logprobs(trainee, reference, part, temperature=temperature)[0]
    return Scores(seqs, old_logp, ref_logp, torch.cat(vectors).numpy())


def reward(index: DocumentIndex, batch: list[dict], reasoning: Reasoning, scores: Scores, config: GRPOConfig,
           search_k: int) -> Rewards:
    """3. Rank of each trace's positive in the live index → rank + format reward → group advantages."""
    G = config.group_size
    _, ranked = index.search(scores.vectors, search_k)
    ranks = [rank_of(batch[i // G]["positive_id"], hits) for i, hits in enumerate(ranked)]
    rewards = combined_reward(ranks, reasoning.emitted, config.reward_cutoff, config.w_rank, config.w_format)
    advantages = group_advantages(rewards, G)
    active = [i for i in range(len(rewards)) if has_spread(rewards[i // G * G:(i // G + 1) * G])]
    return Rewards(ranked, rewards, advantages, active)


def update(trainee: Trainee, batch: list[dict], scores: Scores, rewards: Rewards, policy_loss: ClippedPolicyLoss,
           nce: InfoNCELoss, config: GRPOConfig, index: DocumentIndex, positives: dict[str, set[str]],
           version: int | None = None, dist: Dist = SINGLE, everyone: list[dict] | None = None) -> dict[str, float]:
    """4. ``updates_per_step`` optimizer updates (policy loss on the active traces + λ_trace_nce · InfoNCE on every
    trace's embedding + λ_nce · InfoNCE on the direct queries), then the schedule. ``version``: the policy's
    version before this update (the direct InfoNCE reads document vectors of that version from the index).

    On N processes (``dist``; ``batch`` is this rank's share of ``everyone``): the policy loss is this rank's share
    of the mean over every rank's active traces, InfoNCE sees the whole step's documents, gradients are averaged."""
    trainee.model.train()
    shares, _ = dist.token_shares({"active": len(rewards.active)})  # scale-out: a rank's share of the active traces
    trace_nce = TraceNCE(nce, config.lambda_trace_nce, batch, config.group_size, config.negatives_per_query, index, positives)
    for _ in range(config.updates_per_step):
        losses = {"policy": 0.0, "kl_penalty": 0.0, "clip_fraction": 0.0}
        if rewards.active or trace_nce.on:
            losses = policy_backward(trainee, scores, rewards.active, rewards.advantages, policy_loss, config, trace_nce,
                                     shares.get("active", 1.0))
        if config.lambda_nce > 0:
            with trainee.autocast():
                term = nce_loss(trainee, batch, nce, config, positives, index, version, dist, everyone)
            (config.lambda_nce * term).backward()
            losses["nce"] = float(term.detach())
        dist.sync_gradients(trainee.params)  # scale-out: the mean gradient over ranks
        grad_norm = trainee.optimizer_step(config.max_grad_norm)
        version = None  # after an optimizer step the index no longer holds the current weights' vectors
    trainee.scheduler.step()
    return ({f"loss/{k}": v for k, v in losses.items() if k != "clip_fraction"}
            | {"clip_fraction": losses["clip_fraction"], "lr": trainee.scheduler.get_last_lr()[0], "grad_norm": grad_norm})


def refresh_index(refresher: RefreshPolicy, trainee: Trainee, upcoming: list[dict], rewards: Rewards, step: int,
                  version: int, probe: list[str], config: GRPOConfig, dist: Dist = SINGLE) -> dict:
    """5. Re-encode with policy ``version`` what the refresh policy picks; fidelity on the probe queries when due.

    The first tier ("used") is the documents the *next* step will score: the positives and negatives of
    ``upcoming`` (its rows, known in advance from ``batch_order``), then their graph neighbours, so the index
    the next reward reads is fresh where it matters (prefetch); then stale documents in this step's top-k and
    the rotating slice."""
    probe_every = refresher.config.probe_every
    probe_vectors = None
    if probe_every > 0 and step % probe_every == 0:
        probe_vectors = dist.encode_split(partial(trainee.encode_queries, batch_size=config.micro_batch))(probe)
    used = list(dict.fromkeys(d for r in upcoming for d in used_doc_ids(r, config.negatives_per_query)))
    # scale-out: every rank refreshes the same ids (every rank's top-k), each encoding its share of them
    ranked = [hits for part in dist.gather_objects(rewards.ranked) for hits in part]
    return refresher.step(step, dist.encode_split(partial(trainee.encode_documents, batch_size=config.micro_batch)), used,
                          ranked, version, probe_query_vectors=probe_vectors)


# ---- pieces of the phases -----------------------------------------------------------------------

def has_spread(group_rewards: list[float]) -> bool:
    """Whether a group's rewards differ (else its advantages are all 0 and it carries no policy signal)."""
    return max(group_rewards) > min(group_rewards)


class TraceNCE:
    """Optional InfoNCE on the sampled reasoning embeddings (``lambda_trace_nce``): each trace's embedding at the
    token, pooled with gradient from the same forward as its log-probs, against its query's positive and
    negatives as the live index holds them (constants, fresh: the refresh prefetched them), the other traces'
    documents in the chunk as in-batch negatives, known positives masked. The sampled trace tokens are inputs
    (no gradient flows through sampling); the gradient reaches the weights through every position's hidden state."""

    def __init__(self, loss_fn: InfoNCELoss, weight: float, batch: list[dict], group_size: int, k: int,
                 index: DocumentIndex, positives: dict[str, set[str]]):
        self.loss_fn, self.weight, self.batch, self.G, self.k, self.index, self.positives = (
            loss_fn, weight, batch, group_size, k, index, positives)

    @property
    def on(self) -> bool:
        return self.weight > 0

    def __call__(self, traces: list[int], vectors: torch.Tensor) -> torch.Tensor:
        rows = [self.batch[i // self.G] for i in traces]
        ids = row_document_ids(rows, self.k)
        docs = torch.from_numpy(self.index.vectors(ids)).to(vectors.device).view(len(rows), 1 + self.k, -1)
        return self.loss_fn(vectors, docs[:, 0], docs[:, 1:] if self.k else None, infonce_ignore(rows, self.k, self.positives))


def policy_backward(trainee: Trainee, scores: Scores, active: list[int], advantages: torch.Tensor,
                    policy_loss: ClippedPolicyLoss, config: GRPOConfig, trace_nce: TraceNCE | None = None,
                    policy_scale: float = 1.0) -> dict[str, float]:
    """Backward ``ClippedPolicyLoss`` over the ``active`` traces (+ ``trace_nce`` over every trace), chunk by chunk
    (no optimizer step).

    Each chunk's loss is weighted by its share of the traces the term covers, so the gradient is that of the
    mean over traces, whatever ``micro_batch``. Log-probs are at the sampling temperature. ``policy_scale`` multiplies
    the policy term's gradient (on N processes: this rank's share of every rank's active traces).
    """
    e = trainee.embedder
    nce_on = trace_nce is not None and trace_nce.on and len(scores.seqs) > 1
    active_set = set(active)
    covered = list(range(len(scores.seqs))) if nce_on else active
    total = {"policy": 0.0, "kl_penalty": 0.0} | ({"trace_nce": 0.0} if nce_on else {})
    clipped_tokens, tokens = 0.0, 0
    for part in chunks(covered, config.micro_batch):
        with trainee.autocast(), trainee.merged():
            rows, vec = sequence_logprobs(trainee, trainee.model, [scores.seqs[i] for i in part],
                                          e.embed_token_id if nce_on else None, config.temperature)
        loss = 0.0
        mine = [j for j, i in enumerate(part) if i in active_set]
        if mine:
            logp, mask = pad_rows([rows[j] for j in mine])
            picked = [part[j] for j in mine]
            old, ref = pad_rows([scores.old_logp[i] for i in picked])[0], pad_rows([scores.ref_logp[i] for i in picked])[0]
            out = policy_loss(logp, old, ref, advantages[picked].to(logp.device), mask)
            share = len(mine) / len(active)
            loss = out.total * share * policy_scale
            total["policy"] += float(out.policy.detach()) * share
            total["kl_penalty"] += float(out.kl.detach()) * share
            clipped_tokens += out.clip_fraction * int(mask.sum())
            tokens += int(mask.sum())
        if nce_on and len(part) > 1:
            term = trace_nce(part, vec)
            loss = loss + trace_nce.weight * term * len(part) / len(covered)
            total["trace_nce"] += float(term.detach()) * len(part) / len(covered)
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
    return total | {"clip_fraction": clipped_tokens / tokens if tokens else 0.0}


def nce_loss(trainee: Trainee, rows: list[dict], loss_fn: InfoNCELoss, config: GRPOConfig,
             positives: dict[str, set[str]], index: DocumentIndex | None = None,
             version: int | None = None, dist: Dist = SINGLE, everyone: list[dict] | None = None) -> torch.Tensor:
    """InfoNCE on (direct query embedding, positive, ``negatives_per_query`` hard negatives), with gradient; in-batch
    documents that are known positives of a row's query are masked (rows without a negative were dropped).

    Without document gradient (``nce_doc_grad`` off), document vectors that ``index`` holds at policy ``version``
    (the current weights: the previous refresh prefetched this step's documents) are taken from it instead of
    being encoded again (``Trainee.fast``); the others are encoded without gradient. On N processes every rank
    scores the whole step's queries against its documents (gathered with gradient; the index is the same on every
    rank)."""
    e, k = trainee.embedder, config.negatives_per_query
    q_vec = embed(trainee, e.tokenize_queries([r["query"] for r in rows]))
    d_vec = None
    if trainee.fast and not config.nce_doc_grad and index is not None and version is not None:
        d_vec = fresh_vectors(index, row_document_ids(rows, k), version)
    if d_vec is not None:
        d_vec = torch.from_numpy(d_vec).to(q_vec.device).view(len(rows), 1 + k, -1)
    else:
        with torch.set_grad_enabled(config.nce_doc_grad):
            d_vec = embed(trainee, e.tokenize_documents(row_documents(rows, k))).view(len(rows), 1 + k, -1)
    q_vec, d_vec = dist.gather(q_vec), dist.gather(d_vec)  # scale-out: the global batch (no-op on one process)
    return loss_fn(q_vec, d_vec[:, 0], d_vec[:, 1:] if k else None, infonce_ignore(everyone or rows, k, positives))


def embed(trainee: Trainee, seqs: list[list[int]]) -> torch.Tensor:
    """The policy's embeddings of token sequences (each holding the token), with gradient if it is on: packed with
    LoRA as one matmul (``Trainee.packed``, ``Trainee.merged``), else one padded batch."""
    e = trainee.embedder
    if trainee.packed:
        packed = common.pack_shared_templates(seqs, e, e.device)
        with trainee.merged():
            return common.packed_pool(common.packed_hidden(trainee.model, packed), packed, e.embed_token_id)
    ids, mask, pos = pad_batch(seqs, e.pad_id, "right", e.device)
    return common.pool(common.hidden_and_logits(trainee.model, ids, mask, pos, False)[0], ids, e.embed_token_id)


def fresh_vectors(index: DocumentIndex, doc_ids: list[str], version: int) -> np.ndarray | None:
    """The index's vectors of ``doc_ids`` if every one of them was encoded by policy ``version``, else None."""
    try:
        if not bool((index.version_of(doc_ids) == version).all()):
            return None
    except KeyError:
        return None
    return index.vectors(doc_ids)


def step_metrics(reasoning: Reasoning, scores: Scores, rewards: Rewards, group_size: int) -> dict[str, float]:
    r = np.asarray(rewards.rewards, dtype=np.float64)
    groups = r.reshape(-1, group_size)
    old, mask = pad_rows(scores.old_logp)
    kl = float(masked_sequence_mean(kl_k3(old, pad_rows(scores.ref_logp)[0]), mask))
    return {"reward/mean": float(r.mean()), "reward/std": float(r.std()), "reward/share_ge_half": float((r >= 0.5).mean()),
            "emitted": float(np.mean(reasoning.emitted)), "groups/active": float((groups.max(1) > groups.min(1)).mean()),
            "kl": kl, "trace_tokens": float(np.mean([len(g) for g in reasoning.generated]))}


def refresh_metrics(stats: dict) -> dict[str, float]:
    metrics = {"refresh/size": stats["refreshed"], **{f"refresh/{k}": stats[k] for k in REFRESH_REASONS},
               "index/staleness_mean": stats["staleness_mean"], "index/staleness_max": stats["staleness_max"]}
    return metrics | ({"index/fidelity": stats["fidelity"]} if stats["fidelity"] is not None else {})


# ---- the loop -----------------------------------------------------------------------------------

def train_grpo(config: GRPOConfig, model_config: ModelConfig, index_config: IndexConfig, start_dir: str | Path,
               train_rows: list[dict], corpus: dict[str, str], out: str | Path, checkpoint_dir: str | Path,
               index_out: str | Path, live_dir: str | Path | None = "dvclive/rl", progress: bool = True,
               on_step: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) GRPO from the model in ``start_dir``; export it to ``out``, the index to ``index_out``; return the summary.

    ``train_rows`` name their documents by ids of ``corpus`` (the data stage's train and train_corpus).
    ``on_step`` (measurement hook, e.g. ``benchmarks/index_refresh.py --rl``) is called once after the index is
    built or restored (``step`` 0 for a fresh run) and after every step's refresh, with ``{"step", "index",
    "encode_documents", "encode_queries", "metrics", "refresh"}``; the encoders use the current policy. It must
    not change the index or the model; it draws no random numbers, so the run stays the same with or without it.
    """
    _check_config(config)
    check_rows(train_rows, corpus)
    train_rows = drop_rows_without_negatives(train_rows, config.negatives_per_query)  # as SFT does
    if not train_rows:
        raise ValueError("no training rows with a mined negative")
    positives = known_positives(train_rows)
    policy_loss = ClippedPolicyLoss(clip_eps=config.clip_eps, beta=config.beta)
    nce = InfoNCELoss(temperature=config.nce_temperature, in_batch_negatives=True)
    started = time.time()
    dist = init_distributed()  # scale-out: N processes under accelerate launch / torchrun; else one (no-op)
    trainee = load_trainee(start_dir, model_config, config, max_doc_tokens=config.max_doc_tokens,
                           max_query_tokens=config.max_query_tokens)
    dist.broadcast_parameters(trainee.model)
    start_checksum = trainee.embedder.checksum
    order = common.batch_order(len(train_rows), config.queries_per_step, config.steps, config.seed)
    texts = select_corpus([train_rows[i] for step in order for i in step], corpus, config.max_corpus_docs, config.seed)
    probe = [train_rows[i]["query"] for i in sorted(random.Random(config.seed).sample(
        range(len(train_rows)), min(index_config.refresh.probe_size, len(train_rows))))]
    fingerprint = common.fingerprint(config, start_checksum, train_rows, [asdict(index_config), sorted(corpus)]
                                     + ([{"processes": dist.world}] if dist.active else []))  # scale-out: ranks sample
    ckpt = trainee.restore(checkpoint_dir, fingerprint)
    state = ckpt["state"] if ckpt is not None else {"step": 0, "policy_version": 0, "history": [], "fingerprint": fingerprint}
    index, refresher = open_index(trainee, texts, index_config, ckpt, checkpoint_dir, config.micro_batch, progress, dist)
    view = {"index": index, "encode_documents": partial(trainee.encode_documents, batch_size=config.micro_batch),
            "encode_queries": partial(trainee.encode_queries, batch_size=config.micro_batch)}
    if on_step:
        on_step(view | {"step": state["step"], "metrics": {}, "refresh": None})
    live = common.open_live(live_dir if dist.is_main else None, resume=ckpt is not None)  # scale-out: rank 0 logs
    search_k = max(config.reward_cutoff, index_config.refresh.topk_stale)

    bar = common.progress_bar(config.steps, state["step"], progress and dist.is_main, "rl")
    for step in range(state["step"], config.steps):
        everyone, timer = [train_rows[i] for i in order[step]], PhaseTimer()
        batch = dist.split(everyone)  # scale-out: this rank's queries (whole groups: rewards and advantages stay local)
        dist.seed_step(config.seed, step)
        with timer("rollout"):  # 1. G traces per query from policy version `step`
            reasoning = rollout(trainee, batch, config)
        with timer("score"):  # 2. their embeddings, old and reference log-probs
            scores = score(trainee, reasoning, config.micro_batch, config.temperature)
        with timer("reward"):  # 3. rank of the positive in the live index → rewards → advantages
            rewards = reward(index, batch, reasoning, scores, config, search_k)
        with timer("update"):  # 4. clipped policy loss + β·KL (+ λ·InfoNCE) → optimizer
            losses = update(trainee, batch, scores, rewards, policy_loss, nce, config, index, positives,
                            version=state["policy_version"], dist=dist, everyone=everyone)
        state["step"] = state["policy_version"] = step + 1
        with timer("refresh"):  # 5. prefetch: re-encode what step + 1 will score (and neighbours), then other stale
            upcoming = [train_rows[i] for i in order[step + 1]] if step + 1 < config.steps else []
            stats = refresh_index(refresher, trainee, upcoming, rewards, step, state["policy_version"], probe, config, dist)
        metrics = dist.mean_metrics(step_metrics(reasoning, scores, rewards, config.group_size) | losses) | refresh_metrics(stats)
        metrics |= timer.metrics()
        common.log_metrics(live, metrics, state["step"])
        if on_step:
            on_step(view | {"step": state["step"], "metrics": metrics, "refresh": stats})
        state["history"].append({"step": state["step"], **metrics})
        if bar:
            bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", emit=f"{metrics['emitted']:.2f}")
            bar.update(1)
        if (state["step"] % config.checkpoint_every == 0 or state["step"] == config.steps) and dist.is_main:
            save_checkpoint(checkpoint_dir, trainee, state, index, refresher.graph, start_checksum)  # scale-out: once
    if bar:
        bar.close()

    summary = finish(trainee, index, state, config, start_dir, start_checksum, out, index_out, len(train_rows), started,
                     progress, dist)
    if live is not None:
        live.end()
    dist.barrier()
    return summary


# ---- checkpoint and export ----------------------------------------------------------------------

def save_checkpoint(checkpoint_dir, trainee: Trainee, state: dict, index: DocumentIndex, graph: KnnGraph,
                    start_checksum: str) -> None:
    """Index snapshot in a folder named after the step, then the atomic checkpoint that names it, then drop the
    snapshots no kept checkpoint names.

    A kill at any point leaves every committed checkpoint pointing at a complete snapshot of the same step.
    """
    snapshots = Path(checkpoint_dir) / INDEX_CHECKPOINTS
    name = f"step-{state['step']:06d}"
    save_snapshot(index, snapshots / name, {"model_checksum": f"{start_checksum}+rl-step-{state['step']}",
                                            "policy_version": state["policy_version"]})
    trainee.save(checkpoint_dir, state, index_dir=name, graph=graph.neighbours.copy())
    kept = {name} | {f"step-{s:06d}" for s in common.checkpoint_steps(checkpoint_dir)}  # the fallback's too
    for old in snapshots.glob("step-*"):
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)


def finish(trainee: Trainee, index: DocumentIndex, state: dict, config: GRPOConfig, start_dir, start_checksum: str,
           out, index_out, n_rows: int, started: float, progress: bool, dist: Dist = SINGLE) -> dict:
    """Final refresh (``final_refresh``), the policy exported (LoRA merged) to ``out``, the index snapshot to
    ``index_out`` stamped with the exported weights' checksum; returns the run summary."""
    version = state["policy_version"]
    final_refreshed = 0
    if config.final_refresh:
        stale = [d for d, v in zip(index.doc_ids, index.versions) if v < version]
        final_refreshed = refresh(index, stale, dist.encode_split(partial(trainee.encode_documents,
                                                                          batch_size=config.micro_batch)),
                                  version, progress=progress)
    summary = summarize(state["history"], config, n_rows, len(index), final_refreshed, time.time() - started)
    manifest = {"stage": "rl", "start": str(start_dir), "start_weights_sha256": start_checksum,
                "embed_token_id": trainee.embed_id, "rl": summary}
    if not dist.is_main:  # scale-out: rank 0 exports the model and the index
        return summary
    trainee.export(out, manifest)
    summary["model_checksum"] = json.loads((Path(out) / "manifest.json").read_text())["weights_sha256"]
    stale_now = index.staleness(version)
    save_snapshot(index, index_out, {"model_checksum": summary["model_checksum"], "stage": "rl", "model_dir": str(out),
                                     "policy_version": version, "staleness_mean": stale_now["mean_lag"],
                                     "staleness_max": stale_now["max_lag"]})
    return summary


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
    for name in ("steps", "queries_per_step", "updates_per_step", "micro_batch", "checkpoint_every"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.negatives_per_query < 0 or config.max_corpus_docs < 0:
        problems.append("negatives_per_query and max_corpus_docs must be >= 0")
    if config.lambda_nce > 0 and not has_negatives(config.queries_per_step, None, True) and config.negatives_per_query == 0:
        problems.append("lambda_nce > 0 needs negatives_per_query >= 1 or queries_per_step >= 2")
    if problems:
        raise ValueError("rl: " + "; ".join(problems))
