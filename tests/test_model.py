"""Base-model materialisation and the Embedder, on a tiny random model."""
import json

import numpy as np
import pytest
import torch

from searchr3.model.config import EMBED_TOKEN, ModelConfig, Templates
from searchr3.model.embedder import (BF16_SPEEDUP, Embedder, auto_dtype, bf16_matmul_speedup, embed_hidden,
                                     resolve_dtype)
from searchr3.model.materialize import MANIFEST, materialize, weights_sha256
from searchr3.model.padding import pad_batch
from searchr3.model.tiny import build_tiny_raw

DOCS = [
    "def add(a, b): return a + b",
    "The quick brown fox jumps over the lazy dog, again and again, until the dog finally wakes up.",
    "x",
    "Search engines rank documents by relevance to a query.",
    "import os",
]


@pytest.fixture(scope="module")
def embedder(tiny_model_dir):
    return Embedder.from_pretrained(tiny_model_dir, precision="fp32")


def test_token_added_once_and_idempotent(tmp_path):
    raw = build_tiny_raw(tmp_path / "raw")
    first = materialize(str(raw), tmp_path / "m1")
    second = materialize(str(tmp_path / "m1"), tmp_path / "m2")
    assert first["token_added"] is True and second["token_added"] is False
    assert first["embed_token_id"] == second["embed_token_id"]
    assert first["vocab_size"] == second["vocab_size"] == first["embed_token_id"] + 1
    # the second pass changed no weight
    assert weights_sha256(tmp_path / "m1") == weights_sha256(tmp_path / "m2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "m2")
    assert tok(EMBED_TOKEN, add_special_tokens=False)["input_ids"] == [first["embed_token_id"]]
    assert json.loads((tmp_path / "m2" / MANIFEST).read_text())["weights_sha256"] == weights_sha256(tmp_path / "m2")


def test_new_row_is_mean_of_existing_rows(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tid = json.loads((tiny_model_dir / MANIFEST).read_text())["embed_token_id"]
    rows = model.get_input_embeddings().weight.detach()
    torch.testing.assert_close(rows[tid], rows[:tid].mean(0))


def test_failed_materialize_leaves_previous_output(tmp_path, tiny_model_dir):
    out = tmp_path / "base"
    materialize(str(tiny_model_dir), out)
    before = weights_sha256(out)
    with pytest.raises(Exception):
        materialize(str(tmp_path / "does-not-exist"), out)
    assert weights_sha256(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_embedding_is_hidden_state_at_last_embed_token(embedder):
    ids = embedder.tokenize_documents(["hello world"])[0]
    tid = embedder.embed_token_id
    assert ids[-1] == tid
    # put a second token earlier: the last occurrence is the one pooled
    seq = ids[:3] + [tid] + ids[3:]
    x = torch.tensor([seq])
    with torch.no_grad():
        hidden = embedder.model(x, output_hidden_states=True).hidden_states[-1][0]
    expected = torch.nn.functional.normalize(hidden[len(seq) - 1], dim=0).numpy()
    got = embedder.forward_embeddings([seq])[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    other = torch.nn.functional.normalize(hidden[3], dim=0).numpy()
    assert np.abs(got - other).max() > 1e-3


def test_missing_token_is_an_error(embedder):
    ids, mask, pos = pad_batch([[1, 2, 3]], embedder.pad_id)
    with pytest.raises(ValueError, match="embed_token"):
        embed_hidden(embedder.model, ids, mask, pos, embedder.embed_token_id)


def test_embeddings_are_normalised_float32(embedder):
    v = embedder.encode_documents(DOCS)
    assert v.dtype == np.float32 and v.shape == (len(DOCS), embedder.model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_equals_alone(embedder, side):
    batched = embedder.encode_documents(DOCS, batch_size=4, padding_side=side)
    alone = np.stack([embedder.encode_documents([d])[0] for d in DOCS])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_length_sorting_keeps_input_order(embedder):
    fwd = embedder.encode_documents(DOCS, batch_size=2)
    rev = embedder.encode_documents(DOCS[::-1], batch_size=3)[::-1]
    np.testing.assert_allclose(fwd, rev, atol=1e-5)


def test_bf16_agrees_with_fp32(tiny_model_dir, embedder):
    bf16 = Embedder.from_pretrained(tiny_model_dir, precision="bf16")
    cos = (bf16.encode_documents(DOCS) * embedder.encode_documents(DOCS)).sum(1)
    assert cos.min() >= 0.99


QUERIES = ["add two numbers", "what does the fox do", "how do search engines rank pages", "import a module"]


@pytest.mark.slow
def test_bf16_agrees_with_fp32_on_the_default_model(default_model_dir):
    """The README's precision claim (`precision: auto` picks bf16 where the hardware has it) on the real default
    model, SmolLM2-135M-Instruct, not only on the random tiny one: documents and queries, cosine >= 0.99."""
    fp32 = Embedder.from_pretrained(default_model_dir, precision="fp32")
    bf16 = Embedder.from_pretrained(default_model_dir, precision="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    docs = (bf16.encode_documents(DOCS) * fp32.encode_documents(DOCS)).sum(1)
    queries = (bf16.encode_queries(QUERIES).vectors * fp32.encode_queries(QUERIES).vectors).sum(1)
    print(f"bf16 vs fp32 cosine on SmolLM2-135M: documents min {docs.min():.4f}, queries min {queries.min():.4f}")
    assert docs.min() >= 0.99 and queries.min() >= 0.99
    # the two precisions are different computations (a test that compared a model with itself would pass too)
    assert np.abs(bf16.encode_documents(DOCS) - fp32.encode_documents(DOCS)).max() > 1e-4


def test_reasoning_fallback_is_counted(embedder):
    """Row 0 is forced to emit the token at its first step; row 1 never does and gets the fallback suffix."""
    tid = embedder.embed_token_id
    head = embedder.model.get_output_embeddings()

    def force_row0(module, inputs, output):
        output = output.clone()
        output[:, :, tid] = -1e4
        if output.shape[0] == 2:  # row 0 leaves the batch once it has emitted the token
            output[0, :, tid] = 1e4
        return output

    handle = head.register_forward_hook(force_row0)
    try:
        res = embedder.encode_queries(["sum numbers", "fox jumps"], reasoning=True, return_traces=True, batch_size=2)
        gen = embedder.generate_reasoning(["sum numbers", "fox jumps"], batch_size=2)
    finally:
        handle.remove()
    assert res.emitted == [True, False] and res.fallbacks == 1
    assert len(res.traces) == 2 and res.trace_tokens[0] == 1
    assert gen.full_ids[0] == gen.prompts[0] + [tid]
    assert gen.full_ids[1][-len(embedder._fallback):] == embedder._fallback
    # the vector of the emitted trace is the encoding of prompt + token
    np.testing.assert_allclose(res.vectors[0], embedder.forward_embeddings([gen.prompts[0] + [tid]])[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(res.vectors, axis=1), 1.0, atol=1e-5)


def test_direct_queries_report_no_fallbacks(embedder):
    res = embedder.encode_queries(["a query"])
    assert res.emitted is None and res.fallbacks == 0 and res.traces is None


def test_template_without_token_is_rejected(tiny_model_dir):
    bad = ModelConfig(templates=Templates(document="Passage: {text}"))
    with pytest.raises(ValueError, match="must end with"):
        Embedder.from_pretrained(tiny_model_dir, config=bad, precision="fp32")


def test_long_documents_are_truncated_but_keep_the_token(tiny_model_dir):
    e = Embedder.from_pretrained(tiny_model_dir, precision="fp32", max_doc_tokens=5)
    ids = e.tokenize_documents(["word " * 100])[0]
    assert ids[-1] == e.embed_token_id
    assert len(ids) == len(e._doc[0]) + 5 + len(e._doc[1])


def test_checksum_comes_from_manifest(embedder, tiny_model_dir):
    assert embedder.checksum == weights_sha256(tiny_model_dir)


@pytest.mark.parametrize("native, speedup, expected", [
    (True, 0.2, torch.bfloat16),    # AVX-512 BF16 / AMX: bf16 without asking the probe
    (False, 2.0, torch.bfloat16),   # emulated bf16 that measured 2x faster here
    (False, 0.25, torch.float32),   # emulated bf16 that measured 4x slower here (Cascade Lake, torch 2.13)
    (False, BF16_SPEEDUP - 0.01, torch.float32),
])
def test_auto_precision_policy_on_cpu(monkeypatch, native, speedup, expected):
    import searchr3.model.embedder as embedder_module

    monkeypatch.setattr(embedder_module, "cpu_supports_bf16", lambda: native)
    monkeypatch.setattr(embedder_module, "bf16_matmul_speedup", lambda: speedup)
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("fp32", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_auto_precision_is_bf16_on_cuda_and_bad_values_are_refused():
    assert auto_dtype(torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        resolve_dtype("fp16", torch.device("cpu"))


def test_bf16_probe_measures_a_ratio():
    speedup = bf16_matmul_speedup(tokens=8, hidden=16, intermediate=32, repeats=2)
    assert speedup > 0 and speedup != float("inf")
