"""InfoNCE: contrastive cross-entropy over cosine similarities divided by a temperature."""
from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence

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
    ignore: Tensor | None = None,
) -> Tensor:
    """Mean InfoNCE loss over the batch (a scalar tensor).

    The batch's documents are laid out as ``[p_0 .. p_{B-1}, n_{0,0} .. n_{0,k-1}, n_{1,0} ..]`` (positives, then
    each row's hard negatives). Row ``i`` scores by ``cos(q_i, c) / temperature`` its positive ``p_i``, its own hard
    negatives and, when ``in_batch_negatives`` is on, every other document of the batch; the row's loss is the
    cross-entropy with ``p_i`` as the class, i.e. ``-s(q_i, p_i) / τ + logsumexp_c s(q_i, c) / τ``.
    ``ignore`` (B, B + B·k), optional: True where a document must not count as a negative of that row (a known
    positive of the row's query: ``known_positive_mask``); the row's own positive is never ignored.
    Inputs are L2-normalised here.

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
    documents = F.normalize(positives, dim=-1)
    if num_hard:
        documents = torch.cat([documents, F.normalize(hard_negatives, dim=-1).reshape(-1, q.shape[-1])], dim=0)
    scores = q @ documents.T  # (B, B + B*k)
    rows = torch.arange(batch, device=q.device)
    drop = torch.zeros_like(scores, dtype=torch.bool)
    if not in_batch_negatives:
        drop[:] = True
        drop[rows, rows] = False
        for j in range(num_hard):
            drop[rows, batch + rows * num_hard + j] = False
    if ignore is not None:
        if ignore.shape != scores.shape:
            raise ValueError(f"ignore must have shape (B, B + B*k) = {tuple(scores.shape)}, got {tuple(ignore.shape)}")
        drop = drop | ignore.to(device=q.device, dtype=torch.bool)
        drop[rows, rows] = False
    logits = scores.masked_fill(drop, float("-inf")) / temperature
    return F.cross_entropy(logits, rows)


def known_positive_mask(positive_ids: Sequence[Iterable[Hashable]], column_ids: Sequence[Hashable]) -> Tensor:
    """``ignore`` for :func:`compute_loss_from_embeddings`: ``[i, c]`` True where document ``column_ids[c]`` is a known
    positive of row ``i``'s query (``positive_ids[i]``: every relevant document id of that query), except row ``i``'s
    own positive column ``c = i``. A query sharing its positive with another row, or a document that is one row's
    positive and another's negative, is then never pushed away from a query it is relevant to."""
    known = [set(p) for p in positive_ids]
    mask = torch.tensor([[c in ids for c in column_ids] for ids in known], dtype=torch.bool).reshape(len(known), len(column_ids))
    idx = torch.arange(min(len(known), len(column_ids)))
    mask[idx, idx] = False
    return mask


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
           upstream). Documents of the batch relevant to row ``i``'s query other than its positive (another row
           with the same positive) are passed in ``ignore`` (``known_positive_mask``), else they count as negatives.
        3. At least one negative per row: hard negatives, or in-batch negatives with B >= 2.
        4. Embeddings need not be normalised; they are L2-normalised inside.

    Inputs:
        +----------------+-------------+------------------------------------------+
        | name           | shape       | meaning                                  |
        +================+=============+==========================================+
        | queries        | (B, d)      | query embeddings                         |
        | positives      | (B, d)      | the positive document of each query      |
        | hard_negatives | (B, k, d)   | optional; k mined negatives per query    |
        | ignore         | (B, B+B*k)  | optional; True = not a negative of row i |
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

    def forward(self, queries: Tensor, positives: Tensor, hard_negatives: Tensor | None = None,
                ignore: Tensor | None = None) -> Tensor:
        return compute_loss_from_embeddings(
            queries,
            positives,
            hard_negatives,
            temperature=self.temperature,
            in_batch_negatives=self.in_batch_negatives,
            ignore=ignore,
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
