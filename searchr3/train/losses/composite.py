"""The SFT objective: a weighted sum of the reasoning CE, reference KL, InfoNCE and triplet terms."""
from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor, nn

from searchr3.train.losses import infonce, reasoning_ce, reference_kl, triplet
from searchr3.train.losses.reasoning_ce import IGNORE_INDEX

TERMS = ("ce", "kl", "infonce", "triplet")


class CompositeOutput(NamedTuple):
    """What :class:`CompositeLoss` returns.

    ``total``: the weighted sum, a scalar tensor to call ``backward()`` on.
    ``components``: unweighted value of each term that was computed, as detached floats;
    a term that was skipped has no key (absent, never 0.0).
    ``skipped``: for each term left out, why (``"weight 0"``, ``"missing reference_logits"`` ...).
    """

    total: Tensor
    components: dict[str, float]
    skipped: dict[str, str]


class CompositeLoss(nn.Module):
    """The Search-R3 SFT loss: ``λ_ce·L_CE + λ_kl·KL + λ_nce·InfoNCE + λ_tri·Triplet``.

    Each term is computed only if its weight is non-zero and its inputs were given, so one
    module serves batches with or without reasoning traces, reference logits or hard
    negatives. Skipped terms are reported with a reason, never counted as 0.0.

    Args:
        lambda_ce: weight of the next-token CE on the reasoning text (>= 0).
        lambda_kl: weight of the token-level KL to the frozen reference (>= 0).
        lambda_nce: weight of InfoNCE over query/document embeddings (>= 0).
        lambda_tri: weight of the triplet margin loss (>= 0).
        temperature: InfoNCE temperature τ > 0.
        in_batch_negatives: InfoNCE also uses the other rows' documents as negatives.
        margin: triplet margin θ >= 0.

    Requirements (per term; a term lacking them is skipped):
        - ce: ``logits`` and ``labels`` with at least one label that is not -100.
        - kl: as ce, plus ``reference_logits``.
        - infonce: ``queries`` and ``positives``, and at least one negative per row.
        - triplet: ``queries``, ``positives`` and ``hard_negatives`` with k >= 1.
        At least one term must be computed, else ``ValueError`` (there is nothing to optimise).

    Inputs (all keyword, all optional):
        +------------------+-------------+------------------------------------------+
        | name             | shape       | meaning                                  |
        +==================+=============+==========================================+
        | logits           | (B, T, V)   | policy logits over the trace sequence    |
        | labels           | (B, T)      | aligned token ids, -100 where not trained|
        | reference_logits | (B, T, V)   | frozen reference logits, same inputs     |
        | queries          | (B', d)     | query embeddings                         |
        | positives        | (B', d)     | positive document embeddings             |
        | hard_negatives   | (B', k, d)  | mined negative document embeddings       |
        | kl_labels        | (B, T)      | tokens the KL term covers (default labels)|
        | ignore           | (B', B'+B'k)| InfoNCE: documents that are not negatives|
        | scale            | {term: f}   | multiplies a term in ``total`` only      |
        +------------------+-------------+------------------------------------------+
        ``scale`` (distributed training, :meth:`searchr3.train.distributed.Dist.token_share`): a rank's share
        of a token mean; ``components`` stay the unscaled values.
        Returns :class:`CompositeOutput` ``(total, components, skipped)``.

    Relations:
        Combines :class:`~searchr3.train.losses.reasoning_ce.ReasoningCELoss`,
        :class:`~searchr3.train.losses.reference_kl.ReferenceKLLoss`,
        :class:`~searchr3.train.losses.infonce.InfoNCELoss` and
        :class:`~searchr3.train.losses.triplet.TripletMarginLoss`, calling their pure functions.

    Example:
        >>> import torch
        >>> loss = CompositeLoss(lambda_ce=1.0, lambda_kl=0.1, lambda_nce=1.0, lambda_tri=0.0)
        >>> out = loss(queries=torch.randn(4, 8), positives=torch.randn(4, 8))
        >>> sorted(out.components), sorted(out.skipped)
        (['infonce'], ['ce', 'kl', 'triplet'])
    """

    def __init__(
        self,
        lambda_ce: float = 1.0,
        lambda_kl: float = 0.0,
        lambda_nce: float = 0.0,
        lambda_tri: float = 0.0,
        *,
        temperature: float = 0.05,
        in_batch_negatives: bool = True,
        margin: float = 0.1,
    ):
        super().__init__()
        weights = {"ce": lambda_ce, "kl": lambda_kl, "infonce": lambda_nce, "triplet": lambda_tri}
        names = {"ce": "lambda_ce", "kl": "lambda_kl", "infonce": "lambda_nce", "triplet": "lambda_tri"}
        for term, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise TypeError(f"{names[term]} must be a number, got {type(weight).__name__}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{names[term]} must be a finite number >= 0, got {weight}")
        if not any(weights.values()):
            raise ValueError(
                "all loss weights are 0: set at least one of lambda_ce, lambda_kl, lambda_nce, lambda_tri > 0"
            )
        self.weights = {term: float(weight) for term, weight in weights.items()}
        # The sibling modules validate temperature, in_batch_negatives and margin.
        self.infonce = infonce.InfoNCELoss(temperature=temperature, in_batch_negatives=in_batch_negatives)
        self.triplet = triplet.TripletMarginLoss(margin=margin)

    def forward(
        self,
        *,
        logits: Tensor | None = None,
        labels: Tensor | None = None,
        reference_logits: Tensor | None = None,
        queries: Tensor | None = None,
        positives: Tensor | None = None,
        hard_negatives: Tensor | None = None,
        kl_labels: Tensor | None = None,
        ignore: Tensor | None = None,
        scale: dict[str, float] | None = None,
    ) -> CompositeOutput:
        kl_labels = labels if kl_labels is None else kl_labels
        values: dict[str, Tensor] = {}
        skipped: dict[str, str] = {}
        reasons = {
            "ce": _missing(logits=logits, labels=labels) or _no_supervised_tokens(labels),
            "kl": _missing(logits=logits, labels=kl_labels, reference_logits=reference_logits)
            or _no_supervised_tokens(kl_labels),
            "infonce": _missing(queries=queries, positives=positives)
            or _no_infonce_negatives(queries, hard_negatives, self.infonce.in_batch_negatives),
            "triplet": _missing(queries=queries, positives=positives, hard_negatives=hard_negatives)
            or ("no hard negatives (k=0)" if hard_negatives.dim() == 3 and hard_negatives.shape[1] == 0 else None),
        }
        for term in TERMS:
            if self.weights[term] == 0:
                skipped[term] = "weight 0"
            elif reasons[term]:
                skipped[term] = reasons[term]
        if "ce" not in skipped:
            values["ce"] = reasoning_ce.compute_loss_from_logits(logits, labels)
        if "kl" not in skipped:
            values["kl"] = reference_kl.compute_loss_from_logits(logits, reference_logits, kl_labels)
        if "infonce" not in skipped:
            values["infonce"] = self.infonce(queries, positives, hard_negatives, ignore)
        if "triplet" not in skipped:
            values["triplet"] = self.triplet(queries, positives, hard_negatives)
        if not values:
            detail = "; ".join(f"{term}: {why}" for term, why in skipped.items())
            raise ValueError(f"no loss term could be computed for this batch ({detail})")
        scale = scale or {}
        total = sum(self.weights[term] * scale.get(term, 1.0) * value for term, value in values.items())
        components = {term: float(value.detach()) for term, value in values.items()}
        return CompositeOutput(total=total, components=components, skipped=skipped)

    def extra_repr(self) -> str:
        return ", ".join(f"{term}={weight}" for term, weight in self.weights.items())


def _missing(**inputs: Tensor | None) -> str | None:
    absent = [name for name, value in inputs.items() if value is None]
    return f"missing {', '.join(absent)}" if absent else None


def _no_supervised_tokens(labels: Tensor) -> str | None:
    if labels.dim() == 2 and not bool((labels[:, 1:] != IGNORE_INDEX).any()):
        return "no supervised tokens (all labels -100)"
    return None


def _no_infonce_negatives(queries: Tensor, hard_negatives: Tensor | None, in_batch_negatives: bool) -> str | None:
    if infonce.has_negatives(queries.shape[0], hard_negatives, in_batch_negatives):
        return None
    return "no negatives (no hard negatives and no in-batch negatives)"
