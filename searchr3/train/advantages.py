"""GRPO pieces on tensors: group-normalised advantages and the clipped policy-gradient surrogate."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


def group_advantages(rewards: Sequence[float] | np.ndarray | Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """``(r - mean of its group) / (std of its group + eps)`` for each reward, as float32 (N*G,).

    ``rewards`` holds N groups of ``group_size`` consecutive entries (the G traces sampled for
    one query, then the next query's G traces). The std is the sample std (Bessel-corrected,
    as ``torch.std`` in TRL and verl). A group whose rewards are all equal carries no signal:
    its advantages are exactly 0.0, never NaN.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an integer >= 2 (a group needs a spread), got {group_size!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    values = torch.as_tensor(rewards if isinstance(rewards, Tensor) else np.asarray(rewards, dtype=np.float64))
    values = values.detach().to(torch.float64)
    if values.dim() != 1:
        raise ValueError(f"rewards must be a flat sequence of N*G numbers, got shape {tuple(values.shape)}")
    if values.numel() == 0 or values.numel() % group_size:
        raise ValueError(
            f"the number of rewards ({values.numel()}) must be a positive multiple of group_size ({group_size})"
        )
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"rewards must be finite, got {values.tolist()}")
    groups = values.view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    scaled = centred / (groups.std(dim=1, keepdim=True) + eps)
    all_equal = (groups == groups[:, :1]).all(dim=1, keepdim=True)
    return torch.where(all_equal, torch.zeros_like(scaled), scaled).reshape(-1).to(torch.float32)


class PolicyLoss(NamedTuple):
    """``loss``: scalar to minimise; ``clip_fraction``: share of masked tokens whose ratio was clipped."""

    loss: Tensor
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
    if isinstance(clip_eps, bool) or not isinstance(clip_eps, (int, float)) or not 0 < clip_eps < 1:
        raise ValueError(f"clip_eps must be a number in (0, 1), got {clip_eps!r}")
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
