"""Batched decoding: greedy equals transformers' generate; finished rows leave the batch."""
import pytest
import torch

from searchr3.model.embedder import Embedder
from searchr3.model.padding import pad_batch
from searchr3.model.generation import decode

QUERIES = ["sum numbers", "fox jumps over", "x", "search engines rank documents"]
MAX_NEW = 12


@pytest.fixture(scope="module")
def embedder(tiny_model_dir):
    """The tiny model with its weights scaled up, so greedy decoding varies from token to token."""
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    with torch.no_grad():
        for p in e.model.parameters():
            p.mul_(4)
    return e


def hf_generate(e, prompts, stop, max_new=MAX_NEW, **kwargs):
    ids, mask, _ = pad_batch(prompts, e.pad_id, "left")
    out = e.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, eos_token_id=sorted(stop),
                           pad_token_id=e.pad_id, do_sample=False, **kwargs)
    return [e._cut_trace(row[ids.shape[1]:].tolist())[0] for row in out]


def test_greedy_matches_generate_when_rows_stop_at_different_steps(embedder):
    e = embedder
    prompts = e.tokenize_reasoning_prompts(QUERIES)
    free = decode(e.model, prompts, e.pad_id, set(), MAX_NEW)
    assert [len(g) for g in free] == [MAX_NEW] * len(QUERIES)
    assert len({tuple(g) for g in free}) == len(QUERIES)  # the scaled model does not repeat one token
    # stop at a token one row emits at step 2 (and that no row emits earlier): rows now end at different steps
    stop_token = next(g[2] for g in free if g[2] not in {t for h in free for t in h[:2]})
    stop = {stop_token} | e.eos_ids
    ours = decode(e.model, prompts, e.pad_id, stop, MAX_NEW)
    assert sorted({len(g) for g in ours}) != [MAX_NEW]  # someone stopped early
    assert all(g[-1] in stop or len(g) == MAX_NEW for g in ours)
    assert [e._cut_trace(g)[0] for g in ours] == hf_generate(e, prompts, stop)


def test_finished_rows_leave_the_batch(embedder):
    e = embedder
    prompts = e.tokenize_reasoning_prompts(QUERIES)
    free = decode(e.model, prompts, e.pad_id, set(), MAX_NEW)
    stop = {free[0][1]}  # row 0 stops after two tokens (others maybe too)
    stopping_at = [next((i + 1 for i, t in enumerate(g) if t in stop), MAX_NEW) for g in free]
    sizes = []
    handle = e.model.register_forward_pre_hook(lambda m, args, kw: sizes.append(kw["input_ids"].shape[0]),
                                               with_kwargs=True)
    try:
        decode(e.model, prompts, e.pad_id, stop, MAX_NEW)
    finally:
        handle.remove()
    # forward pass s (s = 0 is the prompt) feeds the rows that have not stopped after s tokens
    expected = [sum(1 for n in stopping_at if n > s) for s in range(max(stopping_at))]
    assert sizes == expected and sizes[-1] < len(QUERIES)


def test_near_zero_temperature_sampling_is_greedy(embedder):
    e = embedder
    prompts = e.tokenize_reasoning_prompts(QUERIES)
    torch.manual_seed(0)
    sampled = decode(e.model, prompts, e.pad_id, set(), 6, temperature=1e-6)
    assert sampled == decode(e.model, prompts, e.pad_id, set(), 6)
    torch.manual_seed(0)
    hot = decode(e.model, prompts, e.pad_id, set(), 6, temperature=5.0)
    torch.manual_seed(0)
    assert hot == decode(e.model, prompts, e.pad_id, set(), 6, temperature=5.0)  # seeded: reproducible
    assert hot != sampled


def test_generate_reasoning_uses_the_cap_and_cuts_at_the_token(embedder):
    e = embedder
    gen = e.generate_reasoning(QUERIES, batch_size=3, max_new_tokens=5)
    assert all(len(g) <= 5 for g in gen.generated)
    assert gen.generated == [e._cut_trace(g)[0] for g in decode(e.model, gen.prompts, e.pad_id,
                                                             e.eos_ids | {e.embed_token_id}, 5)]


def test_repeated_prompts_share_one_prompt_pass(embedder, monkeypatch):
    """GRPO's groups: a repeated prompt is run through the prompt pass once; the rows decode as if each had its own."""
    e = embedder
    prompts = e.tokenize_reasoning_prompts([QUERIES[0], QUERIES[1], QUERIES[0], QUERIES[3], QUERIES[0], QUERIES[1]])
    widths = []
    real_forward = e.model.forward

    def spy(*args, **kwargs):
        widths.append(tuple(kwargs["input_ids"].shape))
        return real_forward(*args, **kwargs)

    separate = decode(e.model, prompts, e.pad_id, e.eos_ids, MAX_NEW, share_prompts=False)
    monkeypatch.setattr(e.model, "forward", spy)
    shared = decode(e.model, prompts, e.pad_id, e.eos_ids, MAX_NEW)
    assert widths[0][0] == 3 and widths[1][0] == 6  # 3 distinct prompts in the prompt pass, then 6 rows
    assert shared == separate
    torch.manual_seed(0)
    sampled_separate = decode(e.model, prompts, e.pad_id, e.eos_ids, MAX_NEW, temperature=1.0, share_prompts=False)
    torch.manual_seed(0)
    sampled_shared = decode(e.model, prompts, e.pad_id, e.eos_ids, MAX_NEW, temperature=1.0)
    assert sampled_shared == sampled_separate  # the same logits, so the same draws
