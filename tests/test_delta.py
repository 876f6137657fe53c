"""searchr3.model.delta: a LoRA-trained model written as a low-rank difference from its base and rebuilt from it."""
from __future__ import annotations

import json

import pytest
import torch

from searchr3.errors import ArtifactError
from searchr3.model.delta import DELTA_FILE, load_delta, write_delta


def _trained_like(base, out, rank=4, seed=0):
    """What a LoRA trainer exports: the base with random LoRA updates (rank ``rank``) and a changed embed-token row,
    merged (``export_model``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from searchr3.model.config import EMBED_TOKEN
    from searchr3.train.common import export_model
    from searchr3.train.lora import LoRAConfig, wrap_lora

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    peft_model = wrap_lora(model, LoRAConfig(r=rank, alpha=2 * rank), tokenizer.convert_tokens_to_ids(EMBED_TOKEN))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return export_model(peft_model, tokenizer, out, {"stage": "test"})


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    return _trained_like(tiny_model_dir, tmp_path_factory.mktemp("delta") / "trained")


def _weights(folder):
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_a_lora_model_is_stored_as_its_rank_and_one_row_and_rebuilt_to_the_recorded_error(tiny_model_dir, trained,
                                                                                          tmp_path):
    manifest = write_delta(tiny_model_dir, trained, tmp_path / "d")
    kinds = {name: entry["kind"] for name, entry in manifest["tensors"].items()}
    assert {kinds[n] for n in kinds if "proj" in n} == {"low_rank"}
    assert {e["rank"] for e in manifest["tensors"].values() if e["kind"] == "low_rank"} == {4}
    embed = [n for n in kinds if "embed_tokens" in n]
    assert len(embed) == 1 and kinds[embed[0]] == "rows" and manifest["tensors"][embed[0]]["rows"] == 1
    assert not any("norm" in n for n in kinds)  # unchanged tensors are not stored
    model, _, checksum = load_delta(tmp_path / "d")
    target = _weights(trained)
    state = model.state_dict()
    for name, want in target.items():
        error = float((state[name] - want).abs().max())
        assert error <= manifest["tensors"].get(name, {}).get("max_abs_error", 0.0) + 1e-6, name
    assert checksum != manifest["weights_sha256"]  # the rebuilt weights are not byte-identical to the target's
    size = (tmp_path / "d" / DELTA_FILE).stat().st_size
    assert size < sum(p.stat().st_size for p in trained.glob("*.safetensors")) / 3


def test_the_embedder_loads_a_delta_folder_and_embeds_as_the_trained_model_does(tiny_model_dir, trained, tmp_path):
    from searchr3.model.embedder import Embedder

    write_delta(tiny_model_dir, trained, tmp_path / "d")
    docs = ["solar panels make electricity", "a cat chases a mouse", "bread bakes at high heat"]
    want = Embedder.from_pretrained(trained, precision="fp32").encode_documents(docs)
    got = Embedder.from_pretrained(tmp_path / "d", precision="fp32").encode_documents(docs)
    cosine = (torch.as_tensor(want) * torch.as_tensor(got)).sum(-1) / (
        torch.as_tensor(want).norm(dim=-1) * torch.as_tensor(got).norm(dim=-1))
    assert float(cosine.min()) >= 0.999
    base_vectors = Embedder.from_pretrained(tiny_model_dir, precision="fp32").encode_documents(docs)
    assert not torch.allclose(torch.as_tensor(base_vectors), torch.as_tensor(want), atol=1e-3)  # the delta matters


def test_a_delta_refuses_another_base_and_a_damaged_file(tiny_model_dir, tiny_model_dir_b, trained, tmp_path):
    write_delta(tiny_model_dir, trained, tmp_path / "d")
    with pytest.raises(ArtifactError) as err:
        load_delta(tmp_path / "d", base=tiny_model_dir_b)
    assert err.value.rule == "checksum_mismatch" and "written against" in str(err.value)
    with pytest.raises(ArtifactError) as err:
        load_delta(tmp_path / "d", base=tmp_path / "nowhere")
    assert err.value.rule == "model_not_found"
    blob = bytearray((tmp_path / "d" / DELTA_FILE).read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "d" / DELTA_FILE).write_bytes(bytes(blob))
    with pytest.raises(ArtifactError) as err:
        load_delta(tmp_path / "d")
    assert err.value.rule == "checksum_mismatch" and DELTA_FILE in str(err.value)


def test_a_full_fine_tune_is_stored_dense(tiny_model_dir, tmp_path):
    from searchr3.model.materialize import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    save_model(model, AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path / "full", {})
    manifest = write_delta(tiny_model_dir, tmp_path / "full", tmp_path / "d")
    assert {e["kind"] for e in manifest["tensors"].values()} == {"dense"}
    rebuilt = load_delta(tmp_path / "d")[0].state_dict()
    for name, want in _weights(tmp_path / "full").items():
        assert float((rebuilt[name] - want).abs().max()) < 1e-4, name


def test_the_commands_write_a_delta_and_rescore_it(tiny_model_dir, trained, tmp_path, capsys):
    from searchr3.cli import main

    (tmp_path / "toy" / "qrels").mkdir(parents=True)
    (tmp_path / "toy" / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d, "title": "", "text": t}) + "\n"
        for d, t in {"solar": "solar panels make electricity", "cats": "a cat chases a mouse"}.items()))
    (tmp_path / "toy" / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "solar power"}) + "\n")
    (tmp_path / "toy" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\tsolar\t1\n")
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    assert main(["model", "delta", str(trained), "--base", str(tiny_model_dir), "--out", str(tmp_path / "d")]) == 0
    printed = capsys.readouterr().out
    assert "low_rank" in printed and "ranks 4" in printed and "rescore: searchr3 evaluate" in printed
    results = []
    for model, extra in ((str(trained), []), (str(tmp_path / "d"), ["--base", str(tiny_model_dir)])):
        out = tmp_path / f"{len(results)}.json"
        assert main(["--params", str(params), "evaluate", "--model", model, "--dataset", str(tmp_path / "toy"),
                     "--out", str(out), *extra]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["ndcg@10"] == results[1]["ndcg@10"]
    assert f"--base {tiny_model_dir}" in capsys.readouterr().out  # the reproduce line carries the base
    assert main(["evaluate", "--model", "bm25", "--dataset", str(tmp_path / "toy"), "--base", "x"]) == 2


def test_apply_writes_the_rebuilt_model_as_a_verified_folder_that_embeds_as_the_delta(tiny_model_dir, trained, tmp_path,
                                                                                        capsys):
    from searchr3.cli import main
    from searchr3.model.embedder import Embedder
    from searchr3.model.materialize import verify_model

    write_delta(tiny_model_dir, trained, tmp_path / "d")
    assert main(["model", "apply", str(tmp_path / "d"), "--base", str(tiny_model_dir), "--out",
                 str(tmp_path / "m")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert verify_model(tmp_path / "m") is not None  # sealed: every file sha256-checked
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["delta"] == str(tmp_path / "d") and manifest["embed_token_id"] > 0
    docs = ["solar panels make electricity", "a cat chases a mouse"]
    want = Embedder.from_pretrained(tmp_path / "d", base=tiny_model_dir, precision="fp32").encode_documents(docs)
    got = Embedder.from_pretrained(tmp_path / "m", precision="fp32").encode_documents(docs)
    assert torch.equal(torch.as_tensor(want), torch.as_tensor(got))
    assert main(["model", "apply", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 4
    assert not (tmp_path / "x").exists()
