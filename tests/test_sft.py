"""SFT trainer on a tiny random model: loss goes down, resume is exact, both modes export loadable folders."""
import random
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from searchr3.data.types import RetrievalSet
from searchr3.model.config import ModelConfig
from searchr3.model.embedder import Embedder, Reasoning
from searchr3.train.common import batch_order
from searchr3.train.lora import LoRAConfig, wrap_lora
from searchr3.train.losses.composite import CompositeLoss
from searchr3.train.losses.reasoning_ce import IGNORE_INDEX
from searchr3.train.sft import SFTBatchBuilder, compute_loss, train_sft
from searchr3.train.sft_config import SFTConfig

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def toy_rows(n=16):
    rows = []
    for i in range(n):
        words = random.Random(i).sample(WORDS, 3)
        rows.append({"query_id": f"q{i}", "query": " ".join(words), "positive": " ".join(words) + " document",
                     "negatives": [" ".join(random.Random(100 + i).sample(WORDS, 3))], "negative_ids": [f"n{i}"],
                     "source": "toy"})
    return rows


def toy_dev(rows):
    return RetrievalSet("dev", {f"d{i}": r["positive"] for i, r in enumerate(rows)},
                        {f"q{i}": r["query"] for i, r in enumerate(rows)}, {f"q{i}": {f"d{i}": 1} for i in range(len(rows))})


TRACES = {"q0": "alpha concepts", "q1": "beta and gamma"}
CANDIDATES = [{"query_id": q, "trace": t} for q, t in TRACES.items()]


def config(**kw):
    # temperature: these tests' step sizes and tolerances were set at InfoNCE tau 0.05 on the tiny random model
    # (at params.yaml's 0.02, full fine-tuning at lr 1e-3 overshoots in 8 steps and logits 2.5x larger scale the
    # packed-vs-padded rounding past the gradient tolerance)
    # doc_grad and bare_reasoning_share: off, as when these tests were written (the tests of each set them)
    base = dict(steps=4, batch_size=4, eval_every=2, checkpoint_every=2, lr=5e-3, warmup_steps=1, precision="fp32",
                dev_max_docs=50, trace_warmup_steps=2, temperature=0.05, doc_grad=False, bare_reasoning_share=0.0)
    return SFTConfig(**(base | kw))


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_batch_order_is_a_pure_function_of_seed():
    assert batch_order(10, 4, 5, seed=3) == batch_order(10, 4, 5, seed=3)
    assert batch_order(10, 4, 5, seed=3) != batch_order(10, 4, 5, seed=4)
    first_epoch = [i for b in batch_order(10, 5, 2, 0) for i in b]
    assert sorted(first_epoch) == list(range(10))


def test_batch_order_never_puts_a_row_twice_in_a_batch_and_oversamples():
    # 7 rows in batches of 4: batches straddle epoch boundaries
    for seed in range(20):
        assert all(len(set(b)) == len(b) == 4 for b in batch_order(7, 4, 30, seed))
    repeats = [3] + [1] * 19  # row 0 three times per epoch
    order = batch_order(20, 4, 200, 0, repeats)
    assert all(len(set(b)) == len(b) for b in order)
    counts = np.bincount([i for b in order for i in b], minlength=20)
    assert counts[0] > 2.5 * counts[1:].mean()
    assert all(sorted(b) == [0, 1] for b in batch_order(2, 4, 3, 0))  # never wider than the distinct rows


