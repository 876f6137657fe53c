"""Next-token cross-entropy on the reasoning text, and the label/shift convention shared with the KL term.

Convention (the Hugging Face one): ``labels`` are aligned with ``input_ids`` — ``labels[b, t]`` is
the token at position ``t`` or ``IGNORE_INDEX`` (-100) when position ``t`` is not trained on. The
loss shifts inside: the logits at position ``t`` predict ``labels[b, t + 1]``. So the first
position of a sequence is never a target, and the logits at the last position are never used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from searchr3.model.config import IGNORE_INDEX


def reasoning_labels(input_ids: Tensor, reasoning_mask: Tensor) -> Tensor:
    """Labels aligned with ``input_ids``: the token id where ``reasoning_mask`` is true, else -100.

    ``reasoning_mask`` (B, T) marks the tokens to learn (the reasoning text, typically also the
    closing ``<|embed_token|>``); prompt, document and padding positions must be false.
    Do not shift: the losses shift (see the module docstring).
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}")
    if reasoning_mask.shape != input_ids.shape:
        raise ValueError(
            f"reasoning_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(reasoning_mask.shape)}"
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    keep = reasoning_mask.to(torch.bool)
    return torch.where(keep, input_ids.long(), torch.full_like(input_ids, IGNORE_INDEX, dtype=torch.long))


def shift_for_next_token(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(logits[:, :-1], labels[:, 1:])``: pairs each prediction with the token it predicts."""
    check_logits_and_labels(logits, labels)
    return logits[:, :-1, :], labels[:, 1:]


def token_logprobs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probability of each target token, for policy-gradient losses.

    Returns ``(logp, mask)``, both (B, T-1) after the shift: ``logp[b, t]`` is
    ``log softmax(logits[b, t])[labels[b, t+1]]`` (0.0 where masked) and ``mask`` is true where
    ``labels[b, t+1] != -100``. Computed in float32.
    """
    shifted_logits, targets = shift_for_next_token(logits, labels)
    mask = targets != IGNORE_INDEX
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    shifted_logits = shifted_logits.float()
    chosen = shifted_logits.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    logp = chosen - shifted_logits.logsumexp(-1)
    return logp * mask, mask


def compute_loss_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the positions whose (shifted) label is not -100.

    A scalar tensor, the mean over all supervised tokens in the batch (long traces weigh more
    than short ones, as in Hugging Face's causal-LM loss). If no token is supervised the
    result is 0.0 (an empty sum) still attached to the graph, never NaN.
    """
    shifted_logits, targets = shift_for_next_token(logits, labels)
    if not bool((targets != IGNORE_INDEX).any()):
        return shifted_logits.sum() * 0.0
    return F.cross_entropy(
        shifted_logits.float().reshape(-1, shifted_logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="mean",
    )


class ReasoningCELoss(nn.Module):
    """Teach the model to write the reasoning text: next-token cross-entropy on its tokens only.

    The model sees prompt, query and reasoning as one sequence; only the reasoning tokens
    (labels not -100) are targets. Prompt and document tokens are context and are masked by
    the caller, typically with :func:`reasoning_labels`.

    Args:
        None: the loss has no hyperparameters; its weight lives in the composite.

    Requirements:
        1. ``labels`` aligned with the input ids (not shifted), -100 wherever no loss is wanted
           (prompt, document, padding). The shift happens here.
        2. At least one supervised token, otherwise the loss is 0.0 and teaches nothing.

    Inputs:
        +--------+-------------+------------------------------------------------+
        | name   | shape       | meaning                                        |
        +========+=============+================================================+
        | logits | (B, T, V)   | the model's output logits over the vocabulary  |
        | labels | (B, T)      | target token ids aligned with inputs, or -100  |
        +--------+-------------+------------------------------------------------+
        Returns a scalar tensor (mean over supervised tokens).

    Relations:
        - :class:`~searchr3.train.losses.reference_kl.ReferenceKLLoss` uses the same labels to
          pick the same tokens and keeps the policy close to the frozen reference there.
        - :class:`~searchr3.train.losses.composite.CompositeLoss` adds it as ``λ_ce · L_CE``.
        - Matches Hugging Face's ``ForCausalLMLoss`` with ``ignore_index=-100``.

    Example:
        >>> import torch
        >>> ids = torch.tensor([[5, 6, 7, 8]])
        >>> labels = reasoning_labels(ids, torch.tensor([[False, False, True, True]]))
        >>> labels.tolist()
        [[-100, -100, 7, 8]]
        >>> loss = ReasoningCELoss()(torch.randn(1, 4, 10), labels)
        >>> loss.shape
        torch.Size([])
    """

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return compute_loss_from_logits(logits, labels)


def check_logits_and_labels(logits: Tensor, labels: Tensor) -> None:
    """Raise ``ValueError`` unless logits are (B, T, V), labels (B, T) integer, and T >= 2."""
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (B, T, V), got {tuple(logits.shape)}")
    if labels.dim() != 2 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must have shape (B, T) = {tuple(logits.shape[:2])} matching logits, got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer token ids or -100, got dtype {labels.dtype}")
    if logits.shape[1] < 2:
        raise ValueError(f"need at least 2 positions to predict a next token, got T={logits.shape[1]}")
    vocab = logits.shape[-1]
    targets = labels[:, 1:]
    bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocab))
    if bool(bad.any()):
        raise ValueError(f"labels hold token ids outside [0, {vocab}) that are not -100: {targets[bad][:5].tolist()}")
