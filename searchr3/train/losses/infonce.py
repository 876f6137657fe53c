"""InfoNCE: contrastive cross-entropy over cosine similarities divided by a temperature."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def compute_loss_from_embeddings(
    queries: Tensor,
    positives: Tensor,
    hard_negatives: Tensor | None = None,
    *,
    temperature: float = 0.05,
    in_batch_negatives: bool = True,
) -> Tensor:
    """Mean InfoNCE loss over the batch (a scalar tensor).

    Row ``i`` scores its candidates by ``cos(q_i, c) / temperature`` in this order:
    ``[p_i, hard_negatives[i, 0..k-1]]`` and, when ``in_batch_negatives`` is on, then every
    other row's positive ``p_j`` (j != i) and every other row's hard negatives. The loss of the
    row is the cross-entropy with the positive at index 0, i.e.
    ``-s(q_i, p_i) / τ + logsumexp_c s(q_i, c) / τ``. Inputs are L2-normalised here.

    Raises ``ValueError`` when a row would have no negative at all (no hard negatives and
    either in-batch negatives off or a batch of one): its loss would be identically zero.
    """
    _check_inputs(queries, positives, hard_negatives, temperature)
    batch = queries.shape[0]
    num_hard = 0 if hard_negatives is None else hard_negatives.shape[1]
    if num_hard == 0 and not (in_batch_negatives and batch > 1):
        raise ValueError(
            "InfoNCE needs at least one negative per query: pass hard_negatives (B, k>=1) "
            f"or use in-batch negatives with a batch of 2 or more (got batch={batch}, "
            f"in_batch_negatives={in_batch_negatives}, hard negatives per query={num_hard})"
        )

    q = F.normalize(queries, dim=-1)
    p = F.normalize(positives, dim=-1)
    positive_scores = (q * p).sum(-1, keepdim=True)  # (B, 1)
    columns = [positive_scores]

    if num_hard:
        n = F.normalize(hard_negatives, dim=-1)  # (B, k, d)
        columns.append(torch.einsum("bd,bkd->bk", q, n))  # own hard negatives, (B, k)

    if in_batch_negatives and batch > 1:
        # Score every query against every document in the batch, then drop the columns that
        # already appear above (the row's own positive and own hard negatives).
        documents = p if not num_hard else torch.cat([p, n.reshape(-1, n.shape[-1])], dim=0)
        all_scores = q @ documents.T  # (B, B + B*k)
        own = torch.zeros_like(all_scores, dtype=torch.bool)
        rows = torch.arange(batch, device=q.device)
        own[rows, rows] = True
        for j in range(num_hard):
            own[rows, batch + rows * num_hard + j] = True
        columns.append(all_scores[~own].reshape(batch, -1))

    logits = torch.cat(columns, dim=1) / temperature
    target = torch.zeros(batch, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


class InfoNCELoss(nn.Module):
    """Pull each query towards its positive document and away from negatives, by cosine.

    For every query the loss is a softmax classification over candidate documents whose
    logits are ``cos(query, doc) / temperature``; the correct class is the query's positive.
    Candidates are the positive, the query's own mined hard negatives and (switchable)
    in-batch negatives: the other queries' positives and their hard negatives. The lower the
    temperature, the more the loss concentrates on the hardest negatives.

    Args:
        temperature: τ > 0 dividing the cosine similarities (0.05 is a common choice;
            equivalently sentence-transformers' ``scale = 1/τ = 20``).
        in_batch_negatives: also use the other rows' positives and hard negatives as negatives.

    Requirements:
        1. Row ``i`` of ``positives`` is relevant to row ``i`` of ``queries``.
        2. Hard negatives of row ``i`` are not relevant to query ``i`` (filter false negatives
           upstream). With in-batch negatives on, no two rows may share a relevant document.
        3. At least one negative per row: hard negatives, or in-batch negatives with B >= 2.
        4. Embeddings need not be normalised; they are L2-normalised inside.

    Inputs:
        +----------------+-------------+------------------------------------------+
        | name           | shape       | meaning                                  |
        +================+=============+==========================================+
        | queries        | (B, d)      | query embeddings                         |
        | positives      | (B, d)      | the positive document of each query      |
        | hard_negatives | (B, k, d)   | optional; k mined negatives per query    |
        +----------------+-------------+------------------------------------------+
        Returns a scalar tensor (mean over the B rows).

    Relations:
        - :class:`~searchr3.train.losses.triplet.TripletMarginLoss` uses the same triples but
          penalises each negative separately with a hinge; InfoNCE weighs all negatives at once.
        - :class:`~searchr3.train.losses.composite.CompositeLoss` adds it as ``λ_nce · InfoNCE``.
        - Equals sentence-transformers' MultipleNegativesRankingLoss with cosine similarity and
          ``scale = 1/τ``, except that other rows' hard negatives are in-batch negatives too.

    Example:
        >>> import torch
        >>> loss = InfoNCELoss(temperature=0.05)
        >>> q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 2, 8)
        >>> value = loss(q, p, n)
        >>> value.shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.05, in_batch_negatives: bool = True):
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if not isinstance(in_batch_negatives, bool):
            raise TypeError(f"in_batch_negatives must be True or False, got {in_batch_negatives!r}")
        self.temperature = float(temperature)
        self.in_batch_negatives = in_batch_negatives

    def forward(self, queries: Tensor, positives: Tensor, hard_negatives: Tensor | None = None) -> Tensor:
        return compute_loss_from_embeddings(
            queries,
            positives,
            hard_negatives,
            temperature=self.temperature,
            in_batch_negatives=self.in_batch_negatives,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, in_batch_negatives={self.in_batch_negatives}"


def has_negatives(batch_size: int, hard_negatives: Tensor | None, in_batch_negatives: bool) -> bool:
    """Whether every row of such a batch has at least one negative (else InfoNCE is undefined)."""
    num_hard = 0 if hard_negatives is None else hard_negatives.shape[1]
    return num_hard > 0 or (in_batch_negatives and batch_size > 1)


def _check_inputs(queries: Tensor, positives: Tensor, hard_negatives: Tensor | None, temperature: float) -> None:
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if queries.dim() != 2:
        raise ValueError(f"queries must have shape (B, d), got {tuple(queries.shape)}")
    if positives.shape != queries.shape:
        raise ValueError(
            f"positives must have the shape of queries {tuple(queries.shape)}, got {tuple(positives.shape)}"
        )
    if queries.shape[0] == 0:
        raise ValueError("InfoNCE needs a batch of at least one query, got B=0")
    if hard_negatives is not None:
        batch, dim = queries.shape
        if hard_negatives.dim() != 3 or hard_negatives.shape[0] != batch or hard_negatives.shape[2] != dim:
            raise ValueError(
                f"hard_negatives must have shape (B={batch}, k, d={dim}), got {tuple(hard_negatives.shape)}"
            )