def test_every_row_has_a_ce_target_through_the_token(tiny_model_dir):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    rows = toy_rows()
    traced, direct = e.query_sequences([rows[0]["query"], rows[5]["query"]], [TRACES["q0"], None], 48, 8)
    prompt = e.tokenize_reasoning_prompts([rows[0]["query"]], 48)[0]
    closing = e.tokenizer("\nThe embedding is <|embed_token|>", add_special_tokens=False)["input_ids"]
    assert traced.ids == prompt + e.tokenizer(TRACES["q0"], add_special_tokens=False)["input_ids"][:8] + closing
    assert traced.labels == [IGNORE_INDEX] * len(prompt) + traced.ids[len(prompt):]
    assert direct.ids == e.tokenize_queries([rows[5]["query"]], 48)[0]
    response = e.tokenizer("The embedding is <|embed_token|>", add_special_tokens=False)["input_ids"]
    assert direct.labels == [IGNORE_INDEX] * (len(direct.ids) - len(response)) + response  # the direct row's target
    batch = SFTBatchBuilder(e, config(), TRACES).build(rows[:6])  # q0, q1 traced; q2..q5 direct
    labels, kl = batch["labels"], batch["kl_labels"]
    for i in range(6):
        last = int(batch["q"][1][i].sum()) - 1
        assert labels[i, last] == e.embed_token_id  # every row: CE on the token
        assert kl[i, last] == IGNORE_INDEX  # never KL at the token position
    assert (kl[2:] == IGNORE_INDEX).all()  # direct rows: no KL
    n_trace = len(e.tokenizer(TRACES["q0"], add_special_tokens=False)["input_ids"][:8])
    assert int((kl[0] != IGNORE_INDEX).sum()) == n_trace  # KL on the trace's own tokens only


def test_one_format_the_trainer_builds_what_the_embedder_embeds(tiny_model_dir):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    rows = toy_rows()
    cfg = config(max_query_tokens=e.config.max_query_tokens, max_trace_tokens=e.config.max_new_tokens)
    batch = SFTBatchBuilder(e, cfg, TRACES).build([rows[0], rows[5]])
    built = [row[: int(m.sum())].tolist() for row, m in zip(batch["q"][0], batch["q"][1])]
    # direct: what encode_queries embeds
    assert built[1] == e.tokenize_queries([rows[5]["query"]])[0]
    # reasoning: what inference embeds after a generation that wrote this trace, whether the model then emitted the
    # closing suffix itself or stopped and got it appended
    prompt = e.tokenize_reasoning_prompts([rows[0]["query"]])
    trace = e.tokenizer(TRACES["q0"], add_special_tokens=False)["input_ids"]
    closing = e.tokenizer("\nThe embedding is <|embed_token|>", add_special_tokens=False)["input_ids"]
    emitted = Reasoning(e, prompt, [trace + closing])
    stopped = Reasoning(e, prompt, [trace], [e.tokenizer.eos_token_id])
    assert emitted.emitted == [True] and stopped.emitted == [False]
    assert built[0] == emitted.full_ids[0] == stopped.full_ids[0]
    # a trace text that already ends with the closing phrase is not closed twice
    again = e.query_sequences([rows[0]["query"]], [TRACES["q0"] + "\nThe embedding is <|embed_token|>"])[0]
    assert again.ids == built[0]


