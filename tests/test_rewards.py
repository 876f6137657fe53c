"""GRPO rewards and group advantages, against hand-computed values (the clipped policy loss: test_losses.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from searchr3.train.advantages import group_advantages
from searchr3.train.rewards import combined_reward, format_reward, rank_of, rank_reward

# ---------------------------------------------------------------- rewards


def test_rank_reward_is_dcg_scaled_within_the_cutoff():
    rewards = rank_reward([1, 2, 3, 10, 11, None], cutoff=10)
    assert rewards[0] == 1.0
    assert rewards[1] == pytest.approx(1 / math.log2(3))
    assert rewards[2] == 0.5
    assert rewards[3] == pytest.approx(1 / math.log2(11))
    assert rewards[4] == 0.0  # beyond the cutoff
    assert rewards[5] == 0.0  # not retrieved


def test_rank_reward_accepts_numpy_integers_and_rejects_invalid_ranks():
    assert rank_reward([np.int64(3)], cutoff=5) == [0.5]
    with pytest.raises(ValueError, match=r"ranks\[1\] must be an integer >= 1"):
        rank_reward([1, 0], cutoff=5)
    with pytest.raises(ValueError, match="integer >= 1"):
        rank_reward([1.5], cutoff=5)
    with pytest.raises(ValueError, match="cutoff"):
        rank_reward([1], cutoff=0)


def test_rank_of_is_one_based_and_none_when_absent():
    ranked = ["d7", "d3", "d9", "d3"]
    assert rank_of("d7", ranked) == 1
    assert rank_of("d3", ranked) == 2
    assert rank_of("d1", ranked) is None
    assert rank_of(5, np.array([4, 5])) == 2


def test_format_reward_rewards_only_emitted_tokens():
    assert format_reward([True, False, np.bool_(True)], 0.2) == [0.2, 0.0, 0.2]
    with pytest.raises(ValueError, match=r"emitted\[0\]"):
        format_reward([1], 0.2)


def test_combined_reward_weights_rank_and_format():
    rewards = combined_reward([1, 3, None, 50], [True, False, True, False], cutoff=10, w_rank=2.0, w_format=0.1)
    assert rewards == pytest.approx([2.1, 1.0, 0.1, 0.0])
    with pytest.raises(ValueError, match="one entry per trace"):
        combined_reward([1, 2], [True], cutoff=10)


# ---------------------------------------------------------------- advantages


def test_group_advantages_normalise_each_group_and_zero_all_equal_groups():
    # group 1: mean 1/4, sample std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 1/2
    advantages = group_advantages([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5], group_size=4, eps=0.0)
    assert advantages.dtype == torch.float32
    assert advantages.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0])


def test_group_advantages_all_equal_is_exactly_zero_even_without_eps():
    advantages = group_advantages(torch.tensor([0.1, 0.1, 0.1, 0.3, 0.3, 0.3]), group_size=3, eps=0.0)
    assert advantages.tolist() == [0.0] * 6


def test_group_advantages_eps_enters_the_denominator():
    advantages = group_advantages(np.array([1.0, 0.0]), group_size=2, eps=0.5)
    std = math.sqrt(0.5)  # sample std of (1, 0)
    assert advantages.tolist() == pytest.approx([0.5 / (std + 0.5), -0.5 / (std + 0.5)])


def test_group_advantages_reject_bad_groups():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages([1.0, 0.0, 1.0], group_size=2)
    with pytest.raises(ValueError, match="group_size must be an integer >= 2"):
        group_advantages([1.0, 0.0], group_size=1)
    with pytest.raises(ValueError, match="finite"):
        group_advantages([1.0, float("nan")], group_size=2)
