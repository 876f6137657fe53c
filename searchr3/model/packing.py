"""Padding-free encoding: texts packed end to end into one row, attention kept inside each text.

A batch of token-id sequences becomes one row of ``sum(len)`` tokens: position ids restart at 0 for
every sequence, and attention runs per sequence (causal SDPA over that sequence's slice), so a text
gives the same hidden states packed as alone and no FLOP is spent on padding. Batches are cut by a
token budget (``token_budget_batches``), so every forward pass does about the same work whatever the
length mix.

Packed attention is a function registered with transformers' ``AttentionInterface`` under
``PACKED_ATTENTION``; ``packed_attention(model)`` switches a model to it for the duration of a block
and back afterwards. Models whose attention does not go through that interface (``supports_packing``
is False) are encoded with padded batches instead. Gradient checkpointing recomputes a layer during the backward
pass, after the block has switched back: ``checkpoint_context_fn`` makes the recomputation use the attention the
forward used (pass it as the checkpoint's ``context_fn``).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

PACKED_ATTENTION = "searchr3_packed"


def token_budget_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped longest first so that each group's total length stays within ``max_tokens``.

    A sequence longer than the budget gets a group of its own. Ties keep input order, so the result
    is a pure function of ``lengths`` and ``max_tokens``.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, not {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        if current and used + lengths[i] > max_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    if current:
        batches.append(current)
    return batches


def pack(seqs: list[list[int]], device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids (1, P), position_ids (1, P), cu_seqlens (n + 1,))`` for sequences laid end to end."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("pack needs at least one sequence and no empty sequence")
    lengths = torch.tensor([len(s) for s in seqs])
    cu = torch.zeros(len(seqs) + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    ids = torch.tensor([t for s in seqs for t in s], dtype=torch.long).unsqueeze(0)
    starts = torch.repeat_interleave(cu[:-1].long(), lengths)
    positions = (torch.arange(int(cu[-1])) - starts).unsqueeze(0)
    return ids.to(device), positions.to(device), cu.to(device)


def last_token_in_segments(ids: torch.Tensor, cu_seqlens: torch.Tensor, token_id: int) -> torch.Tensor:
    """Flat index of the last ``token_id`` inside each packed segment; raises if a segment lacks it."""
    n = cu_seqlens.numel() - 1
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    segment = torch.repeat_interleave(torch.arange(n, device=ids.device), lengths)
    where = torch.where(ids == token_id, torch.arange(ids.numel(), device=ids.device), -1)
    last = torch.full((n,), -1, dtype=torch.long, device=ids.device).scatter_reduce(0, segment, where, "amax")
    if bool((last < 0).any()):
        from searchr3.model.config import EMBED_TOKEN

        raise ValueError(f"rows {(last < 0).nonzero().flatten().tolist()} contain no {EMBED_TOKEN}")
    return last


def _packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                 **kwargs):
    """Causal SDPA per packed segment. query (1, H, P, d), key/value (1, Hkv, P, d) -> (1, P, H, d).

    ``searchr3_prefix`` (optional, one entry per segment): the ``(start, end)`` ranges of the segments this one
    continues, in order (their tokens come before its own; segments that several sequences share), or None.
    A segment attends to all of them and causally to itself."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1:
        raise RuntimeError(f"{PACKED_ATTENTION} attention needs one packed row and cu_seq_lens_q")
    prefixes = kwargs.get("searchr3_prefix")
    gqa = key.shape[1] != query.shape[1]
    out = torch.empty(query.shape[0], query.shape[2], query.shape[1], query.shape[3], dtype=query.dtype,
                      device=query.device)
    bounds = cu.tolist()
    for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        ranges = prefixes[n] if prefixes is not None else None
        if not ranges:
            o = torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling, enable_gqa=gqa)
        else:  # all of the prefix segments, then causal inside the segment (bottom-right aligned)
            width = sum(pb - pa for pa, pb in ranges)
            k = torch.cat([key[:, :, pa:pb] for pa, pb in ranges] + [key[:, :, a:b]], dim=2)
            v = torch.cat([value[:, :, pa:pb] for pa, pb in ranges] + [value[:, :, a:b]], dim=2)
            allowed = torch.ones(b - a, width + b - a, dtype=torch.bool, device=query.device).tril(diagonal=width)
            o = torch.nn.functional.scaled_dot_product_attention(query[:, :, a:b], k, v, attn_mask=allowed,
                                                                 scale=scaling, enable_gqa=gqa)
        out[:, a:b] = o.transpose(1, 2)
    return out, None


_registered = False


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(PACKED_ATTENTION, _packed_sdpa)
        _registered = True


def _config(model):
    return getattr(model, "config", None)


def supports_packing(model) -> bool:
    """True for models whose attention goes through transformers' AttentionInterface (Llama, Qwen2, ...)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper: its model
    return bool(getattr(lm, "_supports_attention_backend", False)) and _config(model) is not None


@contextmanager
def packed_attention(model):
    """Within the block, ``model`` attends per packed segment (pass ``cu_seq_lens_q``/``cu_seq_lens_k``)."""
    _register()
    with _attention_as(_config(model), PACKED_ATTENTION):
        yield


@contextmanager
def _attention_as(config, implementation: str):
    before = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = before


def checkpoint_context_fn(model):
    """A ``context_fn`` for ``torch.utils.checkpoint`` (non-reentrant): the forward runs as it is, and the
    recomputation in the backward pass runs with the attention implementation the forward had (packed inside a
    ``packed_attention`` block, else the model's own), so both see the same graph."""
    config = _config(model)

    def context_fn():
        return nullcontext(), _attention_as(config, config._attn_implementation)

    return context_fn
