"""Padding-free encoding: texts packed end to end into one row, attention kept inside each text.

A batch of token-id sequences becomes one row of ``sum(len)`` tokens: position ids restart at 0 for
every sequence, and attention stays inside each sequence, so a text gives the same hidden states packed
as alone and the linear layers (most of the FLOPs) see no padding. Attention runs over the segments'
``SegmentLayout`` (built once per forward pass, so the layers run without a device sync): one SDPA call per
layer with the segments as a padded batch on an accelerator, one per segment on a CPU, where that is
faster (``_packed_sdpa``). ``token_budget_batches`` puts similar lengths together, so that padding stays
small, and cuts batches by a token budget, so every forward pass does about the same work whatever the
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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SegmentLayout:
    """Where each packed segment's queries and keys sit, for attention inside segments.

    ``spans``: each segment's ``(start, end)``, and ``keys``: how many keys it has (its prefix segments' tokens,
    then its own), host ints. The same as a batch padded to the longest: ``q_index`` (n, Qmax) and ``k_index``
    (n, Kmax) are packed positions, ``mask`` (n, 1, Qmax, Kmax) what each query may see (causal inside the
    segment, all of its prefix; a padding query sees one key, so no row is empty), or None when no segment has a
    prefix (then plain causal attention is exact: the padding comes after every real token); ``back`` (P,) the
    padded row of each packed position. Built once per forward pass (``segment_layout``), so the layers run
    without a device sync."""

    spans: tuple[tuple[int, int], ...]
    keys: tuple[int, ...]
    q_index: torch.Tensor
    k_index: torch.Tensor
    mask: torch.Tensor | None
    back: torch.Tensor


def segment_layout(cu_seqlens: torch.Tensor | list[int], prefix=None, device=None) -> SegmentLayout:
    """The ``SegmentLayout`` of segments bounded by ``cu_seqlens`` (n + 1 offsets), with ``prefix`` as for
    ``_packed_sdpa``'s ``searchr3_prefix`` (per segment, the ranges it continues, or None)."""
    bounds = cu_seqlens.tolist() if isinstance(cu_seqlens, torch.Tensor) else list(cu_seqlens)
    spans = tuple(zip(bounds[:-1], bounds[1:]))
    keys = []
    for n, (a, b) in enumerate(spans):
        ranges = (prefix[n] if prefix is not None else None) or []
        keys.append([p for pa, pb in ranges for p in range(pa, pb)] + list(range(a, b)))
    q_max = max(b - a for a, b in spans)
    k_max = max(len(k) for k in keys)
    causal = all(len(k) == b - a for (a, b), k in zip(spans, keys))
    q_index = torch.zeros(len(spans), q_max, dtype=torch.long)
    k_index = torch.zeros(len(spans), k_max, dtype=torch.long)
    mask = None if causal else torch.zeros(len(spans), 1, q_max, k_max, dtype=torch.bool)
    back = torch.empty(bounds[-1], dtype=torch.long)
    for n, ((a, b), k) in enumerate(zip(spans, keys)):
        q_index[n] = a
        q_index[n, : b - a] = torch.arange(a, b)
        k_index[n] = a
        k_index[n, : len(k)] = torch.tensor(k)
        if mask is not None:
            mask[n, 0, : b - a, : len(k)] = torch.ones(b - a, len(k), dtype=torch.bool).tril(diagonal=len(k) - (b - a))
            mask[n, 0, b - a:, 0] = True
        back[a:b] = torch.arange(n * q_max, n * q_max + b - a)
    return SegmentLayout(spans, tuple(len(k) for k in keys), q_index.to(device), k_index.to(device),
                         None if mask is None else mask.to(device), back.to(device))


def attend_per_segment(query, key, value, layout: SegmentLayout, scaling: float | None = None) -> torch.Tensor:
    """One SDPA call per segment. query (1, H, P, d), key/value (1, Hkv, P, d) -> (1, P, H, d)."""
    gqa = key.shape[1] != query.shape[1]
    out = torch.empty(1, query.shape[2], query.shape[1], query.shape[3], dtype=query.dtype, device=query.device)
    for n, ((a, b), width) in enumerate(zip(layout.spans, layout.keys)):
        if width == b - a:  # no prefix: plain causal attention over its own slice (SDPA's causal kernel)
            o = torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling, enable_gqa=gqa)
        else:
            at = layout.k_index[n, :width]
            o = torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, at], value[:, :, at], attn_mask=layout.mask[n, 0, : b - a, :width],
                scale=scaling, enable_gqa=gqa)
        out[:, a:b] = o.transpose(1, 2)
    return out


def attend_in_one_call(query, key, value, layout: SegmentLayout, scaling: float | None = None) -> torch.Tensor:
    """Every segment in one SDPA call, as a padded batch. query (1, H, P, d), key/value (1, Hkv, P, d) ->
    (1, P, H, d)."""
    heads, d = query.shape[1], query.shape[3]
    if key.shape[1] != heads:  # grouped-query attention: each key/value head serves heads / Hkv query heads
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    n, q_max = layout.q_index.shape

    def gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # (1, H, P, d) -> (n, H, len, d)
        return x[0][:, index.flatten()].view(heads, n, index.shape[1], d).transpose(0, 1)

    o = torch.nn.functional.scaled_dot_product_attention(
        gather(query, layout.q_index), gather(key, layout.k_index), gather(value, layout.k_index),
        attn_mask=layout.mask, is_causal=layout.mask is None, scale=scaling)
    return o.transpose(1, 2).reshape(n * q_max, heads, d)[layout.back].unsqueeze(0)


def attention_form(device: torch.device | str):
    """The form of attention inside packed segments used on ``device``: one call per segment on a CPU, where it
    measured faster (``_packed_sdpa``), one call for every segment on an accelerator."""
    return attend_per_segment if torch.device(device).type == "cpu" else attend_in_one_call


def _packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                 **kwargs):
    """Attention inside each packed segment. query (1, H, P, d), key/value (1, Hkv, P, d) -> (1, P, H, d).

    ``searchr3_layout``: the segments' ``SegmentLayout`` (built by the caller once per forward pass); without it,
    it is built here from ``cu_seq_lens_q`` and ``searchr3_prefix`` (optional, one entry per segment: the
    ``(start, end)`` ranges of the segments this one continues, in order; segments that several sequences share).
    A segment attends to all of its prefix and causally to itself.

    On an accelerator one SDPA call for all segments: a Python loop of small calls per layer leaves it idle. On a
    CPU one call per segment, which measured faster there (SDPA's causal CPU kernel skips the masked half; the
    batched form pays for its gathers and padding): whole passes of the real architecture, 2 cores, fp32, one call
    ran at 0.90-0.98x the loop's speed encoding and 0.84-0.89x forward + backward with a shared prefix
    (``benchmarks/packed_attention.py``, which measures both on the machine it runs on)."""
    layout = kwargs.get("searchr3_layout")
    if layout is None:
        cu = kwargs.get("cu_seq_lens_q")
        if cu is None:
            raise RuntimeError(f"{PACKED_ATTENTION} attention needs cu_seq_lens_q or searchr3_layout")
        layout = segment_layout(cu, kwargs.get("searchr3_prefix"), query.device)
    if query.shape[0] != 1:
        raise RuntimeError(f"{PACKED_ATTENTION} attention needs one packed row")
    return attention_form(query.device)(query, key, value, layout, scaling), None


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