@pytest.mark.parametrize("packed", [False, True])
def test_bare_reasoning_rows_embed_what_inference_embeds_when_the_model_closes_at_once(tiny_model_dir, packed):
    """``bare_reasoning_share``: rows without a kept trace train the reasoning format with an empty trace (the
    reasoning prompt + the closing suffix), InfoNCE only; traced rows keep their CE and KL targets."""
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    rows = toy_rows()[:6]  # q0, q1 traced; q2..q5 not
    cfg = config(bare_reasoning_share=1.0, max_query_tokens=e.config.max_query_tokens)
    batch = SFTBatchBuilder(e, cfg, TRACES).build(rows)
    built = [row[: int(m.sum())].tolist() for row, m in zip(batch["q"][0], batch["q"][1])]
    closing = e.tokenizer("\nThe embedding is <|embed_token|>", add_special_tokens=False)["input_ids"]
    for i in range(2, 6):
        prompt = e.tokenize_reasoning_prompts([rows[i]["query"]])
        assert built[i] == Reasoning(e, prompt, [closing]).full_ids[0]  # the model answered the token at once
        assert (batch["labels"][i] == IGNORE_INDEX).all() and (batch["kl_labels"][i] == IGNORE_INDEX).all()
    assert (batch["labels"][:2] != IGNORE_INDEX).any(dim=1).all()  # the traced rows: CE as before
    assert built[0] == SFTBatchBuilder(e, config(max_query_tokens=e.config.max_query_tokens), TRACES).build(rows[:1])[
        "q"][0][0].tolist()
    # a batch with no CE target at all still gives a finite loss and a gradient (InfoNCE)
    loss = CompositeLoss(cfg.lambda_ce, cfg.lambda_kl, cfg.lambda_nce, cfg.lambda_tri, temperature=cfg.temperature)
    e.model.train()
    out = compute_loss(e.model, SFTBatchBuilder(e, cfg, {}, packed=packed).build(rows), loss, e.embed_token_id, cfg,
                       reference=lambda: nullcontext(e.model))
    assert torch.isfinite(out.total)
    out.total.backward()
    assert e.model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_bare_reasoning_share_picks_a_fixed_subset_of_the_queries(tiny_model_dir):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    rows = toy_rows()

    def bare(share, seed=0):
        batch = SFTBatchBuilder(e, config(bare_reasoning_share=share, seed=seed), {}).build(rows)
        built = [ids[: int(m.sum())].tolist() for ids, m in zip(batch["q"][0], batch["q"][1])]
        prompts = e.tokenize_reasoning_prompts([r["query"] for r in rows], config().max_query_tokens)
        return {r["query_id"] for r, ids, prompt in zip(rows, built, prompts) if ids[: len(prompt)] == prompt}

    half = bare(0.5)
    assert bare(0.0) == set() and bare(1.0) == {r["query_id"] for r in rows}
    assert 0 < len(half) < len(rows) and bare(0.5) == half and bare(0.5, seed=1) != half


def test_infonce_mask_covers_a_positive_shared_by_two_rows(tiny_model_dir):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    rows = [dict(r, positive_id=f"d{i}") for i, r in enumerate(toy_rows(3))]
    rows[1] = dict(rows[1], positive_id="d0", positive=rows[0]["positive"])  # two queries, one relevant document
    ignore = SFTBatchBuilder(e, config(), {}).build(rows)["ignore"]
    assert ignore.tolist() == [[False, True, False, False, False, False],
                               [True, False, False, False, False, False],
                               [False] * 6]


def test_traces_are_scored_by_the_model_being_trained_after_the_warm_up(tiny_model_dir, tmp_path, monkeypatch):
    import searchr3.train.sft as sft

    rows, seen = toy_rows(8), {}
    real = sft.score_candidates

    def spy(embedder, *args, **kwargs):
        seen["weights"] = {k: v.detach().clone() for k, v in embedder.model.state_dict().items()}
        return real(embedder, *args, **kwargs)

    monkeypatch.setattr(sft, "score_candidates", spy)
    summary = train_sft(config(steps=4, trace_warmup_steps=2, mode="full", lr=1e-2), ModelConfig(), tiny_model_dir, rows,
                        None, tmp_path / "out", tmp_path / "ckpt", traces=CANDIDATES, live_dir=None, progress=False)
    base = Embedder.from_pretrained(tiny_model_dir, precision="fp32").model.state_dict()
    assert summary["trace_scoring"]["at_step"] == 2 and summary["trace_scoring"]["scored"] == 2
    assert any(not torch.equal(seen["weights"][k], base[k]) for k in base)  # not the base: the warmed-up trainee


