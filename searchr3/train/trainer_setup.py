"""What both trainers (``sft.py``, ``grpo.py``) build before their loop, written once.

- ``load_trainee``: seed, load the start model in fp32, wrap it in LoRA (``mode: lora``) or train all weights
  (``mode: full``), keep the frozen reference (the adapter disabled, or a frozen copy), AdamW + the
  warm-up/decay schedule; the ``Trainee`` it returns also checkpoints, restores and exports itself.
- ``with_distractors``: the documents a run needs plus seeded distractors (SFT's dev corpus, GRPO's live index).
- ``row_documents`` / ``drop_rows_without_negatives``: a row's positive and exactly ``k`` negatives (both stages
  drop rows without a negative); ``infonce_ignore``: the batch's documents that are known positives of a row's query.

``config`` is an ``SFTConfig`` or a ``GRPOConfig``; both have the fields read here (``seed``, ``mode``, ``lora``,
``gradient_checkpointing``, ``precision``, ``lr``, ``weight_decay``, ``warmup_steps``, ``steps``).
"""
from __future__ import annotations

import copy
import logging
import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from searchr3.model.config import ModelConfig
from searchr3.model.embedder import Embedder
from searchr3.model.packing import checkpoint_context_fn
from searchr3.train import common
from searchr3.train.lora import wrap_lora

log = logging.getLogger(__name__)


@dataclass
class Trainee:
    """The model being trained, its frozen reference, optimizer and schedule."""

    embedder: Embedder  # tokenisation and templates; its ``model`` is the one trained (LoRA layers inside it)
    model: torch.nn.Module  # what the optimizer trains: the LoRA-wrapped model, or ``embedder.model`` (full)
    frozen: torch.nn.Module | None  # mode full: a frozen copy of the start model; mode lora: None (adapter disabled)
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    bf16: bool  # bf16 autocast (``precision``); the weights stay fp32
    # The step's speed-ups (docs/performance.md): passes packed without padding where the model supports it, LoRA
    # merged for passes without gradient, one prompt pass per GRPO group, document vectors from the live index when
    # they are the current policy's. False runs the step as it was before them (the benchmarks time both; tests
    # check that both give the same results to float rounding).
    fast: bool = True

    @property
    def packed(self) -> bool:
        """Whether the trainers' passes are packed (``fast`` and a model with packed attention)."""
        return self.fast and self.embedder.packing

    @property
    def device(self) -> torch.device:
        return self.embedder.device

    @property
    def embed_id(self) -> int:
        return self.embedder.embed_token_id

    @contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The start model, never trained (KL reference): the LoRA model with its adapter disabled, or the frozen copy."""
        if self.frozen is not None:
            yield self.frozen
            return
        with self.model.disable_adapter():
            yield self.model

    def autocast(self):
        return common.autocast(self.bf16, self.device)

    def merged(self):
        """For passes without gradient: the LoRA layers run as one matmul each (``merged_lora``). A no-op in full
        fine-tuning, without ``fast``, and in passes with gradient (there, autograd through a merged weight costs a
        full weight gradient per layer: measured slower than LoRA's thin matmuls, docs/performance.md). Enter it
        after ``torch.no_grad()`` where there is one, and only around the policy's own passes."""
        if not self.fast or self.frozen is not None or torch.is_grad_enabled():
            return nullcontext()
        return merged_lora(self.model)

    def encode_documents(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Document vectors from the current weights (eval mode, no gradient)."""
        self.model.eval()
        with self.autocast(), torch.no_grad(), self.merged():
            return self.embedder.encode_documents(texts, batch_size=batch_size)

    def encode_queries(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Direct-query vectors from the current weights (eval mode, no gradient)."""
        self.model.eval()
        with self.autocast(), torch.no_grad(), self.merged():
            return self.embedder.encode_queries(texts, batch_size=batch_size).vectors

    def optimizer_step(self, max_grad_norm: float) -> float:
        """Clip the gradient norm, step the optimizer, clear the gradients; returns the norm before clipping."""
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def restore(self, checkpoint_dir: str | Path, fingerprint: str) -> dict | None:
        """This run's checkpoint loaded into weights, optimizer, schedule and RNGs; None to start afresh."""
        return common.restore(checkpoint_dir, fingerprint, self.model, self.optimizer, self.scheduler)

    def save(self, checkpoint_dir: str | Path, state: dict, **extra) -> None:
        """Atomic checkpoint: trainable weights, optimizer, schedule, RNG states, the loop's ``state`` and ``extra``."""
        common.save_checkpoint(checkpoint_dir, {
            "weights": common.trainable_state(self.model), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": common.rng_state(), "state": state, **extra})

    def export(self, out: str | Path, manifest: dict) -> Path:
        """A plain ``save_pretrained`` folder (LoRA merged) that the Embedder loads."""
        return common.export_model(self.model, self.embedder.tokenizer, out, manifest)


@contextmanager
def merged_lora(model) -> Iterator[None]:
    """Within the block (no gradient), each LoRA layer runs as one matmul with ``W + scaling * B @ A``, computed into a
    temporary weight, instead of ``W x + scaling * B (A x)``: 210 layers x (two thin matmuls + a scale + an add)
    per pass cost more than the merge. Afterwards the original weight tensors are put back (swapped, not
    subtracted, so the base weights never drift). The outputs equal the unmerged pass to float rounding."""
    if torch.is_grad_enabled():
        raise RuntimeError("merged_lora is for passes without gradient (the LoRA weights would get none)")
    swapped = []
    try:
        for module in model.modules():
            adapters = _mergeable(module)
            if not adapters:
                continue
            base = module.get_base_layer()
            weight = merged = base.weight
            for a in adapters:
                merged = torch.addmm(merged, module.lora_B[a].weight, module.lora_A[a].weight, alpha=module.scaling[a])
            base.weight = torch.nn.Parameter(merged, requires_grad=False)
            module._disable_adapters = True
            swapped.append((module, base, weight))
        yield
    finally:
        for module, base, weight in swapped:
            base.weight = weight
            module._disable_adapters = False


def _mergeable(module) -> list[str] | None:
    """The active adapters of a plain LoRA ``Linear`` (no dropout, DoRA, bias or fan-in-fan-out), else None."""
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer) or module.disable_adapters or module.merged:
        return None
    adapters = [a for a in module.active_adapters if a in module.lora_A]
    if (not adapters or not isinstance(module.get_base_layer(), torch.nn.Linear) or getattr(module, "fan_in_fan_out", False)
            or any(not isinstance(module.lora_dropout[a], torch.nn.Identity) or module.use_dora.get(a)
                   or module.lora_bias.get(a) for a in adapters)):
        return None
    return adapters


def load_trainee(start_dir: str | Path, model_config: ModelConfig, config, **embedder_overrides) -> Trainee:
    """Seed, load ``start_dir`` (fp32 weights; ``embedder_overrides`` set ``ModelConfig`` fields) and set up training."""
    common.seed_everything(config.seed)
    embedder = Embedder.from_pretrained(start_dir, config=copy.deepcopy(model_config), precision="fp32",
                                        **embedder_overrides)
    bf16 = common.use_bf16(config.precision, embedder.device)
    model, frozen = embedder.model, None
    if config.gradient_checkpointing:  # recomputed layers attend as their forward did (packed or not)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={
            "use_reentrant": False, "context_fn": checkpoint_context_fn(model)})
    if config.mode == "lora":
        model = wrap_lora(model, config.lora, embedder.embed_token_id)
    else:
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, config.lr, config.token_lr_scale), lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: common.lr_factor(s, config.warmup_steps, config.steps))
    return Trainee(embedder, model, frozen, params, optimizer, scheduler, bf16)


