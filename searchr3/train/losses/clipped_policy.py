"""GRPO's policy loss: the PPO/GRPO clipped surrogate on the generated tokens, plus β · k3 KL to the reference."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from searchr3.train.losses.reference_kl import kl_k3


class PolicyLoss(NamedTuple):
    """``loss``: scalar to minimise; ``clip_fraction``: share of masked tokens whose ratio was clipped."""

    loss: Tensor
    clip_fraction: float


class ClippedPolicyOutput(NamedTuple):
    """What :class:`ClippedPolicyLoss` returns: ``total = policy + beta · kl`` (call ``backward()`` on it), the two
    terms (tensors) and ``clip_fraction`` (share of masked tokens whose ratio was clipped)."""

    total: Tensor
    policy: Tensor
    kl: Tensor
    clip_fraction: float


def masked_sequence_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the masked tokens of each sequence, then over sequences.

    ``values`` and ``mask`` are (B, T). A sequence with no masked token contributes 0.0
    (its denominator is clamped to 1), as in TRL's GRPO loss.
    """
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(f"values and mask must both be (B, T), got {tuple(values.shape)} and {tuple(mask.shape)}")
    weights = mask.to(values.dtype)
    per_sequence = (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    return per_sequence.mean()


def clipped_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
) -> PolicyLoss:
    """The PPO/GRPO clipped surrogate, negated to be minimised.

    Per token: ``ratio = exp(logp - old_logp)`` and
    ``loss_t = -min(ratio * A, clip(ratio, 1 - ε, 1 + ε) * A)``, where ``A`` is the advantage of
    the token's sequence. The loss is averaged over masked tokens of each sequence, then over
    sequences (:func:`masked_sequence_mean`). ``old_logp`` and ``advantages`` are constants
    (detached). ``clip_fraction`` is the share of all masked tokens where the clipped term was
    the one chosen (ratio above 1 + ε with A > 0, or below 1 - ε with A < 0).

    Shapes: ``logp``, ``old_logp``, ``mask`` (B, T); ``advantages`` (B,) or (B, T).
    """
    _check_clip_eps(clip_eps)
    if logp.dim() != 2:
        raise ValueError(f"logp must have shape (B, T), got {tuple(logp.shape)}")
    if old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask {tuple(mask.shape)} must match"
        )
    if advantages.shape == logp.shape[:1]:
        advantages = advantages.unsqueeze(1)
    elif advantages.shape != logp.shape:
        raise ValueError(
            f"advantages must have shape (B,) or (B, T) for logp {tuple(logp.shape)}, got {tuple(advantages.shape)}"
        )
    advantages = advantages.detach().to(logp.dtype)
    ratio = torch.exp(logp - old_logp.detach())
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    loss = masked_sequence_mean(per_token, mask)

    token_mask = mask.to(torch.bool)
    was_clipped = ((ratio > 1.0 + clip_eps) & (advantages > 0)) | ((ratio < 1.0 - clip_eps) & (advantages < 0))
    counted = int(token_mask.sum())
    clip_fraction = float((was_clipped & token_mask).sum()) / counted if counted else 0.0
    return PolicyLoss(loss=loss, clip_fraction=clip_fraction)


def compute_loss_from_logprobs(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    beta: float = 0.04,
) -> ClippedPolicyOutput:
    """``clipped_policy_loss + beta · masked_sequence_mean(kl_k3(logp, ref_logp))`` on the masked tokens.

    The KL term is :func:`~searchr3.train.losses.reference_kl.kl_k3` averaged like the surrogate (per
    sequence, then over sequences); ``ref_logp`` is a constant (detached).
    """
    if ref_logp.shape != logp.shape:
        raise ValueError(f"ref_logp {tuple(ref_logp.shape)} must have the shape of logp {tuple(logp.shape)}")
    policy = clipped_policy_loss(logp, old_logp, advantages, mask, clip_eps)
    kl = masked_sequence_mean(kl_k3(logp, ref_logp), mask)
    return ClippedPolicyOutput(total=policy.loss + beta * kl, policy=policy.loss, kl=kl, clip_fraction=policy.clip_fraction)


