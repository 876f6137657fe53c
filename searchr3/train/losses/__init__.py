"""Training losses, one per module, each a documented ``nn.Module`` over a pure function.

- :mod:`.infonce` — ``InfoNCELoss``: cosine/τ contrastive cross-entropy (in-batch + hard negatives).
- :mod:`.triplet` — ``TripletMarginLoss``: hinge ``max(0, θ - cos(q,p) + cos(q,n))``.
- :mod:`.reasoning_ce` — ``ReasoningCELoss``: next-token CE on reasoning tokens; ``reasoning_labels``.
- :mod:`.reference_kl` — ``ReferenceKLLoss``: token KL(policy ‖ frozen reference); ``kl_k3`` for GRPO.
- :mod:`.composite` — ``CompositeLoss``: the weighted SFT sum with per-term logging.
- :mod:`.clipped_policy` — ``ClippedPolicyLoss``: GRPO's clipped surrogate + β·k3 KL on generated tokens.

The maths of each is its module's ``compute_loss_from_embeddings`` / ``compute_loss_from_logits`` /
``compute_loss_from_logprobs``.
"""
from searchr3.train.losses.clipped_policy import ClippedPolicyLoss, ClippedPolicyOutput, masked_sequence_mean
from searchr3.train.losses.composite import CompositeLoss, CompositeOutput
from searchr3.train.losses.infonce import InfoNCELoss
from searchr3.train.losses.reasoning_ce import (
    IGNORE_INDEX,
    ReasoningCELoss,
    reasoning_labels,
    shift_for_next_token,
    token_logprobs,
)
from searchr3.train.losses.reference_kl import ReferenceKLLoss, kl_k3
from searchr3.train.losses.triplet import TripletMarginLoss

__all__ = [
    "IGNORE_INDEX",
    "ClippedPolicyLoss",
    "ClippedPolicyOutput",
    "CompositeLoss",
    "CompositeOutput",
    "InfoNCELoss",
    "ReasoningCELoss",
    "ReferenceKLLoss",
    "TripletMarginLoss",
    "kl_k3",
    "masked_sequence_mean",
    "reasoning_labels",
    "shift_for_next_token",
    "token_logprobs",
]