def param_groups(model, lr: float, token_lr_scale: float) -> list[dict]:
    """AdamW groups: the embed token's trainable row (LoRA mode: peft's ``trainable_tokens_delta``, tied to the LM
    head, so it is also the token's output row) at ``lr * token_lr_scale``, everything else at ``lr``.

    The token is new (initialised as the mean row): at ``lr`` its logit stays ~14 nats below the top even where
    every SFT row asks for it, so the model never emits it; its row needs a larger step."""
    token = [p for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens_delta" in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens_delta" not in n]
    return [{"params": rest, "lr": lr}] + ([{"params": token, "lr": lr * token_lr_scale}] if token else [])


def with_distractors(keep: Iterable[str], ids: Iterable[str], max_docs: int, seed: int) -> list[str]:
    """Sorted: every id of ``keep``, plus seeded distractors from ``ids`` up to ``max_docs`` in all (0 = every id)."""
    keep = set(keep)
    others = sorted(set(ids) - keep)
    if max_docs > 0:
        random.Random(seed).shuffle(others)
        others = others[: max(0, max_docs - len(keep))]
    return sorted(keep | set(others))


def drop_rows_without_negatives(rows: list[dict], k: int) -> list[dict]:
    """With ``k > 0``, the rows that have at least one mined negative (a warning counts the others)."""
    if k <= 0:
        return rows
    usable = [r for r in rows if r["negatives"]]
    if len(usable) < len(rows):
        log.warning("dropping %d training rows without a mined negative", len(rows) - len(usable))
    return usable


def row_documents(rows: list[dict], k: int) -> list[str]:
    """Texts to embed, ``1 + k`` per row: the positive, then its first ``k`` negatives, the last one repeated if fewer.

    Both stages drop rows without a negative first (``drop_rows_without_negatives``); such a row raises here.
    """
    return _row_columns(rows, k, "positive", "negatives")


def row_document_ids(rows: list[dict], k: int) -> list[str]:
    """The ids of ``row_documents``, in the same layout (a row without ids names its documents by their text)."""
    keyed = [r if "positive_id" in r and "negative_ids" in r else dict(r, positive_id=r["positive"], negative_ids=r["negatives"])
             for r in rows]
    return _row_columns(keyed, k, "positive_id", "negative_ids")


def known_positives(rows: list[dict]) -> dict[str, set[str]]:
    """query id -> the ids of every document some training row gives that query as its positive."""
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r.get("query_id", r["query"]), set()).add(r.get("positive_id", r["positive"]))
    return out


def infonce_ignore(rows: list[dict], k: int, positives: dict[str, set[str]]):
    """InfoNCE's ``ignore`` mask for these rows: documents of the batch (``row_document_ids`` layout, positives first)
    that are known positives of a row's query."""
    from searchr3.train.losses.infonce import known_positive_mask

    ids = row_document_ids(rows, k)
    columns = ids[:: 1 + k] + [d for i in range(len(rows)) for d in ids[i * (1 + k) + 1:(i + 1) * (1 + k)]]
    return known_positive_mask([positives.get(r.get("query_id", r["query"]), set()) for r in rows], columns)


def _row_columns(rows: list[dict], k: int, positive: str, negatives: str) -> list[str]:
    docs = []
    for n, row in enumerate(rows):
        negs = list(row[negatives][:k])
        if k and not negs:
            raise ValueError(f"row {n} ({row.get('query_id', '?')}) has no negative to fill {k} slot(s)")
        if len(negs) < k:
            negs += [negs[-1]] * (k - len(negs))
        docs += [row[positive]] + negs
    return docs
