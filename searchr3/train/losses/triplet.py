"""Triplet margin loss over cosine similarity."""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def compute_loss_from_embeddings(
    queries: Tensor,
    positives: Tensor,
    hard_negatives: Tensor,
    *,
    margin: float = 0.1,
) -> Tensor:
    """Mean over every (query i, positive i, hard negative i,j) of ``max(0, θ - cos(q,p) + cos(q,n))``.

    A scalar tensor; the mean is over all ``B * k`` triples. Inputs are L2-normalised here.
    """
    _check_inputs(queries, positives, hard_negatives, margin)
    q = F.normalize(queries, dim=-1)
    p = F.normalize(positives, dim=-1)
    n = F.normalize(hard_negatives, dim=-1)
    positive_cos = (q * p).sum(-1, keepdim=True)  # (B, 1)
    negative_cos = (q.unsqueeze(1) * n).sum(-1)  # (B, k)
    return F.relu(margin - positive_cos + negative_cos).mean()


class TripletMarginLoss(nn.Module):
    """Make each query's positive more similar than each of its hard negatives, by a margin.

    For every query, its positive and each one of its hard negatives, the loss is
    ``max(0, θ - cos(q, p) + cos(q, n))``: zero once the positive beats that negative by at
    least the margin θ, linear otherwise. The result is the mean over all triples. Unlike
    InfoNCE it stops pushing on negatives that are already far enough away.

    Args:
        margin: θ >= 0, the cosine gap wanted between the positive and every hard negative.

    Requirements:
        1. Row ``i`` of ``positives`` is relevant to row ``i`` of ``queries``.
        2. At least one hard negative per query, none of them relevant to it.
        3. Embeddings need not be normalised; they are L2-normalised inside.

    Inputs:
        +----------------+-------------+------------------------------------------+
        | name           | shape       | meaning                                  |
        +================+=============+==========================================+
        | queries        | (B, d)      | query embeddings                         |
        | positives      | (B, d)      | the positive document of each query      |
        | hard_negatives | (B, k, d)   | k >= 1 mined negatives per query         |
        +----------------+-------------+------------------------------------------+
        Returns a scalar tensor (mean over the B*k triples).

    Relations:
        - :class:`~searchr3.train.losses.infonce.InfoNCELoss` takes the same inputs and
          contrasts all negatives at once through a softmax; it never reaches exactly zero.
        - :class:`~searchr3.train.losses.composite.CompositeLoss` adds it as ``λ_tri · Triplet``.
        - Same hinge as sentence-transformers' TripletLoss with a cosine distance, averaged
          over several negatives per query.

    Example:
        >>> import torch
        >>> loss = TripletMarginLoss(margin=0.1)
        >>> q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 3, 8)
        >>> bool(loss(q, p, n) >= 0)
        True
    """

    def __init__(self, margin: float = 0.1):
        super().__init__()
        if isinstance(margin, bool) or not isinstance(margin, (int, float)):
            raise TypeError(f"margin must be a number, got {type(margin).__name__}")
        if not math.isfinite(margin) or margin < 0:
            raise ValueError(f"margin must be a finite number >= 0, got {margin}")
        self.margin = float(margin)

    def forward(self, queries: Tensor, positives: Tensor, hard_negatives: Tensor) -> Tensor:
        return compute_loss_from_embeddings(queries, positives, hard_negatives, margin=self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


def _check_inputs(queries: Tensor, positives: Tensor, hard_negatives: Tensor, margin: float) -> None:
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    if queries.dim() != 2 or queries.shape[0] == 0:
        raise ValueError(f"queries must have shape (B>=1, d), got {tuple(queries.shape)}")
    if positives.shape != queries.shape:
        raise ValueError(
            f"positives must have the shape of queries {tuple(queries.shape)}, got {tuple(positives.shape)}"
        )
    if hard_negatives is None:
        raise ValueError("the triplet loss needs hard_negatives of shape (B, k>=1, d), got None")
    batch, dim = queries.shape
    if (
        hard_negatives.dim() != 3
        or hard_negatives.shape[0] != batch
        or hard_negatives.shape[1] == 0
        or hard_negatives.shape[2] != dim
    ):
        raise ValueError(
            f"hard_negatives must have shape (B={batch}, k>=1, d={dim}), got {tuple(hard_negatives.shape)}"
        )
