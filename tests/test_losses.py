"""Losses against values computed by hand on tiny tensors (no model)."""
from __future__ import annotations

import math

import pytest
import torch

from searchr3.train.losses import (
    IGNORE_INDEX,
    ClippedPolicyLoss,
    CompositeLoss,
    InfoNCELoss,
    ReasoningCELoss,
    ReferenceKLLoss,
    TripletMarginLoss,
    kl_k3,
    masked_sequence_mean,
    reasoning_labels,
    token_logprobs,
)
from searchr3.train.losses import infonce, reasoning_ce, reference_kl, triplet
from searchr3.train.losses.clipped_policy import clipped_policy_loss

SQRT_HALF = 1 / math.sqrt(2)


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


# Two queries in 2-D, deliberately not unit length: the losses must normalise.
# q1 -> (1, 0), q2 -> (0, 1); p1 -> (1, 0), p2 -> (1, 1)/sqrt2; n1 -> (0, 1), n2 -> (-1, 0).
Q = [[2.0, 0.0], [0.0, 3.0]]
P = [[5.0, 0.0], [1.0, 1.0]]
N = [[[0.0, 0.5]], [[-4.0, 0.0]]]


def tensors(*rows, grad=False):
    return [torch.tensor(r, dtype=torch.float64, requires_grad=grad) for r in rows]


# ---------------------------------------------------------------- InfoNCE


def test_infonce_in_batch_only_matches_hand_computed_value():
    q, p = tensors(Q, P)
    tau = 0.5
    # row 1: pos cos 1, in-batch p2 cos 1/sqrt2; row 2: pos cos 1/sqrt2, in-batch p1 cos 0
    row1 = -1 / tau + lse(1 / tau, SQRT_HALF / tau)
    row2 = -SQRT_HALF / tau + lse(SQRT_HALF / tau, 0.0)
    value = InfoNCELoss(temperature=tau)(q, p)
    assert value.item() == pytest.approx((row1 + row2) / 2, rel=1e-12)


def test_infonce_with_hard_negatives_uses_other_rows_negatives_in_batch():
    q, p, n = tensors(Q, P, N)
    # row 1: p1 1 | own n1 0 | in-batch p2 1/sqrt2, n2 -1
    row1 = -1 + lse(1, 0, SQRT_HALF, -1)
    # row 2: p2 1/sqrt2 | own n2 0 | in-batch p1 0, n1 1
    row2 = -SQRT_HALF + lse(SQRT_HALF, 0, 0, 1)
    value = infonce.compute_loss_from_embeddings(q, p, n, temperature=1.0, in_batch_negatives=True)
    assert value.item() == pytest.approx((row1 + row2) / 2, rel=1e-12)


def test_infonce_without_in_batch_negatives_uses_only_own_hard_negatives():
    q, p, n = tensors(Q, P, N)
    row1 = -1 + lse(1, 0)
    row2 = -SQRT_HALF + lse(SQRT_HALF, 0)
    value = InfoNCELoss(temperature=1.0, in_batch_negatives=False)(q, p, n)
    assert value.item() == pytest.approx((row1 + row2) / 2, rel=1e-12)


def test_infonce_ignores_a_known_positive_in_batch_hand_computed():
    # rows 0 and 1 are relevant to the same document (p1 == p0 in content and id): row 0 must not be pushed from p1
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    ignore = infonce.known_positive_mask([{"d0", "d1"}, {"d1"}], ["d0", "d1"])
    assert ignore.tolist() == [[False, True], [False, False]]
    value = infonce.compute_loss_from_embeddings(q, p, temperature=1.0, ignore=ignore)
    # row 0: only its positive remains -> loss 0; row 1: candidates p1 (0.8, target) and p0 (0.0)
    row1 = -0.8 + math.log(math.exp(0.8) + math.exp(0.0))
    assert value.item() == pytest.approx(row1 / 2, abs=1e-6)
    unmasked = infonce.compute_loss_from_embeddings(q, p, temperature=1.0)
    assert unmasked.item() > value.item() + 0.1


def test_infonce_gradients_reach_queries_positives_and_negatives():
    q, p, n = tensors(Q, P, N, grad=True)
    InfoNCELoss(temperature=0.1)(q, p, n).backward()
    for t in (q, p, n):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_infonce_refuses_rows_without_any_negative():
    q, p = tensors(Q, P)
    with pytest.raises(ValueError, match="at least one negative"):
        InfoNCELoss(in_batch_negatives=False)(q, p)
    with pytest.raises(ValueError, match="at least one negative"):
        InfoNCELoss()(q[:1], p[:1])


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf")])
def test_infonce_rejects_bad_temperature(bad):
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=bad)


