"""Stage 1: supervised fine-tuning with the composite loss (one readable loop, nanoGPT style).

Each optimizer step takes ``batch_size`` training rows (query, positive, hard negatives, optional trace), no row
twice in a batch:
  * query side, with gradient, in exactly the format inference embeds (``Embedder.query_sequences``): the
    reasoning prompt + trace + closing suffix through ``<|embed_token|>`` when the query has a kept trace, else
    the direct query template. Every row has a CE target: the assistant's response through the token (the
    trace and its closing suffix, or the direct template's ``The embedding is <|embed_token|>``), so the model
    learns to emit the token; KL to the reference covers only the trace's own tokens (never the token).
    ``bare_reasoning_share`` (default 0.5; 0 in the scifact profile): a fixed seeded share of the rows without a
    kept trace take the reasoning format with an empty trace instead (what inference embeds when the model closes
    at once), InfoNCE and triplet only (no CE or KL target);
  * traces: the first ``trace_warmup_steps`` steps are direct-only; then the model being trained scores the
    candidate traces in that format (``traces.score_candidates``), and rows with a kept trace are oversampled
    ``trace_repeats`` times per epoch;
  * document side: positives and ``negatives_per_query`` hard negatives, with gradient when ``doc_grad``
    (the default: +0.05 dev nDCG@10 on code-search at twice the stage's time), otherwise forward-only (documents
    cost 3x less; the scifact profile, whose batch of 16 abstracts with gradient needs more than 24 GiB);
  * loss = λ_ce·CE + λ_kl·KL(policy‖reference) + λ_nce·InfoNCE + λ_tri·Triplet (``CompositeLoss``); InfoNCE
    ignores in-batch documents that are known positives of a row's query (by document id).
The reference for KL is the base model: the LoRA model with its adapter disabled, or a frozen copy in
full fine-tuning (``trainer_setup.load_trainee``, shared with GRPO). Every ``checkpoint_every`` steps the trainable weights, optimizer, scheduler, RNG
states, step and best dev score are written atomically; rerunning resumes there and, the batch order
being a pure function of the seed and step, reaches the same weights as an uninterrupted run.
Every ``eval_every`` steps dev nDCG@10 is measured; the best state is exported (LoRA merged) to ``out``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from searchr3.data.nq import stable_fraction
from searchr3.data.types import RetrievalSet
from searchr3.model.config import IGNORE_INDEX, ModelConfig
from searchr3.model.embedder import Embedder, LabelledSequence, pad_labelled
from searchr3.model.padding import pad_batch
from searchr3.train import common
from searchr3.train.distributed import SINGLE, Dist
from searchr3.train.distributed import init as init_distributed
from searchr3.train.losses.composite import CompositeLoss
from searchr3.train.sft_config import SFTConfig
from searchr3.train.traces import best_kept, score_candidates
from searchr3.train.trainer_setup import (Trainee, drop_rows_without_negatives, infonce_ignore, known_positives, load_trainee,
                                          row_documents, with_distractors)

log = logging.getLogger(__name__)


def trim_dev(rs: RetrievalSet, max_queries: int, max_docs: int, seed: int) -> RetrievalSet:
    """A cheaper dev set for in-training evaluation: the first queries, their positives, seeded distractors."""
    qids = sorted(rs.judged_queries())[:max_queries]
    keep = {d for q in qids for d, r in rs.qrels[q].items() if r > 0 and d in rs.corpus}
    return RetrievalSet(rs.name, {d: rs.corpus[d] for d in with_distractors(keep, rs.corpus, max_docs, seed)},
                        {q: rs.queries[q] for q in qids}, {q: rs.qrels[q] for q in qids}, rs.meta)


class SFTBatchBuilder:
    """Turns training rows into tensors (query sequences with CE labels, document sequences, InfoNCE mask).

    Query sequences come from ``Embedder.query_sequences``: what inference embeds, labelled on the assistant's
    response through the token (every row). ``kl_labels`` keep only the trace's own tokens (not the closing phrase
    or the token, which the reference never emits, nor a direct row's fixed response). ``ignore`` masks in-batch
    documents that are known positives of a row's query (``positives``: query id -> positive ids, every row).

    ``packed`` (what ``train_sft`` uses when the model supports it, ``packing.supports_packing``): the sequences
    are laid end to end with no padding (``common.pack_sequences``) and the labels are compact (``positions``:
    the packed positions that predict a target; ``labels``/``kl_labels`` (1, N + 1), ``common.compact_labels``);
    otherwise padded batches (``"q": (ids, mask, positions)``, labels (B, T)).
    """

    def __init__(self, embedder: Embedder, config: SFTConfig, traces: dict[str, str],
                 positives: dict[str, set[str]] | None = None, packed: bool = False):
        self.e, self.c, self.traces, self.positives, self.packed = embedder, config, traces, positives, packed

    def build(self, rows: list[dict], everyone: list[dict] | None = None) -> dict:
        """``everyone``: on N processes, the global batch whose documents InfoNCE sees (``rows`` is this rank's share)."""
        e, k = self.e, self.c.negatives_per_query
        traced = [self.traces.get(r["query_id"]) for r in rows]
        bare = [trace is None and stable_fraction(r["query_id"], self.c.seed) < self.c.bare_reasoning_share
                for r, trace in zip(rows, traced)]
        traced = ["" if b else trace for b, trace in zip(bare, traced)]
        queries = e.query_sequences([r["query"] for r in rows], traced, self.c.max_query_tokens, self.c.max_trace_tokens)
        queries = [LabelledSequence(seq.ids, [IGNORE_INDEX] * len(seq.ids)) if b else seq for b, seq in zip(bare, queries)]
        kl_cut = [len(seq.ids) - e.closing_tokens if trace is not None else 0 for seq, trace in zip(queries, traced)]
        docs = e.tokenize_documents(row_documents(rows, k), self.c.max_doc_tokens)
        positives = self.positives if self.positives is not None else known_positives(rows)
        ignore = infonce_ignore(everyone or rows, k, positives)
        if self.packed:
            return self._packed(queries, kl_cut, docs, k, ignore)
        q_ids, q_mask, q_pos, labels = pad_labelled(queries, e.pad_id, e.device)
        kl_labels = labels.clone()
        for i, cut in enumerate(kl_cut):
            kl_labels[i, cut:] = IGNORE_INDEX
        return {"q": (q_ids, q_mask, q_pos), "labels": labels, "kl_labels": kl_labels,
                "d": pad_batch(docs, e.pad_id, "right", e.device), "k": k, "ignore": ignore}

    def _packed(self, queries, kl_cut: list[int], docs: list[list[int]], k: int, ignore) -> dict:
        """Packed tensors, each template's system prompt packed once (``common.pack_shared_templates``); the
        reference pack holds only the rows with a KL target, each cut after its last KL position (causal
        attention: the logits there are exactly those of the whole row)."""
        e, device = self.e, self.e.device
        q = common.pack_shared_templates([s.ids for s in queries], e, device)
        positions, targets, kl_targets = [], [], []
        ref_seqs, ref_at, ref_rows = [], [], []  # reference rows; their KL positions (row, t); their compact rows
        for seq, at, cut in zip(queries, q.where, kl_cut):
            kl_here = []  # (position in the row, compact row)
            for t in range(len(seq.ids) - 1):
                target = seq.labels[t + 1]
                if target == IGNORE_INDEX:
                    continue
                if t + 1 < cut:
                    kl_here.append((t, len(positions)))
                positions.append(at[t])
                targets.append(target)
                kl_targets.append(target if t + 1 < cut else IGNORE_INDEX)
            if kl_here:
                ref_at += [(len(ref_seqs), t) for t, _ in kl_here]
                ref_seqs.append(seq.ids[: kl_here[-1][0] + 1])
                ref_rows += [row for _, row in kl_here]
        ref = common.pack_shared_templates(ref_seqs, e, device) if ref_seqs else None

        def longs(values):
            return torch.tensor(values, dtype=torch.long, device=device)

        return {"packed": True, "q": q, "positions": longs(positions), "labels": common.compact_labels(targets, device),
                "kl_labels": common.compact_labels(kl_targets, device), "ref": ref,
                "ref_positions": longs([ref.where[i][t] for i, t in ref_at] if ref else []), "ref_rows": longs(ref_rows),
                "d": common.pack_shared_templates(docs, e, device), "k": k, "ignore": ignore}


Reference = Callable[[], AbstractContextManager[torch.nn.Module]]


def compute_loss(model, batch: dict, loss_fn: CompositeLoss, embed_id: int, config: SFTConfig,
                 reference: Reference | None = None, timer: common.PhaseTimer | None = None,
                 merged: Reference | None = None, dist: Dist = SINGLE):
    """The composite loss of one built batch; ``reference`` (``Trainee.reference``) is needed for the KL term.

    ``timer`` (measurement) times the phases: query, documents, reference, loss. ``merged`` (``Trainee.merged``)
    wraps the policy's passes of a packed batch (LoRA merged in the passes without gradient). LM logits are computed
    only where a target is (packed) or from the first labelled position on (padded; the prompts need none). On N
    processes (``dist``) InfoNCE and the triplet term see the whole global batch (gathered with gradient), CE and KL
    are this rank's share of the global token means, and the logged components are global
    (``searchr3.train.distributed``)."""
    if batch.get("packed"):
        return _compute_loss_packed(model, batch, loss_fn, embed_id, config, reference, timer, merged, dist)
    q_ids, q_mask, q_pos = batch["q"]
    labels, kl_labels = batch["labels"], batch["kl_labels"]
    want_logits = config.lambda_ce > 0 or config.lambda_kl > 0
    want_kl = config.lambda_kl > 0 and bool((kl_labels != IGNORE_INDEX).any())
    with common.phase(timer, "query"):
        hidden, _ = common.hidden_and_logits(model, q_ids, q_mask, q_pos, False)
        start = common.first_target_position(labels)
        logits = common.lm_logits(model, hidden[:, start:]) if want_logits else None
        q_vec = common.pool(hidden, q_ids, embed_id)
    d_ids, d_mask, d_pos = batch["d"]
    with common.phase(timer, "documents"), torch.set_grad_enabled(config.doc_grad and torch.is_grad_enabled()):
        d_hidden, _ = common.hidden_and_logits(model, d_ids, d_mask, d_pos, False)
        d_vec = common.pool(d_hidden, d_ids, embed_id).view(len(q_ids), 1 + batch["k"], -1)
    ref_logits = None
    if want_logits and want_kl:
        with common.phase(timer, "reference"), torch.no_grad(), reference() as ref:
            ref_hidden = common.hidden_and_logits(ref, q_ids, q_mask, q_pos, False)[0]
            ref_logits = common.lm_logits(ref, ref_hidden[:, start:])
    with common.phase(timer, "loss"):
        return _composite(loss_fn, dist, logits=logits, labels=labels[:, start:] if want_logits else None,
                          kl_labels=kl_labels[:, start:] if want_logits else None, reference_logits=ref_logits,
                          q_vec=q_vec, d_vec=d_vec, k=batch["k"], ignore=batch["ignore"])


def _composite(loss_fn: CompositeLoss, dist: Dist, *, logits, labels, kl_labels, reference_logits, q_vec, d_vec, k: int,
               ignore):
    """``loss_fn`` over one batch's tensors (labels shifted: logits row ``i`` predicts label ``i + 1``).

    Scale-out hook (``searchr3.train.distributed``; a no-op on one process): query and document vectors are gathered
    across ranks with gradient, CE/KL are scaled by this rank's share of the global supervised tokens, and the logged
    components are the global batch's."""
    q_vec, d_vec = dist.gather(q_vec), dist.gather(d_vec)
    tokens = {"ce": int((labels[:, 1:] != IGNORE_INDEX).sum()) if labels is not None else 0,
              "kl": int((kl_labels[:, 1:] != IGNORE_INDEX).sum()) if reference_logits is not None else 0}
    shares, total_tokens = dist.token_shares(tokens)
    out = loss_fn(logits=logits, labels=labels, kl_labels=kl_labels, reference_logits=reference_logits, queries=q_vec,
                  positives=d_vec[:, 0], hard_negatives=d_vec[:, 1:] if k else None, ignore=ignore, scale=shares)
    return out if not dist.active else \
        out._replace(components=dist.global_components(out.components, tokens, total_tokens, loss_fn.weights))


def _compute_loss_packed(model, batch: dict, loss_fn: CompositeLoss, embed_id: int, config: SFTConfig,
                         reference: Reference | None, timer: common.PhaseTimer | None, merged: Reference | None,
                         dist: Dist = SINGLE):
    """``compute_loss`` of a packed batch: the same terms over the same tokens, without padding; the LM head runs
    only at the positions that predict a target, the reference only over the rows with a KL target (compact
    tensors, ``common.compact_logits``; reference rows of other positions are zeros that the KL never reads)."""
    q, labels, kl_labels = batch["q"], batch["labels"], batch["kl_labels"]
    want_logits = config.lambda_ce > 0 or config.lambda_kl > 0
    want_kl = config.lambda_kl > 0 and batch["ref"] is not None
    merged = merged or nullcontext
    with common.phase(timer, "query"):
        with merged():
            hidden = common.packed_hidden(model, q)
        logits = common.compact_logits(model, hidden[batch["positions"]]) if want_logits else None
        q_vec = common.packed_pool(hidden, q, embed_id)
    with common.phase(timer, "documents"), torch.set_grad_enabled(config.doc_grad and torch.is_grad_enabled()), merged():
        d_vec = common.packed_pool(common.packed_hidden(model, batch["d"]), batch["d"], embed_id)
        d_vec = d_vec.view(len(q_vec), 1 + batch["k"], -1)
    ref_logits = None
    if want_logits and want_kl:
        with common.phase(timer, "reference"), torch.no_grad(), reference() as ref:
            ref_hidden = common.packed_hidden(ref, batch["ref"])[batch["ref_positions"]]
            ref_logits = torch.zeros_like(logits)
            ref_logits[0, batch["ref_rows"]] = common.lm_logits(ref, ref_hidden).to(ref_logits.dtype)
    with common.phase(timer, "loss"):
        return _composite(loss_fn, dist, logits=logits, labels=labels if want_logits else None,
                          kl_labels=kl_labels if want_logits else None, reference_logits=ref_logits, q_vec=q_vec,
                          d_vec=d_vec, k=batch["k"], ignore=batch["ignore"])


def sft_order(n_rows: int, config: SFTConfig, warmup: int, traced: set[int] | None) -> list[list[int]]:
    """Row indices of every step: ``warmup`` direct-only steps, then (once the traces are scored) the rest, with
    each row of ``traced`` appearing ``trace_repeats`` times per epoch. A pure function of its arguments."""
    order = common.batch_order(n_rows, config.batch_size, warmup, config.seed) if warmup else []
    if traced is None:
        return order
    repeats = [config.trace_repeats if i in traced else 1 for i in range(n_rows)]
    return order + common.batch_order(n_rows, config.batch_size, config.steps - warmup, config.seed + 1, repeats)


def keep_traces(trainee: Trainee, rows: list[dict], candidates: list[dict], config: SFTConfig) -> tuple[dict[str, str], dict]:
    """Score the candidates with the model being trained (``traces.score_candidates``); the best kept one per query."""
    trainee.model.eval()
    with torch.no_grad(), trainee.autocast(), trainee.merged():
        scored = score_candidates(trainee.embedder, rows, candidates, config.max_query_tokens, config.max_trace_tokens)
    trainee.model.train()
    kept = best_kept(scored)
    return kept, {"candidates": len(candidates), "scored": len(scored), "kept": sum(r["kept"] for r in scored),
                  "queries_with_trace": len(kept)}


def dev_ndcg(trainee: Trainee, dev: RetrievalSet) -> float:
    from searchr3.eval.dense import dense_search
    from searchr3.eval.metrics import compute_metrics

    trainee.model.eval()
    with torch.no_grad(), trainee.autocast(), trainee.merged():
        result = dense_search(trainee.embedder, dev, k=100, cache_dir=None)
    trainee.model.train()
    return compute_metrics(dev.qrels, result.run)["ndcg@10"]


def train_sft(config: SFTConfig, model_config: ModelConfig, base_dir: str | Path, train_rows: list[dict],
              dev: RetrievalSet | None, out: str | Path, checkpoint_dir: str | Path, traces: list[dict] | None = None,
              live_dir: str | Path | None = "dvclive/sft", progress: bool = True) -> dict:
    """Run (or resume) SFT; export the best model to ``out``; return the summary metrics.

    ``traces``: candidate records (``query_id``, ``trace``) of the traces stage. The first ``trace_warmup_steps``
    steps train on direct rows only; then the model being trained scores the candidates in the training format
    and the rows with a kept trace train as reasoning rows, ``trace_repeats`` times per epoch."""
    if config.mode not in ("lora", "full"):
        raise ValueError(f"sft.mode must be lora or full, not {config.mode!r}")
    train_rows = drop_rows_without_negatives(train_rows, config.negatives_per_query)
    if not train_rows:
        raise ValueError("no training rows")
    started = time.time()
    dist = init_distributed()  # scale-out: N processes under accelerate launch / torchrun; else one (no-op)
    trainee = load_trainee(base_dir, model_config, config, max_doc_tokens=config.max_doc_tokens)
    model, embed_id = trainee.model, trainee.embed_id
    dist.broadcast_parameters(model)  # scale-out
    model.train()
    candidates = traces or []
    warmup = min(config.trace_warmup_steps, config.steps) if candidates else 0
    positives = known_positives(train_rows)
    builder = SFTBatchBuilder(trainee.embedder, config, {}, positives, packed=trainee.packed)
    loss_fn = CompositeLoss(config.lambda_ce, config.lambda_kl, config.lambda_nce, config.lambda_tri,
                            temperature=config.temperature, in_batch_negatives=config.in_batch_negatives, margin=config.margin)

    fingerprint = common.fingerprint(config, trainee.embedder.checksum, train_rows, candidates)
    state = {"step": 0, "best": None, "best_step": None, "best_weights": None, "history": [], "fingerprint": fingerprint,
             "traces": None if candidates else {}, "trace_scoring": None}
    ckpt = trainee.restore(checkpoint_dir, fingerprint)
    if ckpt is not None:
        state = ckpt["state"]

    def set_traces(kept: dict[str, str]) -> list[list[int]]:
        builder.traces = kept
        return sft_order(len(train_rows), config, warmup, {i for i, r in enumerate(train_rows) if r["query_id"] in kept})

    order = sft_order(len(train_rows), config, warmup, None) if state["traces"] is None else set_traces(state["traces"])
    live = common.open_live(live_dir if dist.is_main else None, resume=ckpt is not None)  # scale-out: rank 0 logs
    dev_trim = trim_dev(dev, config.dev_max_queries, config.dev_max_docs, config.seed) if dev and dist.is_main else None
    if dev_trim is not None and state["step"] == 0 and "base_dev_ndcg@10" not in state:
        state["base_dev_ndcg@10"] = dev_ndcg(trainee, dev_trim)

    bar = common.progress_bar(config.steps, state["step"], progress and dist.is_main, "sft")
    micro = max(1, config.batch_size // max(1, config.grad_accum))
    for step in range(state["step"], config.steps):
        if state["traces"] is None and step == warmup:  # the warm-up is over: the model being trained picks the traces
            state["traces"], state["trace_scoring"] = keep_traces(trainee, train_rows, candidates, config)
            state["trace_scoring"]["at_step"] = step
            order = set_traces(state["traces"])
        rows = [train_rows[i] for i in order[step]]
        totals: dict[str, float] = {}
        chunks = [rows[i:i + micro] for i in range(0, len(rows), micro)]
        for chunk in chunks:
            with trainee.autocast():  # scale-out: this rank's share of the (global) micro-batch
                result = compute_loss(model, builder.build(dist.split(chunk), chunk if dist.active else None), loss_fn,
                                      embed_id, config, trainee.reference, merged=trainee.merged, dist=dist)
            (result.total / len(chunks)).backward()
            for k, v in ({"total": float(result.total.detach())} | result.components).items():
                totals[k] = totals.get(k, 0.0) + v / len(chunks)
        dist.sync_gradients(trainee.params)  # scale-out: the mean gradient over ranks (one all-reduce)
        grad_norm = trainee.optimizer_step(config.max_grad_norm)
        trainee.scheduler.step()
        state["step"] = step + 1
        metrics = {f"loss/{k}": v for k, v in totals.items()} | {"lr": trainee.scheduler.get_last_lr()[0], "grad_norm": grad_norm}
        last = state["step"] == config.steps
        if dev_trim is not None and (state["step"] % config.eval_every == 0 or last):
            score = dev_ndcg(trainee, dev_trim)
            metrics["dev/ndcg@10"] = score
            if state["best"] is None or score > state["best"]:
                state.update(best=score, best_step=state["step"], best_weights=common.trainable_state(model))
        common.log_metrics(live, metrics, state["step"])
        state["history"].append({"step": state["step"], **metrics})
        if bar:
            bar.set_postfix(loss=f"{totals['total']:.3f}", **({"dev": f"{metrics['dev/ndcg@10']:.3f}"} if "dev/ndcg@10" in metrics else {}))
            bar.update(1)
        if (state["step"] % config.checkpoint_every == 0 or last) and dist.is_main:  # scale-out: written once
            trainee.save(checkpoint_dir, state)
    if bar:
        bar.close()
    if state["best_weights"] is not None:
        common.load_trainable_state(model, state["best_weights"])
    summary = {"steps": config.steps, "mode": config.mode, "best_step": state["best_step"] or config.steps,
               "dev_ndcg@10": state["best"], "base_dev_ndcg@10": state.get("base_dev_ndcg@10"),
               # the dev check ranks over a sample (positives + seeded random distractors): easier than the full corpus
               "dev_sample": ({"set": dev_trim.name, "queries": len(dev_trim.queries), "documents": len(dev_trim.corpus)}
                              if dev_trim is not None else None),
               "traces_used": len(state["traces"] or {}), "trace_scoring": state["trace_scoring"],
               "train_rows": len(train_rows), "wall_s": round(time.time() - started, 1),
               "final_loss": state["history"][-1].get("loss/total") if state["history"] else None}
    manifest = {"stage": "sft", "base": str(base_dir), "embed_token_id": embed_id, "sft": summary}
    if dist.is_main:  # scale-out: rank 0 exports; the others wait for it
        trainee.export(out, manifest)
    if live is not None:
        live.end()
    dist.barrier()
    return summary
