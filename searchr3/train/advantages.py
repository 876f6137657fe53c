"""GRPO advantages: each trace's reward normalised within its group (the clipped objective is in ``losses/clipped_policy.py``)."""
from __future__ import annotations

import math
from collections.abc import Sequence

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