def test_infonce_rejects_mismatched_shapes():
    q, p, n = tensors(Q, P, N)
    with pytest.raises(ValueError, match="positives must have the shape"):
        InfoNCELoss()(q, p[:1])
    with pytest.raises(ValueError, match="hard_negatives must have shape"):
        InfoNCELoss()(q, p, n[:, :, :1])


# ---------------------------------------------------------------- Triplet


def test_triplet_matches_hand_computed_value():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # cos 1/sqrt2, cos 1
    n = torch.tensor([[[3.0, 0.0], [-1.0, 0.0]], [[1.0, 1.0], [0.0, -1.0]]])  # cos 1, -1 | 1/sqrt2, -1
    theta = 0.5
    hinges = [
        max(0.0, theta - SQRT_HALF + 1),
        max(0.0, theta - SQRT_HALF - 1),
        max(0.0, theta - 1 + SQRT_HALF),
        max(0.0, theta - 1 - 1),
    ]
    value = TripletMarginLoss(margin=theta)(q, p, n)
    assert value.item() == pytest.approx(sum(hinges) / 4, abs=1e-6)
    assert value.item() == pytest.approx(0.25, abs=1e-6)


def test_triplet_is_zero_once_every_negative_is_beaten_by_the_margin():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    n = torch.tensor([[[0.0, 1.0]]])  # cos 0, gap 1 > margin 0.5
    assert triplet.compute_loss_from_embeddings(q, p, n, margin=0.5).item() == 0.0


def test_triplet_gradients_reach_inputs():
    q = torch.tensor([[1.0, 0.2], [0.1, 1.0]], requires_grad=True)
    p = torch.tensor([[0.5, 0.5], [0.4, 1.0]], requires_grad=True)
    n = torch.tensor([[[1.0, 0.1]], [[0.2, 1.0]]], requires_grad=True)
    TripletMarginLoss(margin=0.3)(q, p, n).backward()
    for t in (q, p, n):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_triplet_rejects_bad_margin_and_missing_negatives():
    with pytest.raises(ValueError, match="margin"):
        TripletMarginLoss(margin=-0.1)
    q = torch.ones(2, 3)
    with pytest.raises(ValueError, match="k>=1"):
        TripletMarginLoss()(q, q, torch.ones(2, 0, 3))
    with pytest.raises(ValueError, match="got None"):
        TripletMarginLoss()(q, q, None)


# ---------------------------------------------------------------- Reasoning CE

# V = 2. Position 0 predicts labels[1], position 1 predicts labels[2]; position 2 predicts nothing.
LOGITS = [[[0.0, math.log(3.0)], [0.0, 0.0], [7.0, -7.0]]]  # softmax: (1/4, 3/4), (1/2, 1/2)


def test_reasoning_labels_keep_reasoning_tokens_aligned_with_input_ids():
    ids = torch.tensor([[5, 6, 7, 8], [1, 2, 3, 0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    assert reasoning_labels(ids, mask).tolist() == [[-100, -100, 7, 8], [-100, 2, 3, -100]]
    with pytest.raises(ValueError, match="shape of input_ids"):
        reasoning_labels(ids, mask[:, :3])


def test_reasoning_ce_matches_hand_computed_value_with_shift_inside():
    logits = torch.tensor(LOGITS)
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    expected = (-math.log(3 / 4) - math.log(1 / 2)) / 2
    assert ReasoningCELoss()(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_reasoning_ce_ignores_logits_that_predict_masked_tokens():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 0]])  # only position 1 -> token 0 counts
    logits = torch.tensor(LOGITS)
    before = reasoning_ce.compute_loss_from_logits(logits, labels).item()
    changed = logits.clone()
    changed[0, 0] = torch.tensor([9.0, -3.0])  # predicts a masked label
    changed[0, 2] = torch.tensor([-5.0, 4.0])  # last position predicts nothing
    after = reasoning_ce.compute_loss_from_logits(changed, labels).item()
    assert before == pytest.approx(math.log(2), rel=1e-6)
    assert after == before
    changed[0, 1] = torch.tensor([2.0, 0.0])  # the supervised position does count
    assert reasoning_ce.compute_loss_from_logits(changed, labels).item() != pytest.approx(before)


def test_reasoning_ce_gradient_only_on_supervised_positions():
    logits = torch.tensor(LOGITS, requires_grad=True)
    reasoning_ce.compute_loss_from_logits(logits, torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 0]])).backward()
    assert logits.grad[0, 1].abs().sum() > 0
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 2].abs().sum() == 0


