"""GRPO trainer on a tiny random model: the policy term moves log-probs the right way, a step logs every metric,
resume is exact, the live index holds the final model's vectors for refreshed docs, and the outputs load."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from searchr3.index.snapshot import load_snapshot
from searchr3.model.config import ModelConfig
from searchr3.model.embedder import Embedder, LabelledSequence, Reasoning
from searchr3.model.padding import pad_batch
from searchr3.train import common
from searchr3.train.grpo import (
    Scores,
    check_rows,
    generated_logprobs,
    nce_loss,
    pad_rows,
    policy_backward,
    select_corpus,
    train_grpo,
)
from searchr3.train.grpo_config import GRPOConfig
from searchr3.train.losses.clipped_policy import ClippedPolicyLoss
from searchr3.train.losses.reasoning_ce import IGNORE_INDEX, token_logprobs
from searchr3.train.trainer_setup import load_trainee, row_documents

STEP_METRICS = {"reward/mean", "reward/std", "reward/share_ge_half", "emitted", "groups/active", "kl", "trace_tokens",
                "loss/policy", "loss/kl_penalty", "loss/nce", "loss/trace_nce", "clip_fraction", "lr", "grad_norm", "refresh/size",
                "refresh/used", "refresh/neighbours", "refresh/topk_stale", "refresh/rotation", "index/staleness_mean",
                "index/staleness_max", "time/rollout_s", "time/score_s", "time/reward_s",
                "time/update_s", "time/refresh_s", "time/step_s"}


def run(grpo_toy, model_dir, tmp_path, name, cfg, icfg=None, live=False):
    rows, corpus = grpo_toy.toy_data()
    return train_grpo(cfg, ModelConfig(max_new_tokens=6), icfg or grpo_toy.index_config(), model_dir, rows, corpus,
                      tmp_path / name, tmp_path / f"ckpt-{name}", tmp_path / f"index-{name}",
                      live_dir=tmp_path / f"live-{name}" if live else None, progress=False)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_rows_must_name_documents_of_the_corpus(grpo_toy):
    rows, corpus = grpo_toy.toy_data(n=2, distractors=0)
    check_rows(rows, corpus)  # the data stage's ids, used as they are
    with pytest.raises(ValueError, match=r"train row 1 \(q1\): document id\(s\) \['n1'\] not in the training corpus"):
        check_rows(rows, {d: t for d, t in corpus.items() if d != "n1"})
    with pytest.raises(ValueError, match=r"train row 0 \(q0\): missing \['positive_id'\]"):
        check_rows([{k: v for k, v in rows[0].items() if k != "positive_id"}], corpus)
    with pytest.raises(ValueError, match="1 negative_ids for 2 negatives"):
        check_rows([dict(rows[0], negatives=["a", "b"])], corpus)
    with pytest.raises(ValueError, match="no training rows"):
        check_rows([], corpus)


def test_select_corpus_keeps_used_docs_and_caps_distractors(grpo_toy):
    rows, corpus = grpo_toy.toy_data(n=3, distractors=10)
    kept = select_corpus(rows[:2], corpus, max_docs=6, seed=0)
    assert {"d0", "n0", "d1", "n1"} <= set(kept) and len(kept) == 6  # every used doc + 2 distractors
    assert list(kept) == sorted(kept) and kept == select_corpus(rows[:2], corpus, max_docs=6, seed=0)
    assert len(select_corpus(rows[:2], corpus, max_docs=0, seed=0)) == len(corpus)


def test_reasoning_sequences_label_the_generated_tokens_and_the_stop(tiny_model_dir):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    tok, eos = e.embed_token_id, e.tokenizer.eos_token_id
    # emitted the token; stopped on EOS; ran into the length cap
    reasoning = Reasoning(e, [[1, 2, 3], [1, 2], [1]], [[7, tok], [8], [9, 9]], [None, eos, None])
    seqs = reasoning.sequences()
    fallback = reasoning.full_ids[1][3:]
    assert reasoning.emitted == [True, False, False] and tok in fallback
    assert [s.ids for s in seqs] == [[1, 2, 3, 7, tok], [1, 2, 8] + fallback, [1, 9, 9] + fallback]
    assert [s.labels for s in seqs] == [
        [IGNORE_INDEX] * 3 + [7, tok],
        [IGNORE_INDEX] * 2 + [8, eos] + [IGNORE_INDEX] * (len(fallback) - 1),  # the stop is an action at the suffix's slot
        [IGNORE_INDEX] + [9, 9] + [IGNORE_INDEX] * len(fallback)]  # the length cap is not an action


def test_generated_logprobs_are_taken_at_the_sampling_temperature(tiny_model_dir):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    seq = LabelledSequence([5, 6, 7, 8], [IGNORE_INDEX, IGNORE_INDEX, 7, 8])
    with torch.no_grad():
        logits = e.model(input_ids=torch.tensor([seq.ids])).logits[0].double()
        at_t = generated_logprobs(e.model, [seq], e.pad_id, e.device, temperature=0.5)[0][0]
        at_1 = generated_logprobs(e.model, [seq], e.pad_id, e.device)[0][0]
    by_hand = [float(torch.log_softmax(logits[p] / 0.5, -1)[t]) for p, t in ((1, 7), (2, 8))]
    assert at_t.tolist() == pytest.approx(by_hand, abs=1e-4)
    assert not at_1.tolist() == pytest.approx(by_hand, abs=1e-3)


def test_policy_term_raises_the_logprob_of_the_better_trace(tiny_model_dir):
    trainee = load_trainee(tiny_model_dir, ModelConfig(), GRPOConfig(mode="full", precision="fp32"))
    e, model = trainee.embedder, trainee.model.train()
    prompt = e.tokenize_reasoning_prompts(["alpha beta"])[0]
    seqs = [LabelledSequence(prompt + g, [IGNORE_INDEX] * len(prompt) + g) for g in ([50, 60, e.embed_token_id],
                                                                                    [70, 80, e.embed_token_id])]
    with torch.no_grad():
        before = generated_logprobs(model, seqs, e.pad_id, e.device)[0]
    assert [len(r) for r in before] == [3, 3]
    scores = Scores(seqs, before, before, np.zeros((2, 1), dtype=np.float32))
    # micro_batch 1: two chunks of one, so the chunk weighting is exercised too
    stats = policy_backward(trainee, scores, [0, 1], torch.tensor([1.0, -1.0]), ClippedPolicyLoss(beta=0.0),
                            GRPOConfig(micro_batch=1, temperature=1.0))
    assert stats["clip_fraction"] == 0.0  # first update: ratio 1
    # at ratio 1 the loss is -mean_seq(A · 1) = -(1 - 1) / 2 = 0
    assert stats["policy"] == pytest.approx(0.0, abs=1e-6) and stats["kl_penalty"] == pytest.approx(0.0, abs=1e-7)
    torch.optim.SGD(model.parameters(), lr=0.05).step()
    with torch.no_grad():
        after = generated_logprobs(model, seqs, e.pad_id, e.device)[0]
    assert float(after[0].sum()) > float(before[0].sum())
    assert float(after[1].sum()) < float(before[1].sum())


def test_generated_logprobs_from_tail_logits_match_the_full_computation(tiny_model_dir):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    seqs = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14]]  # prompts of 4 and 2 tokens, then 2 generated tokens each
    labels = [[IGNORE_INDEX] * 4 + [9, 10], [IGNORE_INDEX] * 2 + [13, 14] + [IGNORE_INDEX] * 2]
    labelled = [LabelledSequence(s, lab[: len(s)]) for s, lab in zip(seqs, labels)]
    with torch.no_grad():
        rows, vectors = generated_logprobs(e.model, labelled, e.pad_id, e.device)
        ids, mask, pos = pad_batch(seqs, e.pad_id, "right", e.device)
        logits = e.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        full, keep = token_logprobs(logits, torch.tensor(labels, device=e.device))
        tail = common.lm_logits(e.model, common.hidden_and_logits(e.model, ids, mask, pos, False)[0][:, 3:])
    assert vectors is None and [len(r) for r in rows] == [2, 2]
    for i in range(2):
        torch.testing.assert_close(rows[i], full[i][keep[i]], atol=1e-4, rtol=0)
    torch.testing.assert_close(tail, logits[:, 3:], atol=1e-4, rtol=0)


def test_rows_without_negatives_are_dropped_as_sft_does(tiny_model_dir, tmp_path, grpo_toy):
    rows, corpus = grpo_toy.toy_data(n=6, distractors=4)
    rows[2] = dict(rows[2], negatives=[], negative_ids=[])
    with pytest.raises(ValueError, match="no negative"):
        row_documents(rows, 1)  # the one policy: a row without a negative has nothing to fill its slot
    seen = []
    train_grpo(grpo_toy.config(steps=2, queries_per_step=2, group_size=2, checkpoint_every=2), ModelConfig(max_new_tokens=3),
               grpo_toy.index_config(probe_every=0), tiny_model_dir, rows, corpus, tmp_path / "m", tmp_path / "c",
               tmp_path / "i", live_dir=None, progress=False, on_step=lambda v: seen.append(v["step"]))
    summary = json.loads((tmp_path / "m" / "manifest.json").read_text())["rl"]
    assert summary["train_rows"] == 5 and seen == [0, 1, 2]


def test_nce_term_masks_a_shared_positive(tiny_model_dir, grpo_toy):
    trainee = load_trainee(tiny_model_dir, ModelConfig(), GRPOConfig(mode="full", precision="fp32"))
    rows, _ = grpo_toy.toy_data(n=3, distractors=0)
    rows[1] = dict(rows[1], query_id="q0")  # q0 has two positives: d0 and d1
    seen = {}

    def capture(q, p, n, ignore):
        seen["ignore"] = ignore
        return (q * p).sum()

    nce_loss(trainee, rows, capture, GRPOConfig(negatives_per_query=1), {"q0": {"d0", "d1"}, "q2": {"d2"}})
    # columns: positives d0 d1 d2, then negatives n0 n1 n2
    assert seen["ignore"].tolist() == [[False, True, False, False, False, False],
                                       [True, False, False, False, False, False],
                                       [False, False, False, False, False, False]]


def test_pad_rows_masks_the_padding():
    values, mask = pad_rows([torch.tensor([1.0, 2.0]), torch.tensor([]), torch.tensor([3.0])])
    assert values.tolist() == [[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]
    assert mask.tolist() == [[True, True], [False, False], [True, False]]


@pytest.mark.parametrize("mode, lambda_nce", [("lora", 0.0), ("full", 0.1)])
def test_one_step_changes_the_weights_and_logs_every_metric(tiny_model_dir, tmp_path, mode, lambda_nce, grpo_toy):
    cfg = grpo_toy.config(steps=1, mode=mode, lambda_nce=lambda_nce, checkpoint_every=1)
    summary = run(grpo_toy, tiny_model_dir, tmp_path, "out", cfg, live=True)
    history = common.load_checkpoint(tmp_path / "ckpt-out")["state"]["history"]
    expected = STEP_METRICS - ({"loss/nce"} if lambda_nce == 0 else set()) | {"index/fidelity", "step"}
    assert len(history) == 1 and set(history[0]) == expected
    step = history[0]
    # policy == reference at the first step (k3 KL has no gradient there), so with lambda_nce = 0 only the
    # clipped policy term can move the weights; it needs a group whose rewards differ
    assert step["groups/active"] > 0
    assert (step["emitted"] * cfg.queries_per_step * cfg.group_size).is_integer()  # a share of the step's traces
    assert step["kl"] == pytest.approx(0.0, abs=1e-6) and step["refresh/size"] > 0
    assert step["index/staleness_max"] == 1.0  # one step: the vectors not refreshed lag by exactly one version
    logged = json.loads((tmp_path / "live-out" / "metrics.json").read_text())
    assert set(logged["reward"]) == {"mean", "std", "share_ge_half"} and "fidelity" in logged["index"]
    assert summary["reward_first"] == step["reward/mean"] and summary["steps"] == 1
    before, after = weights(tiny_model_dir), weights(tmp_path / "out")
    assert max(float((before[k] - after[k]).abs().max()) for k in before) > 1e-5
    assert not any("lora" in k for k in after)  # LoRA merged


def test_kill_and_resume_equals_uninterrupted(tiny_model_dir, tmp_path, kill_and_resume, grpo_toy):
    cfg = grpo_toy.config(steps=6, checkpoint_every=2, queries_per_step=2)
    full, resumed, saved = kill_and_resume(lambda name: run(grpo_toy, tiny_model_dir, tmp_path, name, cfg), lambda name: tmp_path / name)
    assert saved == [2, 4]
    history = [common.load_checkpoint(tmp_path / f"ckpt-{n}")["state"]["history"] for n in "ab"]
    assert [h["reward/mean"] for h in history[0]] == [h["reward/mean"] for h in history[1]]
    assert resumed["reward_last"] == full["reward_last"] and resumed["model_checksum"] == full["model_checksum"]
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    ia, ib = load_snapshot(tmp_path / "index-a"), load_snapshot(tmp_path / "index-b")
    assert ia.doc_ids == ib.doc_ids and (ia.versions == ib.versions).all()
    np.testing.assert_array_equal(ia.vectors(ia.doc_ids), ib.vectors(ib.doc_ids))
    # older snapshots dropped; the one of the fallback checkpoint (step 4) is kept with it
    assert sorted(p.name for p in (tmp_path / "ckpt-b" / "index").iterdir()) == ["step-000004", "step-000006"]


def test_refreshed_vectors_match_the_final_model_and_outputs_load(tiny_model_dir, tmp_path, grpo_toy):
    cfg = grpo_toy.config(steps=3, final_refresh=False)
    icfg = grpo_toy.index_config(full_refresh_every=0, probe_every=0)
    summary = run(grpo_toy, tiny_model_dir, tmp_path, "out", cfg, icfg)
    assert summary["fidelity"] is None  # never probed
    final = Embedder.from_pretrained(tmp_path / "out", precision="fp32", max_doc_tokens=cfg.max_doc_tokens)
    _, corpus = grpo_toy.toy_data()
    index = load_snapshot(tmp_path / "index-out", texts=corpus)
    manifest = json.loads((tmp_path / "index-out" / "manifest.json").read_text())
    assert manifest["model_checksum"] == final.checksum == summary["model_checksum"]
    assert manifest["policy_version"] == 3
    fresh_ids = [d for d, v in zip(index.doc_ids, index.versions) if v == 3]
    stale_ids = [d for d, v in zip(index.doc_ids, index.versions) if v < 3]
    assert fresh_ids and stale_ids  # no full refresh: both kinds exist
    fresh = final.encode_documents([corpus[d] for d in fresh_ids])
    np.testing.assert_allclose(index.vectors(fresh_ids), fresh, atol=1e-5)
    stale = final.encode_documents([corpus[d] for d in stale_ids])
    assert np.abs(index.vectors(stale_ids) - stale).max() > 1e-4  # the comparison can tell stale from fresh
    assert manifest["staleness_max"] == 3.0 - index.versions.min()


def test_final_refresh_leaves_no_stale_vector(tiny_model_dir, tmp_path, grpo_toy):
    summary = run(grpo_toy, tiny_model_dir, tmp_path, "out", grpo_toy.config(steps=1, final_refresh=True),
                  grpo_toy.index_config(probe_every=0))
    index = load_snapshot(tmp_path / "index-out")
    assert summary["final_refreshed"] > 0 and (index.versions == 1).all()


@pytest.mark.parametrize("bad, message", [
    (dict(group_size=1), "group_size"), (dict(temperature=0.0), "temperature"), (dict(mode="qlora"), "mode"),
    (dict(updates_per_step=0), "updates_per_step"),
    (dict(queries_per_step=1, negatives_per_query=0, lambda_nce=0.1), "lambda_nce"), (dict(clip_eps=1.5), "clip_eps"),
    (dict(beta=-1.0), "beta"),
])
def test_bad_config_is_refused_before_loading_anything(tmp_path, bad, message, grpo_toy):
    rows, corpus = grpo_toy.toy_data()
    with pytest.raises(ValueError, match=message):
        train_grpo(grpo_toy.config(**bad), ModelConfig(), grpo_toy.index_config(), tmp_path / "no-model", rows, corpus,
                   tmp_path / "o", tmp_path / "c", tmp_path / "i", live_dir=None, progress=False)


def test_on_step_hook_sees_every_step_and_leaves_the_run_unchanged(tiny_model_dir, tmp_path, grpo_toy):
    seen = []

    def hook(view):
        idx = view["index"]
        docs = view["encode_documents"]([idx.texts[d] for d in idx.doc_ids[:3]])
        queries = view["encode_queries"](["alpha beta", "gamma"])
        seen.append((view["step"], view["refresh"] is None, "reward/mean" in view["metrics"], docs.shape[0], queries.shape[0]))

    rows, corpus = grpo_toy.toy_data()
    train_grpo(grpo_toy.config(), ModelConfig(max_new_tokens=6), grpo_toy.index_config(), tiny_model_dir, rows, corpus,
               tmp_path / "hooked", tmp_path / "ckpt-hooked", tmp_path / "index-hooked", live_dir=None, progress=False,
               on_step=hook)
    run(grpo_toy, tiny_model_dir, tmp_path, "plain", grpo_toy.config())
    assert seen == [(0, True, False, 3, 2), (1, False, True, 3, 2), (2, False, True, 3, 2)]
    hooked, plain = weights(tmp_path / "hooked"), weights(tmp_path / "plain")
    assert all(torch.equal(hooked[k], plain[k]) for k in plain)


def test_trace_infonce_moves_the_reasoning_embedding(tiny_model_dir, tmp_path, grpo_toy):
    # no policy signal (w_rank = w_format = 0: every group's rewards are equal) and no direct InfoNCE: only the
    # InfoNCE term on the sampled traces' embeddings can change the weights
    cfg = grpo_toy.config(steps=1, checkpoint_every=1, w_rank=0.0, w_format=0.0, lambda_nce=0.0, lambda_trace_nce=1.0,
                          mode="full")
    run(grpo_toy, tiny_model_dir, tmp_path, "on", cfg)
    history = common.load_checkpoint(tmp_path / "ckpt-on")["state"]["history"]
    assert history[0]["groups/active"] == 0.0 and history[0]["loss/trace_nce"] > 0
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(tmp_path / "on" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    run(grpo_toy, tiny_model_dir, tmp_path, "off", grpo_toy.config(steps=1, checkpoint_every=1, w_rank=0.0, w_format=0.0,
                                                                   lambda_nce=0.0, lambda_trace_nce=0.0, mode="full"))
    off = load_file(str(tmp_path / "off" / "model.safetensors"))
    assert all(torch.equal(before[k], off[k]) for k in before if k in off)  # the ablation: nothing moves


def test_refresh_prefetches_the_documents_the_next_step_scores(tiny_model_dir, tmp_path, grpo_toy):
    rows, corpus = grpo_toy.toy_data()
    cfg = grpo_toy.config(steps=3, checkpoint_every=3, queries_per_step=2)
    order = common.batch_order(len(rows), cfg.queries_per_step, cfg.steps, cfg.seed)
    versions = {}

    def hook(view):
        s = view["step"]
        if 0 < s < cfg.steps:  # after step s's refresh, before step s + 1 (index s of order) scores
            docs = [d for i in order[s] for d in (rows[i]["positive_id"], rows[i]["negative_ids"][0])]
            versions[s] = view["index"].version_of(docs).tolist()

    train_grpo(cfg, ModelConfig(max_new_tokens=4), grpo_toy.index_config(budget_per_step=4, full_refresh_every=0,
                                                                         probe_every=0),
               tiny_model_dir, rows, corpus, tmp_path / "m", tmp_path / "c", tmp_path / "i", live_dir=None,
               progress=False, on_step=hook)
    assert versions == {1: [1, 1, 1, 1], 2: [2, 2, 2, 2]}  # scored by policy s + 1 with vectors of version s + 1


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_fast_step_equals_the_step_as_it_was(tiny_model_dir, grpo_toy, mode):
    """Trainee.fast (one prompt pass per group, LoRA merged without gradient, packed passes, the direct InfoNCE's
    documents from the index) gives the same traces, log-probs, embeddings, rewards, losses and updated weights."""
    from functools import partial

    from searchr3.index.store import DocumentIndex
    from searchr3.train.grpo import reward, rollout, score, update
    from searchr3.train.losses.infonce import InfoNCELoss

    rows, corpus = grpo_toy.toy_data()
    batch = rows[:3]
    cfg = grpo_toy.config(mode=mode, group_size=3, queries_per_step=3, micro_batch=4, lambda_nce=0.5,
                          lambda_trace_nce=0.1)
    out = {}
    for fast in (False, True):
        trainee = load_trainee(tiny_model_dir, ModelConfig(max_new_tokens=6), cfg)
        trainee.fast = fast
        with torch.no_grad():  # away from the start model (LoRA's B starts at 0), the same way on both sides
            for p in trainee.params:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
            for p in trainee.model.parameters():
                if not p.requires_grad:
                    p.mul_(3)  # a sharper base model: traces vary from token to token
        index = DocumentIndex(encode_batch=8)
        index.build(list(corpus), list(corpus.values()), partial(trainee.encode_documents, batch_size=8), version=0)
        torch.manual_seed(0)
        reasoning = rollout(trainee, batch, cfg)
        scores = score(trainee, reasoning, cfg.micro_batch, cfg.temperature)
        rewards = reward(index, batch, reasoning, scores, cfg, 10)
        losses = update(trainee, batch, scores, rewards, ClippedPolicyLoss(beta=0.04), InfoNCELoss(temperature=0.05),
                        cfg, index, {r["query_id"]: {r["positive_id"]} for r in rows}, version=0)
        out[fast] = (reasoning, scores, rewards, losses, common.trainable_state(trainee.model))
    (r0, s0, w0, l0, p0), (r1, s1, w1, l1, p1) = out[False], out[True]
    assert r1.generated == r0.generated and len({tuple(g) for g in r0.generated}) > 3
    for a, b in zip(s0.old_logp + s0.ref_logp, s1.old_logp + s1.ref_logp):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s1.vectors, s0.vectors, atol=1e-5)
    assert w1.rewards == w0.rewards and len(w0.active) > 0
    assert set(l1) == set(l0) and all(l1[k] == pytest.approx(l0[k], rel=1e-4, abs=1e-6) for k in l0 if k != "lr")
    # the first Adam step moves every weight by about +-lr (5e-3) whatever its gradient's size, so a gradient near 0
    # that differs in its last bits can move a weight differently: 1e-5 is 0.2 % of one step
    for name, value in p0.items():
        torch.testing.assert_close(p1[name], value, rtol=1e-4, atol=1e-5)