def test_batch_builder_pads_short_negative_lists_by_repetition(tiny_model_dir):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    rows = [dict(r, negatives=r["negatives"] + ["second negative"]) for r in toy_rows(2)]
    rows[1]["negatives"] = rows[1]["negatives"][:1]
    batch = SFTBatchBuilder(e, config(negatives_per_query=2), {}).build(rows)
    d_ids = batch["d"][0].tolist()
    expected = e.tokenize_documents([rows[0]["positive"], rows[0]["negatives"][0], "second negative",
                                     rows[1]["positive"], rows[1]["negatives"][0], rows[1]["negatives"][0]], 128)
    assert [row[: len(x)] for row, x in zip(d_ids, expected)] == expected and batch["k"] == 2


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_gradient_reaches_the_embed_token_row(tiny_model_dir, mode):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    model = e.model
    if mode == "lora":
        model = wrap_lora(model, LoRAConfig(r=4, alpha=8, targets=["q_proj", "v_proj"]), e.embed_token_id)
    model.train()
    cfg = config()
    batch = SFTBatchBuilder(e, cfg, TRACES).build(toy_rows()[:4])
    loss = CompositeLoss(cfg.lambda_ce, 0.0, cfg.lambda_nce, cfg.lambda_tri, temperature=cfg.temperature)
    compute_loss(model, batch, loss, e.embed_token_id, SFTConfig(lambda_kl=0.0)).total.backward()
    if mode == "full":
        grad = model.get_input_embeddings().weight.grad
        assert grad[e.embed_token_id].abs().sum() > 0
    else:
        token_grads = [p.grad for n, p in model.named_parameters() if "token_adapter" in n and p.requires_grad]
        assert token_grads and all(g is not None and g.abs().sum() > 0 for g in token_grads)


def fixed_batch_loss(model_dir, rows):
    e = Embedder.from_pretrained(model_dir, precision="fp32")
    cfg = config(lambda_kl=0.0, lambda_ce=0.1)
    loss = CompositeLoss(cfg.lambda_ce, 0.0, cfg.lambda_nce, cfg.lambda_tri, temperature=cfg.temperature)
    with torch.no_grad():
        return compute_loss(e.model, SFTBatchBuilder(e, cfg, TRACES).build(rows), loss, e.embed_token_id, cfg).total.item()


def test_a_few_steps_lower_the_loss(tiny_model_dir, tmp_path):
    rows = toy_rows(8)
    train_sft(config(steps=8, batch_size=8, eval_every=100, lr=1e-3, mode="full", lambda_ce=0.1), ModelConfig(), tiny_model_dir, rows,
              None, tmp_path / "out", tmp_path / "ckpt", traces=CANDIDATES, live_dir=tmp_path / "live", progress=False)
    assert fixed_batch_loss(tmp_path / "out", rows) < 0.8 * fixed_batch_loss(tiny_model_dir, rows)
    assert (tmp_path / "live" / "metrics.json").exists()


def test_kill_and_resume_equals_uninterrupted(tiny_model_dir, tmp_path, kill_and_resume):
    rows, dev = toy_rows(), toy_dev(toy_rows())

    def run(name):
        return train_sft(config(steps=6), ModelConfig(), tiny_model_dir, rows, dev, tmp_path / name, tmp_path / f"c{name}",
                         traces=CANDIDATES, live_dir=None, progress=False)

    full, resumed, saved = kill_and_resume(run, lambda name: tmp_path / name)
    assert saved == [2, 4]
    assert resumed["dev_ndcg@10"] == full["dev_ndcg@10"] and resumed["best_step"] == full["best_step"]
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_both_modes_export_a_loadable_folder(tiny_model_dir, tmp_path, mode):
    rows = toy_rows()
    summary = train_sft(config(mode=mode, steps=2), ModelConfig(), tiny_model_dir, rows, toy_dev(rows), tmp_path / "out",
                        tmp_path / "ckpt", traces=CANDIDATES, live_dir=None, progress=False)
    assert summary["dev_ndcg@10"] is not None and summary["base_dev_ndcg@10"] is not None
    # the summary says what the dev figure ranked over (a sample, not the whole dev corpus)
    assert summary["dev_sample"] == {"set": "dev", "queries": len(rows), "documents": len(rows)}
    trained = Embedder.from_pretrained(tmp_path / "out", precision="fp32")
    base = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    docs = [r["positive"] for r in rows[:4]]
    v = trained.encode_documents(docs)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.abs(v - base.encode_documents(docs)).max() > 1e-4  # training changed the model
    assert not any("lora" in k for k in weights(tmp_path / "out"))  # LoRA merged