def test_reasoning_ce_without_supervised_tokens_is_zero_not_nan():
    logits = torch.tensor(LOGITS, requires_grad=True)
    value = reasoning_ce.compute_loss_from_logits(logits, torch.full((1, 3), IGNORE_INDEX))
    assert value.item() == 0.0
    value.backward()  # still part of the graph


def test_reasoning_ce_rejects_out_of_vocabulary_labels_and_bad_shapes():
    logits = torch.tensor(LOGITS)
    with pytest.raises(ValueError, match="outside"):
        ReasoningCELoss()(logits, torch.tensor([[IGNORE_INDEX, 2, 0]]))
    with pytest.raises(ValueError, match="labels must have shape"):
        ReasoningCELoss()(logits, torch.tensor([[1, 0]]))


def test_token_logprobs_follow_the_same_shift():
    logp, mask = token_logprobs(torch.tensor(LOGITS), torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX]]))
    assert mask.tolist() == [[True, False]]
    assert logp[0, 0].item() == pytest.approx(math.log(3 / 4), rel=1e-6)
    assert logp[0, 1].item() == 0.0


# ---------------------------------------------------------------- Reference KL


def test_reference_kl_matches_hand_computed_value():
    policy = torch.tensor([[[5.0, 5.0], [0.0, 0.0], [1.0, 2.0]]])  # position 1 -> p = (1/2, 1/2)
    reference = torch.tensor([[[0.0, 9.0], [0.0, math.log(3.0)], [3.0, 0.0]]])  # r = (1/4, 3/4)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    value = ReferenceKLLoss()(policy, reference, labels)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert value.item() > 0


def test_reference_kl_is_zero_for_equal_logits_and_positive_otherwise():
    torch.manual_seed(0)
    policy = torch.randn(2, 4, 7)
    labels = torch.full((2, 4), IGNORE_INDEX)
    labels[:, 2:] = 3
    assert reference_kl.compute_loss_from_logits(policy, policy.clone(), labels).item() == 0.0
    assert reference_kl.compute_loss_from_logits(policy, torch.randn(2, 4, 7), labels).item() > 0


def test_reference_kl_ignores_masked_positions_and_does_not_train_the_reference():
    torch.manual_seed(1)
    policy = torch.randn(1, 4, 5, requires_grad=True)
    reference = torch.randn(1, 4, 5, requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, 4]])  # positions 1 and 2 count
    before = reference_kl.compute_loss_from_logits(policy, reference, labels)
    changed = reference.detach().clone()
    changed[0, 0] += 10.0
    changed[0, 3] -= 10.0
    assert reference_kl.compute_loss_from_logits(policy, changed, labels).item() == pytest.approx(before.item())
    before.backward()
    assert reference.grad is None
    assert policy.grad[0, 1:3].abs().sum() > 0 and policy.grad[0, [0, 3]].abs().sum() == 0


def test_kl_k3_matches_formula_and_is_zero_when_equal():
    logp = torch.tensor([math.log(0.5), math.log(0.2)])
    ref_logp = torch.tensor([math.log(0.25), math.log(0.2)])
    value = kl_k3(logp, ref_logp)
    # first token: ref/p = 1/2 -> 1/2 - log(1/2) - 1
    assert value[0].item() == pytest.approx(0.5 + math.log(2) - 1, rel=1e-6)
    assert value[1].item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        kl_k3(logp, ref_logp[:1])


# ---------------------------------------------------------------- Composite


def sft_batch():
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 6, requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1], [IGNORE_INDEX, 2, 5, IGNORE_INDEX]])
    reference = torch.randn(2, 4, 6)
    q, p, n = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 2, 5)
    return dict(logits=logits, labels=labels, reference_logits=reference, queries=q, positives=p, hard_negatives=n)


