"""Batched decoding: greedy equals transformers' generate; finished rows leave the batch."""
import pytest
import torch

from searchr3.model.embedder import Embedder
from searchr3.model.padding import pad_batch
from searchr3.model.generation import ban_repeated_ngrams, banned_tokens, decode

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


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    """The tiny model as built: its greedy traces repeat themselves."""
    return Embedder.from_pretrained(tiny_model_dir, precision="fp32")


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
                                                             e.eos_ids | {e.embed_token_id}, 5,
                                                             no_repeat_ngram=e.config.no_repeat_ngram)]


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


def test_banned_tokens_are_the_ones_that_would_repeat_an_ngram():
    history = [5, 6, 7, 5, 6]
    assert banned_tokens(history, 3) == {7}  # 5 6 -> 7 was written: 5 6 7 may not come again
    assert banned_tokens(history, 2) == {7}  # after 6 came 7
    assert banned_tokens([5, 6, 5, 8, 5], 2) == {6, 8}
    assert banned_tokens(history, 1) == {5, 6, 7}
    assert banned_tokens([5], 3) == set() and banned_tokens(history, 0) == set()
    logits = torch.zeros(2, 10)
    out = ban_repeated_ngrams(logits, [history, [1]], 3)
    assert torch.isinf(out[0, 7]) and int(torch.isinf(out).sum()) == 1 and not torch.isinf(logits).any()


def loops(g: list[int], n: int) -> bool:
    grams = [tuple(g[i: i + n]) for i in range(len(g) - n + 1)]
    return len(grams) != len(set(grams))


def test_no_repeat_ngram_breaks_a_greedy_loop(tiny_model):
    """The unscaled tiny model falls into loops under greedy decoding; with the ban no row repeats a bigram."""
    e = tiny_model
    prompts = e.tokenize_reasoning_prompts(QUERIES)
    free = decode(e.model, prompts, e.pad_id, set(), 40)
    assert any(loops(g, 2) for g in free)
    banned = decode(e.model, prompts, e.pad_id, set(), 40, no_repeat_ngram=2)
    assert [len(g) for g in banned] == [40] * len(QUERIES) and not any(loops(g, 2) for g in banned)
    first = next(i for i, g in enumerate(free) if loops(g, 2))
    same = next(t for t in range(40) if loops(free[first][: t + 1], 2))  # the step the loop closes a repeat
    assert banned[first][:same] == free[first][:same] and banned[first][same] != free[first][same]


def test_generate_reasoning_takes_the_ban_from_the_config_unless_told(tiny_model):
    e = tiny_model
    prompts = e.tokenize_reasoning_prompts(QUERIES)
    stop = e.eos_ids | {e.embed_token_id}
    old = e.config.no_repeat_ngram
    try:
        e.config.no_repeat_ngram = 2
        banned = [e._cut_trace(g)[0] for g in decode(e.model, prompts, e.pad_id, stop, 30, no_repeat_ngram=2)]
        free = [e._cut_trace(g)[0] for g in decode(e.model, prompts, e.pad_id, stop, 30)]
        assert banned != free
        assert e.generate_reasoning(QUERIES, max_new_tokens=30).generated == banned
        assert e.generate_reasoning(QUERIES, max_new_tokens=30, no_repeat_ngram=0).generated == free
    finally:
        e.config.no_repeat_ngram = old


def test_training_samplers_decode_without_the_ban(tiny_model_dir, monkeypatch):
    """GRPO's rollout and the SFT trace candidates sample from the model's own distribution (GRPO's log-probs are
    taken under it), whatever ``model.no_repeat_ngram`` says for evaluation."""
    import searchr3.model.embedder as embedder_module
    from searchr3.model.config import ModelConfig
    from searchr3.train.grpo import rollout
    from searchr3.train.grpo_config import GRPOConfig
    from searchr3.train.trainer_setup import load_trainee
    from searchr3.train.traces import sample_self_traces

    seen = []
    real = embedder_module.decode
    monkeypatch.setattr(embedder_module, "decode", lambda *a, **kw: seen.append(kw["no_repeat_ngram"]) or real(*a, **kw))
    config = GRPOConfig(mode="full", precision="fp32", group_size=2)
    trainee = load_trainee(tiny_model_dir, ModelConfig(max_new_tokens=4, no_repeat_ngram=3), config)
    rows = [{"query_id": "q1", "query": "sum numbers", "positive": "def add(a, b)", "negatives": ["def f()"]}]
    rollout(trainee, rows, config)
    sample_self_traces(trainee.embedder, rows, 1, 1, temperature=0.7, max_new_tokens=4, progress=False)
    assert seen == [0, 0]
    trainee.embedder.generate_reasoning(["sum numbers"], max_new_tokens=4)
    assert seen[-1] == 3  # evaluation and serving: the configured ban
