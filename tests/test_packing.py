"""Padding-free encoding: the token-budget batcher, packing, and packed == padded == alone."""
import numpy as np
import pytest
import torch

from searchr3.model.embedder import Embedder
from searchr3.model.packing import (PACKED_ATTENTION, last_token_in_segments, pack, packed_attention,
                                    token_budget_batches)

DOCS = [
    "def mul(a, b): return a * b",
    "A slow green turtle walks past the sleeping cat, step by step, until the cat opens one eye.",
    "y",
    "Retrieval systems score passages against a question.",
    "import sys",
    "Return the product of two numbers.",
    "The cat sleeps.",
]


@pytest.fixture(scope="module")
def embedder(tiny_model_dir):
    return Embedder.from_pretrained(tiny_model_dir, precision="fp32")


def test_budget_batches_longest_first_within_budget():
    lengths = [5, 30, 12, 12, 7, 40, 1]
    batches = token_budget_batches(lengths, max_tokens=40)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every index exactly once
    assert [i for b in batches for i in b] == [5, 1, 2, 3, 4, 0, 6]  # longest first, ties in input order
    assert batches == [[5], [1], [2, 3, 4, 0, 6]]
    assert all(sum(lengths[i] for i in b) <= 40 for b in batches)


def test_budget_batches_oversized_sequence_gets_its_own_batch():
    assert token_budget_batches([100, 3, 4], max_tokens=10) == [[0], [2, 1]]
    with pytest.raises(ValueError, match="max_tokens"):
        token_budget_batches([1], max_tokens=0)


def test_pack_restarts_positions_per_sequence():
    ids, pos, cu = pack([[7, 8, 9], [4], [5, 6]])
    assert ids.tolist() == [[7, 8, 9, 4, 5, 6]]
    assert pos.tolist() == [[0, 1, 2, 0, 0, 1]]
    assert cu.tolist() == [0, 3, 4, 6]
    with pytest.raises(ValueError):
        pack([[1], []])


def test_last_token_per_segment():
    cu = torch.tensor([0, 3, 5, 7])
    assert last_token_in_segments(torch.tensor([9, 1, 9, 9, 3, 1, 9]), cu, 9).tolist() == [2, 3, 6]
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        last_token_in_segments(torch.tensor([9, 1, 9, 2, 3, 9, 9]), cu, 9)


def test_packed_equals_padded_and_alone(embedder):
    assert embedder.packing
    seqs = embedder.tokenize_documents(DOCS)
    packed = embedder.forward_packed(seqs)
    padded = embedder.forward_embeddings(seqs)
    alone = np.stack([embedder.forward_embeddings([s])[0] for s in seqs])
    np.testing.assert_allclose(packed, alone, atol=1e-5)
    np.testing.assert_allclose(padded, alone, atol=1e-5)


def test_encode_keeps_input_order_across_budget_batches(embedder):
    seqs = embedder.tokenize_documents(DOCS)
    before, embedder.config.batch_tokens = embedder.config.batch_tokens, max(len(s) for s in seqs) + 1
    try:  # several packs, some with one text only
        assert len(token_budget_batches([len(s) for s in seqs], embedder.config.batch_tokens)) > 2
        got = embedder.encode_documents(DOCS)
        reversed_ = embedder.encode_documents(DOCS[::-1])[::-1]
    finally:
        embedder.config.batch_tokens = before
    alone = np.stack([embedder.forward_embeddings([s])[0] for s in seqs])
    np.testing.assert_allclose(got, alone, atol=1e-5)
    np.testing.assert_allclose(reversed_, alone, atol=1e-5)


def test_packed_attention_switch_is_restored(embedder):
    before = embedder.model.config._attn_implementation
    with pytest.raises(RuntimeError):
        with packed_attention(embedder.model):
            assert embedder.model.config._attn_implementation == PACKED_ATTENTION
            raise RuntimeError("inside")
    assert embedder.model.config._attn_implementation == before
    # a normal padded forward still works afterwards (generation relies on it)
    assert embedder.forward_embeddings(embedder.tokenize_documents(DOCS[:2])).shape[0] == 2