def test_composite_total_is_the_weighted_sum_of_its_components():
    batch = sft_batch()
    loss = CompositeLoss(lambda_ce=1.0, lambda_kl=0.5, lambda_nce=2.0, lambda_tri=0.25, temperature=0.1, margin=0.2)
    out = loss(**batch)
    ce = reasoning_ce.compute_loss_from_logits(batch["logits"], batch["labels"]).item()
    kl = reference_kl.compute_loss_from_logits(batch["logits"], batch["reference_logits"], batch["labels"]).item()
    triples = (batch["queries"], batch["positives"], batch["hard_negatives"])
    nce = infonce.compute_loss_from_embeddings(*triples, temperature=0.1).item()
    tri = triplet.compute_loss_from_embeddings(*triples, margin=0.2).item()
    assert out.components == pytest.approx({"ce": ce, "kl": kl, "infonce": nce, "triplet": tri})
    assert all(isinstance(v, float) for v in out.components.values())
    assert out.total.item() == pytest.approx(ce + 0.5 * kl + 2.0 * nce + 0.25 * tri, rel=1e-6)
    assert out.skipped == {}
    out.total.backward()
    assert batch["logits"].grad.abs().sum() > 0


def test_composite_reports_zero_weight_and_missing_inputs_as_absent():
    batch = sft_batch()
    del batch["reference_logits"]
    out = CompositeLoss(lambda_ce=1.0, lambda_kl=0.1, lambda_nce=1.0, lambda_tri=0.0)(**batch)
    assert set(out.components) == {"ce", "infonce"}
    assert out.skipped == {"kl": "missing reference_logits", "triplet": "weight 0"}
    assert out.total.item() == pytest.approx(out.components["ce"] + out.components["infonce"], rel=1e-6)


def test_composite_skips_terms_without_supervised_tokens_or_negatives():
    batch = sft_batch()
    batch["labels"] = torch.full((2, 4), IGNORE_INDEX)
    del batch["hard_negatives"]
    out = CompositeLoss(lambda_ce=1.0, lambda_kl=1.0, lambda_nce=1.0, lambda_tri=1.0)(**batch)
    assert set(out.components) == {"infonce"}
    assert out.skipped["ce"].startswith("no supervised tokens")
    assert out.skipped["triplet"] == "missing hard_negatives"


def test_composite_refuses_a_batch_with_nothing_to_compute_and_bad_weights():
    with pytest.raises(ValueError, match="no loss term could be computed"):
        CompositeLoss(lambda_ce=1.0)(queries=torch.ones(2, 3), positives=torch.ones(2, 3))
    with pytest.raises(ValueError, match="all loss weights are 0"):
        CompositeLoss(lambda_ce=0.0)
    with pytest.raises(ValueError, match="lambda_kl"):
        CompositeLoss(lambda_kl=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        CompositeLoss(lambda_nce=1.0, temperature=0.0)


# ---------------------------------------------------------------- clipped policy loss (GRPO)


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


def test_clipped_policy_loss_adds_beta_times_the_k3_kl_by_hand():
    logp, old_logp, advantages, mask = two_token_case(1.0)
    ref_logp = torch.log(torch.tensor([[0.5, 0.5]]))
    out = ClippedPolicyLoss(clip_eps=0.1, beta=0.5)(logp, old_logp, ref_logp, advantages, mask)
    # k3 per token: r - log r - 1 with r = ref / p: 5/6 + log(6/5) - 1 = 0.0156549, 5/4 - log(5/4) - 1 = 0.0268564
    kl = (5 / 6 + math.log(6 / 5) - 1 + 5 / 4 - math.log(5 / 4) - 1) / 2
    assert kl == pytest.approx(0.0212557, abs=1e-7)
    assert out.policy.item() == pytest.approx(-(1.1 + 0.8) / 2, rel=1e-6)
    assert out.kl.item() == pytest.approx(kl, rel=1e-5)
    assert out.total.item() == pytest.approx(-0.95 + 0.5 * 0.0212557, rel=1e-5) and out.clip_fraction == 0.5
    out.total.backward()
    # d/dlogp of 0.5 · k3 / 2 = 0.25 · (1 - r): token 1 (clipped surrogate) 0.25 · (1 - 5/6); token 2: -0.4 + 0.25 · (1 - 5/4)
    assert logp.grad.tolist()[0] == pytest.approx([0.25 * (1 - 5 / 6), -0.4 + 0.25 * (1 - 5 / 4)], abs=1e-6)


def test_clipped_policy_loss_checks_its_arguments():
    with pytest.raises(ValueError, match="clip_eps"):
        ClippedPolicyLoss(clip_eps=1.0)
    with pytest.raises(ValueError, match="beta"):
        ClippedPolicyLoss(beta=-0.1)
    logp, old_logp, advantages, mask = two_token_case(1.0)
    with pytest.raises(ValueError, match="ref_logp"):
        ClippedPolicyLoss()(logp, old_logp, old_logp[:, :1], advantages, mask)
