"""GRPO rewards, group advantages and the clipped policy loss, against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from searchr3.train.advantages import clipped_policy_loss, group_advantages, masked_sequence_mean
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


# ---------------------------------------------------------------- clipped policy loss


def two_token_case(advantage: float):
    old_logp = torch.log(torch.tensor([[0.5, 0.5]]))
    logp = torch.log(torch.tensor([[0.6, 0.4]])).requires_grad_()  # ratios 1.2 and 0.8
    return logp, old_logp, torch.tensor([advantage]), torch.tensor([[1, 1]])


def test_clipped_loss_positive_advantage_by_hand():
    logp, old_logp, advantages, mask = two_token_case(1.0)
    out = clipped_policy_loss(logp, old_logp, advantages, mask, clip_eps=0.1)
    # token 1: min(1.2, 1.1) = 1.1 (clipped); token 2: min(0.8, 0.9) = 0.8
    assert out.loss.item() == pytest.approx(-(1.1 + 0.8) / 2, rel=1e-6)
    assert out.clip_fraction == 0.5
    out.loss.backward()
    # clipped token has no gradient; d(-ratio/2)/dlogp = -ratio/2 = -0.4 on the other
    assert logp.grad.tolist()[0] == pytest.approx([0.0, -0.4], abs=1e-6)


def test_clipped_loss_negative_advantage_by_hand():
    logp, old_logp, advantages, mask = two_token_case(-1.0)
    out = clipped_policy_loss(logp, old_logp, advantages, mask, clip_eps=0.1)
    # token 1: min(-1.2, -1.1) = -1.2; token 2: min(-0.8, -0.9) = -0.9 (clipped)
    assert out.loss.item() == pytest.approx((1.2 + 0.9) / 2, rel=1e-6)
    assert out.clip_fraction == 0.5


def test_clipped_loss_averages_per_sequence_then_over_sequences_and_ignores_masked_tokens():
    logp = torch.tensor([[-1.0, 5.0, 5.0, 5.0], [-2.0, -2.0, -2.0, 9.0]])
    old_logp = torch.tensor([[-1.0, 0.0, 0.0, 0.0], [-2.0, -2.0, -2.0, 0.0]])  # ratio 1 where masked in
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    out = clipped_policy_loss(logp, old_logp, torch.tensor([1.0, 2.0]), mask, clip_eps=0.2)
    # sequence means -1 and -2 -> -1.5 (a token mean would give -(1 + 6) / 4 = -1.75)
    assert out.loss.item() == pytest.approx(-1.5)
    assert out.clip_fraction == 0.0


def test_masked_sequence_mean_counts_an_empty_sequence_as_zero():
    values = torch.tensor([[2.0, 4.0], [7.0, 7.0]])
    mask = torch.tensor([[True, True], [False, False]])
    assert masked_sequence_mean(values, mask).item() == pytest.approx(1.5)


def test_clipped_loss_rejects_bad_arguments():
    logp, old_logp, advantages, mask = two_token_case(1.0)
    with pytest.raises(ValueError, match="clip_eps"):
        clipped_policy_loss(logp, old_logp, advantages, mask, clip_eps=0.0)
    with pytest.raises(ValueError, match="must match"):
        clipped_policy_loss(logp, old_logp[:, :1], advantages, mask)
    with pytest.raises(ValueError, match="advantages must have shape"):
        clipped_policy_loss(logp, old_logp, torch.tensor([1.0, 2.0, 3.0]), mask)
