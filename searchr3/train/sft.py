"""Stage 1: supervised fine-tuning with the composite loss (one readable loop, nanoGPT style).

Each optimizer step takes ``batch_size`` training rows (query, positive, hard negatives, optional trace):
  * query side, with gradient: the reasoning prompt + trace + ``<|embed_token|>`` when the query has a
    trace (one forward gives the CE/KL logits over the trace and the embedding at the token), else
    the direct query template;
  * document side: positives and ``negatives_per_query`` hard negatives, with gradient when
    ``doc_grad`` (GPU), otherwise without (the CPU default: documents cost 3x less forward-only);
  * loss = λ_ce·CE + λ_kl·KL(policy‖reference) + λ_nce·InfoNCE + λ_tri·Triplet (``CompositeLoss``).
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
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from searchr3.data.types import RetrievalSet
from searchr3.model.config import IGNORE_INDEX, ModelConfig
from searchr3.model.embedder import Embedder, pad_labelled
from searchr3.model.padding import pad_batch
from searchr3.train import common
from searchr3.train.losses.composite import CompositeLoss
from searchr3.train.sft_config import SFTConfig
from searchr3.train.trainer_setup import Trainee, drop_rows_without_negatives, load_trainee, row_documents, with_distractors

log = logging.getLogger(__name__)


def trim_dev(rs: RetrievalSet, max_queries: int, max_docs: int, seed: int) -> RetrievalSet:
    """A cheaper dev set for in-training evaluation: the first queries, their positives, seeded distractors."""
    qids = sorted(rs.judged_queries())[:max_queries]
    keep = {d for q in qids for d, r in rs.qrels[q].items() if r > 0 and d in rs.corpus}
    return RetrievalSet(rs.name, {d: rs.corpus[d] for d in with_distractors(keep, rs.corpus, max_docs, seed)},
                        {q: rs.queries[q] for q in qids}, {q: rs.qrels[q] for q in qids}, rs.meta)


class SFTBatchBuilder:
    """Turns training rows into padded tensors (query sequences with CE labels, document sequences)."""

    def __init__(self, embedder: Embedder, config: SFTConfig, traces: dict[str, str]):
        self.e, self.c, self.traces = embedder, config, traces

    def build(self, rows: list[dict]) -> dict:
        e, k = self.e, self.c.negatives_per_query
        queries = e.query_sequences([r["query"] for r in rows], [self.traces.get(r["query_id"]) for r in rows],
                                    self.c.max_query_tokens, self.c.max_trace_tokens)
        q_ids, q_mask, q_pos, labels = pad_labelled(queries, e.pad_id, e.device)
        docs = e.tokenize_documents(row_documents(rows, k, missing="error"), self.c.max_doc_tokens)
        return {"q": (q_ids, q_mask, q_pos), "labels": labels, "d": pad_batch(docs, e.pad_id, "right", e.device), "k": k,
                "has_trace": bool((labels != IGNORE_INDEX).any())}


Reference = Callable[[], AbstractContextManager[torch.nn.Module]]


def compute_loss(model, batch: dict, loss_fn: CompositeLoss, embed_id: int, config: SFTConfig,
                 reference: Reference | None = None):
    """The composite loss of one built batch; ``reference`` (``Trainee.reference``) is needed for the KL term."""
    q_ids, q_mask, q_pos = batch["q"]
    want_logits = batch["has_trace"] and (config.lambda_ce > 0 or config.lambda_kl > 0)
    hidden, logits = common.hidden_and_logits(model, q_ids, q_mask, q_pos, want_logits)
    q_vec = common.pool(hidden, q_ids, embed_id)
    d_ids, d_mask, d_pos = batch["d"]
    with torch.set_grad_enabled(config.doc_grad and torch.is_grad_enabled()):
        d_hidden, _ = common.hidden_and_logits(model, d_ids, d_mask, d_pos, False)
        d_vec = common.pool(d_hidden, d_ids, embed_id).view(len(q_ids), 1 + batch["k"], -1)
    ref_logits = None
    if want_logits and config.lambda_kl > 0:
        with torch.no_grad(), reference() as ref:
            ref_logits = common.hidden_and_logits(ref, q_ids, q_mask, q_pos, True)[1]
    return loss_fn(logits=logits if want_logits else None, labels=batch["labels"] if want_logits else None,
                   reference_logits=ref_logits, queries=q_vec, positives=d_vec[:, 0],
                   hard_negatives=d_vec[:, 1:] if batch["k"] else None)


def dev_ndcg(trainee: Trainee, dev: RetrievalSet) -> float:
    from searchr3.eval.dense import dense_search
    from searchr3.eval.metrics import compute_metrics

    trainee.model.eval()
    with torch.no_grad(), trainee.autocast():
        result = dense_search(trainee.embedder, dev, k=100, cache_dir=None)
    trainee.model.train()
    return compute_metrics(dev.qrels, result.run)["ndcg@10"]


def train_sft(config: SFTConfig, model_config: ModelConfig, base_dir: str | Path, train_rows: list[dict],
              dev: RetrievalSet | None, out: str | Path, checkpoint_dir: str | Path, traces: dict[str, str] | None = None,
              live_dir: str | Path | None = "dvclive/sft", progress: bool = True) -> dict:
    """Run (or resume) SFT; export the best model to ``out``; return the summary metrics."""
    if config.mode not in ("lora", "full"):
        raise ValueError(f"sft.mode must be lora or full, not {config.mode!r}")
    train_rows = drop_rows_without_negatives(train_rows, config.negatives_per_query)
    if not train_rows:
        raise ValueError("no training rows")
    started = time.time()
    trainee = load_trainee(base_dir, model_config, config, max_doc_tokens=config.max_doc_tokens)
    model, embed_id = trainee.model, trainee.embed_id
    model.train()
    builder = SFTBatchBuilder(trainee.embedder, config, traces or {})
    loss_fn = CompositeLoss(config.lambda_ce, config.lambda_kl, config.lambda_nce, config.lambda_tri,
                            temperature=config.temperature, in_batch_negatives=config.in_batch_negatives, margin=config.margin)
    order = common.batch_order(len(train_rows), config.batch_size, config.steps, config.seed)

    fingerprint = common.fingerprint(config, trainee.embedder.checksum, train_rows, traces)
    state = {"step": 0, "best": None, "best_step": None, "best_weights": None, "history": [], "fingerprint": fingerprint}
    ckpt = trainee.restore(checkpoint_dir, fingerprint)
    if ckpt is not None:
        state = ckpt["state"]
    live = common.open_live(live_dir, resume=ckpt is not None)
    dev_trim = trim_dev(dev, config.dev_max_queries, config.dev_max_docs, config.seed) if dev else None
    if dev_trim is not None and state["step"] == 0 and "base_dev_ndcg@10" not in state:
        state["base_dev_ndcg@10"] = dev_ndcg(trainee, dev_trim)

    bar = common.progress_bar(config.steps, state["step"], progress, "sft")
    micro = max(1, config.batch_size // max(1, config.grad_accum))
    for step in range(state["step"], config.steps):
        rows = [train_rows[i] for i in order[step]]
        totals: dict[str, float] = {}
        chunks = [rows[i:i + micro] for i in range(0, len(rows), micro)]
        for chunk in chunks:
            with trainee.autocast():
                result = compute_loss(model, builder.build(chunk), loss_fn, embed_id, config, trainee.reference)
            (result.total / len(chunks)).backward()
            for k, v in (result.components | {"total": float(result.total.detach())}).items():
                totals[k] = totals.get(k, 0.0) + v / len(chunks)
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
        if state["step"] % config.checkpoint_every == 0 or last:
            trainee.save(checkpoint_dir, state)
    if bar:
        bar.close()
    if state["best_weights"] is not None:
        common.load_trainable_state(model, state["best_weights"])
    summary = {"steps": config.steps, "mode": config.mode, "best_step": state["best_step"] or config.steps,
               "dev_ndcg@10": state["best"], "base_dev_ndcg@10": state.get("base_dev_ndcg@10"),
               "traces_used": len(traces or {}), "train_rows": len(train_rows), "wall_s": round(time.time() - started, 1),
               "final_loss": state["history"][-1].get("loss/total") if state["history"] else None}
    manifest = {"stage": "sft", "base": str(base_dir), "embed_token_id": embed_id, "sft": summary}
    trainee.export(out, manifest)
    if live is not None:
        live.end()
    return summary