class ClippedPolicyLoss(nn.Module):
    """Make the traces with a higher advantage more likely, a bounded step at a time, near the reference model.

    Each generated token's probability ratio to the policy that sampled it (``old_logp``) is weighted by the
    advantage of its trace (group-normalised reward, :func:`~searchr3.train.advantages.group_advantages`);
    the ratio is clipped to ``[1 - ε, 1 + ε]`` so one batch cannot move the policy far (PPO), the mean is
    taken per trace then over traces (GRPO), and ``beta`` times the k3 estimate of ``KL(policy ‖ reference)``
    on the same tokens is added. Minimising it raises the log-probs of better-than-average traces and lowers
    those of worse ones.

    Args:
        clip_eps: ε in (0, 1), how far the ratio may move from 1 before its gradient stops.
        beta: weight >= 0 of the k3 KL penalty to the reference (0 turns it off; it is still reported).

    Requirements:
        1. ``logp``, ``old_logp`` and ``ref_logp`` are the log-probs of the same sampled tokens under the
           policy being trained (with gradient), the policy that sampled them, and the frozen reference.
        2. ``mask`` marks the generated tokens (prompt, fallback suffix and padding are 0).
        3. ``advantages`` holds one value per trace (or per token); they are constants (detached).

    Inputs:
        +------------+-------------+-----------------------------------------------+
        | name       | shape       | meaning                                       |
        +============+=============+===============================================+
        | logp       | (B, T)      | log-probs of the sampled tokens, with grad    |
        | old_logp   | (B, T)      | the same under the sampling policy            |
        | ref_logp   | (B, T)      | the same under the frozen reference           |
        | advantages | (B,)/(B, T) | advantage of each trace (or token)            |
        | mask       | (B, T)      | 1 on generated tokens, 0 elsewhere            |
        +------------+-------------+-----------------------------------------------+
        Returns :class:`ClippedPolicyOutput` ``(total, policy, kl, clip_fraction)``.

    Relations:
        - :func:`~searchr3.train.losses.reference_kl.kl_k3` is its KL term; SFT's
          :class:`~searchr3.train.losses.reference_kl.ReferenceKLLoss` is the exact KL over the vocabulary.
        - The GRPO loop adds ``λ_nce ·`` :class:`~searchr3.train.losses.infonce.InfoNCELoss` for the documents.
        - Matches TRL's ``GRPOTrainer`` loss with ``loss_type="grpo"`` (per-sequence token mean), ``epsilon=ε``
          and ``beta=β``.

    Example:
        >>> import torch
        >>> loss = ClippedPolicyLoss(clip_eps=0.2, beta=0.0)
        >>> logp = torch.log(torch.tensor([[0.5, 0.5]]))
        >>> out = loss(logp, logp, logp, torch.tensor([1.0]), torch.tensor([[1, 1]]))
        >>> round(out.total.item(), 6), out.clip_fraction
        (-1.0, 0.0)
    """

    def __init__(self, clip_eps: float = 0.2, beta: float = 0.04):
        super().__init__()
        _check_clip_eps(clip_eps)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise TypeError(f"beta must be a number, got {type(beta).__name__}")
        if not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        self.clip_eps = float(clip_eps)
        self.beta = beta

    def forward(self, logp: Tensor, old_logp: Tensor, ref_logp: Tensor, advantages: Tensor,
                mask: Tensor) -> ClippedPolicyOutput:
        return compute_loss_from_logprobs(logp, old_logp, ref_logp, advantages, mask, clip_eps=self.clip_eps,
                                          beta=self.beta)

    def extra_repr(self) -> str:
        return f"clip_eps={self.clip_eps}, beta={self.beta}"


def _check_clip_eps(clip_eps: float) -> None:
    if isinstance(clip_eps, bool) or not isinstance(clip_eps, (int, float)) or not 0 < clip_eps < 1:
        raise ValueError(f"clip_eps must be a number in (0, 1), got {clip_eps!r}")
