"""KL divergence from the policy to a frozen reference model, per token.

Positions follow the same shift as :mod:`searchr3.train.losses.reasoning_ce`: the logits at
position ``t`` are compared where ``labels[b, t + 1] != -100`` (the tokens the CE loss trains).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from searchr3.train.losses.reasoning_ce import IGNORE_INDEX, check_logits_and_labels


def compute_loss_from_logits(policy_logits: Tensor, reference_logits: Tensor, labels: Tensor) -> Tensor:
    """Mean over supervised tokens of ``KL(policy ‖ reference)`` of the next-token distributions.

    Per position: ``Σ_v p(v) (log p(v) - log r(v))`` with ``p = softmax(policy_logits)`` and
    ``r = softmax(reference_logits)``, in float32. The reference is detached (no gradient
    reaches it). If no token is supervised the result is 0.0 attached to the graph, never NaN.
    """
    check_logits_and_labels(policy_logits, labels)
    if reference_logits.shape != policy_logits.shape:
        raise ValueError(
            f"reference_logits must have the shape of policy_logits {tuple(policy_logits.shape)}, "
            f"got {tuple(reference_logits.shape)}"
        )
    mask = labels[:, 1:] != IGNORE_INDEX
    policy = policy_logits[:, :-1, :][mask].float()  # (N, V), N supervised positions
    if policy.shape[0] == 0:
        return policy_logits.sum() * 0.0
    reference = reference_logits[:, :-1, :][mask].detach().float()
    policy_logp = torch.log_softmax(policy, dim=-1)
    reference_logp = torch.log_softmax(reference, dim=-1)
    per_token = (policy_logp.exp() * (policy_logp - reference_logp)).sum(-1)
    return per_token.mean()


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of ``KL(policy ‖ reference)`` from sampled tokens' log-probs.

    ``exp(ref_logp - logp) - (ref_logp - logp) - 1``, elementwise (same shape as the inputs).
    Non-negative, zero where both log-probs agree, unbiased when tokens are sampled from the
    policy; this is the KL penalty of GRPO (DeepSeekMath). Mask and average it with
    :func:`searchr3.train.losses.clipped_policy.masked_sequence_mean`
    (:class:`~searchr3.train.losses.clipped_policy.ClippedPolicyLoss` does).
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} must have the same shape")
    log_ratio = ref_logp.detach() - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


class ReferenceKLLoss(nn.Module):
    """Keep the trained model's next-token distribution close to a frozen reference model.

    On every supervised token (the same ones the reasoning CE trains) it measures the exact
    KL divergence ``KL(policy ‖ reference)`` over the whole vocabulary and averages it. This
    stops SFT on a small trace set from drifting far from the base model's language ability.

    Args:
        None: the loss has no hyperparameters; its weight (λ_kl) lives in the composite.

    Requirements:
        1. Both models saw the same input ids; the reference runs under ``torch.no_grad()``
           (its logits are detached here anyway).
        2. ``labels`` as for the reasoning CE: aligned with the inputs, -100 where not trained.

    Inputs:
        +------------------+-------------+-------------------------------------------+
        | name             | shape       | meaning                                   |
        +==================+=============+===========================================+
        | policy_logits    | (B, T, V)   | logits of the model being trained         |
        | reference_logits | (B, T, V)   | logits of the frozen reference            |
        | labels           | (B, T)      | token ids aligned with inputs, or -100    |
        +------------------+-------------+-------------------------------------------+
        Returns a scalar tensor (mean over supervised tokens), >= 0.

    Relations:
        - :class:`~searchr3.train.losses.reasoning_ce.ReasoningCELoss` picks the same tokens.
        - :func:`kl_k3` is the sampled-token estimate of the same quantity used in GRPO,
          where only the chosen tokens' log-probs are at hand.
        - :class:`~searchr3.train.losses.composite.CompositeLoss` adds it as ``λ_kl · KL``.

    Example:
        >>> import torch
        >>> logits = torch.randn(2, 5, 11)
        >>> labels = torch.full((2, 5), -100); labels[:, 2:] = 3
        >>> float(ReferenceKLLoss()(logits, logits.clone(), labels))
        0.0
    """

    def forward(self, policy_logits: Tensor, reference_logits: Tensor, labels: Tensor) -> Tensor:
        return compute_loss_from_logits(policy_logits, reference_logits, labels)