def test_the_embed_token_row_trains_at_its_own_learning_rate(tiny_model_dir):
    from searchr3.train.trainer_setup import load_trainee

    trainee = load_trainee(tiny_model_dir, ModelConfig(), config(lr=1e-3, warmup_steps=0, token_lr_scale=50.0))
    groups = trainee.optimizer.param_groups
    assert [g["lr"] for g in groups] == [1e-3, 5e-2]
    names = {id(p): n for n, p in trainee.model.named_parameters()}
    assert [names[id(p)] for p in groups[1]["params"]] == [
        n for n, p in trainee.model.named_parameters() if "trainable_tokens_delta" in n]


@pytest.mark.parametrize("mode,doc_grad", [("lora", False), ("full", True)])
def test_packed_batch_gives_the_padded_loss_and_gradients(tiny_model_dir, mode, doc_grad):
    """The packed step (no padding, LM head only at targets, reference only over KL rows) computes the padded step's
    loss terms and gradients, to float32 rounding."""
    from searchr3.train.trainer_setup import load_trainee

    cfg = config(mode=mode, doc_grad=doc_grad, lambda_kl=0.5, lambda_ce=1.0)
    trainee = load_trainee(tiny_model_dir, ModelConfig(), cfg)
    with torch.no_grad():  # move the policy away from its reference, so the KL term is not 0
        for p in trainee.params:
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    loss_fn = CompositeLoss(cfg.lambda_ce, cfg.lambda_kl, cfg.lambda_nce, cfg.lambda_tri, temperature=cfg.temperature)
    rows = toy_rows(6)  # q0, q1 traced (KL), q2..q5 direct
    out = {}
    for packed in (False, True):
        batch = SFTBatchBuilder(trainee.embedder, cfg, TRACES, packed=packed).build(rows)
        result = compute_loss(trainee.model, batch, loss_fn, trainee.embed_id, cfg, trainee.reference,
                              merged=trainee.merged if packed else None)
        result.total.backward()
        grads = {n: p.grad.clone() for n, p in trainee.model.named_parameters() if p.grad is not None}
        trainee.optimizer.zero_grad(set_to_none=True)
        out[packed] = (result.components, grads)
    (padded, g_padded), (packed, g_packed) = out[False], out[True]
    assert set(padded) == set(packed) == {"ce", "kl", "infonce", "triplet"} and padded["kl"] > 1e-4
    for term in padded:
        assert packed[term] == pytest.approx(padded[term], rel=1e-5, abs=1e-6), term
    assert set(g_padded) == set(g_packed) and len(g_packed) > 0
    for name, grad in g_padded.items():
        torch.testing.assert_close(g_packed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_merged_lora_gives_the_unmerged_outputs_and_puts_the_weights_back(tiny_model_dir):
    from searchr3.train.trainer_setup import load_trainee, merged_lora

    trainee = load_trainee(tiny_model_dir, ModelConfig(), config(mode="lora"))
    with torch.no_grad():
        for p in trainee.params:  # LoRA's B starts at 0: make the adapters do something
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    before = {k: v.clone() for k, v in trainee.model.state_dict().items()}
    texts = [r["positive"] for r in toy_rows(5)]
    with torch.no_grad():
        plain = trainee.embedder.encode_documents(texts)
        with merged_lora(trainee.model):
            merged = trainee.embedder.encode_documents(texts)
        again = trainee.embedder.encode_documents(texts)  # the adapters run again after the block
        with trainee.reference():
            base = trainee.embedder.encode_documents(texts)
    np.testing.assert_allclose(merged, plain, atol=1e-5)
    np.testing.assert_array_equal(again, plain)
    assert np.abs(base - plain).max() > 1e-3  # the adapters change the vectors, and merging kept that change
    after = trainee.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # bit for bit: swapped back, not subtracted
    with pytest.raises(RuntimeError, match="without gradient"):
        with merged_lora(trainee.model):
            pass

