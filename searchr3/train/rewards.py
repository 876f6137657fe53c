"""GRPO rewards as pure functions on plain Python values: one float per sampled trace.

Ranks are 1-based (the top hit has rank 1); ``None`` means the positive was not retrieved.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence

import numpy as np


def rank_of(doc_id: Hashable, ranked_ids: Sequence[Hashable]) -> int | None:
    """1-based position of ``doc_id`` in ``ranked_ids`` (first occurrence), or ``None`` if absent."""
    for position, candidate in enumerate(ranked_ids, start=1):
        if candidate == doc_id:
            return position
    return None


def rank_reward(ranks: Sequence[int | None], cutoff: int) -> list[float]:
    """DCG-scaled reward per trace: ``1 / log2(1 + rank)`` if ``1 <= rank <= cutoff``, else 0.0.

    Rank 1 gives 1.0, rank 3 gives 0.5; a rank beyond ``cutoff`` or ``None`` gives 0.0.
    Raises ``ValueError`` for a rank below 1 or not an integer, or a cutoff below 1.
    """
    _check_cutoff(cutoff)
    rewards = []
    for index, rank in enumerate(ranks):
        if rank is None:
            rewards.append(0.0)
            continue
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
            raise ValueError(f"ranks[{index}] must be an integer >= 1 (1-based) or None, got {rank!r}")
        rewards.append(1.0 / math.log2(1 + int(rank)) if rank <= cutoff else 0.0)
    return rewards


def format_reward(emitted: Sequence[bool], value: float) -> list[float]:
    """``value`` for each trace that emitted ``<|embed_token|>`` by itself, 0.0 for a fallback."""
    _check_weight("value", value)
    rewards = []
    for index, flag in enumerate(emitted):
        if not isinstance(flag, (bool, np.bool_)):
            raise ValueError(f"emitted[{index}] must be True or False, got {flag!r}")
        rewards.append(float(value) if flag else 0.0)
    return rewards


def combined_reward(
    ranks: Sequence[int | None],
    emitted: Sequence[bool],
    cutoff: int,
    w_rank: float = 1.0,
    w_format: float = 0.1,
) -> list[float]:
    """Per trace: ``w_rank * rank_reward + w_format * [token emitted]``.

    ``ranks[i]`` and ``emitted[i]`` describe the same trace; the two lists must be equally long.
    """
    if len(ranks) != len(emitted):
        raise ValueError(f"ranks ({len(ranks)}) and emitted ({len(emitted)}) must have one entry per trace")
    _check_weight("w_rank", w_rank)
    by_rank = rank_reward(ranks, cutoff)
    by_format = format_reward(emitted, w_format)
    return [float(w_rank) * r + f for r, f in zip(by_rank, by_format)]


def _check_cutoff(cutoff: int) -> None:
    if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Integral) or cutoff < 1:
        raise ValueError(f"cutoff must be an integer >= 1, got {cutoff!r}")


def _check_weight(name: str, weight: float) -> None:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"{name} must be a finite number, got {weight!r}")