def test_shared_prefix_pack_gives_each_sequence_its_own_hidden_states(tiny_model_dir):
    """GRPO's groups: the template's system prompt and each distinct prompt are packed once; every token's hidden
    state is the one the whole sequence gives alone (a segment attends to the ones before it, positions continue)."""
    from searchr3.train import common

    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    a, b = e.tokenize_reasoning_prompts(["alpha beta", "search engines rank documents"])
    seqs = [a + [5, 6, 7], b + [8], a + [9, 10], a, b + [11, 12, 13, 14]]
    system = e.template_prefix_length(a)
    assert system > 0 and a[:system] == b[:system]  # the reasoning template's system prompt
    splits = [[system, len(s)] for s in (a, b, a, a, b)]
    packed = common.pack_with_prefixes(seqs, splits)
    where = packed.where
    # the system prompt once, each query's prompt once, then the continuations; the bare prompt is its own row
    assert packed.ids.shape[1] == system + (len(a) - system) + (len(b) - system) + 3 + 1 + 2 + (len(a) - system) + 4
    with torch.no_grad():
        hidden = common.packed_hidden(e.model, packed)
        for seq, at in zip(seqs, where):
            alone = common.packed_hidden(e.model, common.pack_sequences([seq]))
            torch.testing.assert_close(hidden[at], alone, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_recomputes_with_the_packed_attention(tiny_model_dir):
    """A checkpointed layer is recomputed in the backward pass, after the packed-attention block has ended: with
    ``checkpoint_context_fn`` it attends per segment again (same gradients as without checkpointing; without it the
    recomputation runs the model's own attention and torch refuses the mismatch)."""
    from searchr3.model.packing import checkpoint_context_fn
    from searchr3.train.common import pack_sequences, packed_hidden

    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = Embedder.from_pretrained(tiny_model_dir, precision="fp32").model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={
                "use_reentrant": False, "context_fn": checkpoint_context_fn(model)})
        packed = pack_sequences([[5, 6, 7, 8, 9], [10, 11, 12]])
        packed_hidden(model, packed).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].shape == grads[1].shape
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def _attention_per_segment(query, key, value, bounds, prefix):
    """Reference (the loop packed attention was before 2026-11-28): one SDPA per segment, causal when it has no
    prefix, else its prefix ranges first under a (Q, K) mask, causal inside itself."""
    gqa = key.shape[1] != query.shape[1]
    out = []
    for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        ranges = prefix[n] or []
        if not ranges:
            o = torch.nn.functional.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b],
                                                                 is_causal=True, enable_gqa=gqa)
        else:
            k = torch.cat([key[:, :, pa:pb] for pa, pb in ranges] + [key[:, :, a:b]], dim=2)
            v = torch.cat([value[:, :, pa:pb] for pa, pb in ranges] + [value[:, :, a:b]], dim=2)
            allowed = torch.ones(b - a, k.shape[2], dtype=torch.bool).tril(diagonal=k.shape[2] - (b - a))
            o = torch.nn.functional.scaled_dot_product_attention(query[:, :, a:b], k, v, attn_mask=allowed,
                                                                 enable_gqa=gqa)
        out.append(o.transpose(1, 2))
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("prefixed", [True, False])
@pytest.mark.parametrize("how", ["one call", "per segment", "from cu_seq_lens"])
def test_attention_inside_segments_equals_one_sdpa_per_segment(how, prefixed):
    from searchr3.model.packing import _packed_sdpa, attend_in_one_call, attend_per_segment, segment_layout

    torch.manual_seed(0)
    bounds = [0, 5, 12, 14, 21, 22]          # a 5-token prefix segment, then segments of 7, 2, 7 and 1 tokens
    prefix = [None, [(0, 5)], [(0, 5)], [(0, 5), (5, 12)], None] if prefixed else [None] * 5
    q = torch.randn(1, 6, 22, 8, requires_grad=True)
    k = torch.randn(1, 2, 22, 8, requires_grad=True)  # grouped-query attention: 3 query heads per key head
    v = torch.randn(1, 2, 22, 8, requires_grad=True)
    layout = segment_layout(torch.tensor(bounds), prefix)
    assert (layout.mask is None) == (not prefixed)
    if how == "from cu_seq_lens":  # the layout built inside the attention function (on a CPU: per segment)
        got = _packed_sdpa(None, q, k, v, None, cu_seq_lens_q=torch.tensor(bounds, dtype=torch.int32),
                           searchr3_prefix=prefix)[0]
    else:
        got = (attend_in_one_call if how == "one call" else attend_per_segment)(q, k, v, layout)
    want = _attention_per_segment(q, k, v, bounds, prefix)
    assert got.shape == (1, 22, 6, 8)
    weights = torch.randn_like(want)
    grads = torch.autograd.grad((got * weights).sum(), (q, k, v))
    want_grads = torch.autograd.grad((want * weights).sum(), (q, k, v))
    if how == "one call":
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        for g, w in zip(grads, want_grads):
            assert torch.isfinite(g).all()
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    else:  # on a CPU: the same SDPA calls as before the layout, so committed runs reproduce bit for bit
        assert torch.equal(got, want)
        assert all(torch.equal(g, w) for g, w in zip(grads, want_grads))


def test_segment_layout_padding_queries_see_one_key_and_real_queries_stay_in_their_segment():
    from searchr3.model.packing import segment_layout

    assert segment_layout([0, 3, 4]).mask is None  # no prefix: plain causal attention over the padded batch
    layout = segment_layout([0, 3, 4], [None, [(0, 3)]])  # the 1-token segment continues the 3-token one
    assert layout.mask.shape == (2, 1, 3, 4)
    assert layout.mask[0, 0].tolist() == [[True, False, False, False], [True, True, False, False],
                                          [True, True, True, False]]
    assert layout.mask[1, 0].tolist() == [[True, True, True, True], [True, False, False, False],
                                          [True, False, False, False]]
    assert layout.k_index[1].tolist() == [0, 1, 2, 3] and layout.back.tolist() == [0, 1, 2, 3]
