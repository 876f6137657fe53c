"""Model folders verify themselves (searchr3.integrity through materialize.verify_model): the embedder, release
verification and `searchr3 model verify` refuse a damaged file, naming it."""
from __future__ import annotations

import json
import shutil

import pytest

from searchr3.cli import main
from searchr3.errors import ArtifactError
from searchr3.model.embedder import Embedder
from searchr3.model.materialize import verify_model, weights_sha256


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def _flip(path, offset, n=1):
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_sealed_model_verifies_and_names_its_weights(model_copy):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(manifest["files"])
    assert verify_model(model_copy) == weights_sha256(model_copy) == manifest["weights_sha256"]
    assert Embedder.from_pretrained(model_copy, precision="fp32").checksum == manifest["weights_sha256"]


def test_4kb_flipped_inside_the_weights_is_refused_before_loading(model_copy, capsys):
    weights = model_copy / "model.safetensors"
    assert main(["model", "verify", str(model_copy)]) == 0  # verified once: the fast path is warm
    _flip(weights, weights.stat().st_size // 3, 4096)
    with pytest.raises(ArtifactError, match=r"model/model.safetensors: checksum_mismatch") as err:
        Embedder.from_pretrained(model_copy, precision="fp32")
    assert err.value.exit_code == 4
    assert main(["model", "verify", str(model_copy)]) == 4
    assert "model.safetensors: checksum_mismatch" in capsys.readouterr().err


@pytest.mark.parametrize("damage, rule", [
    (lambda m: (m / "tokenizer.json").unlink(), "tokenizer.json: missing_file"),
    (lambda m: shutil.copy(m / "model.safetensors", m / "extra.safetensors"), "unlisted_file: extra.safetensors"),
    (lambda m: (m / "config.json").write_text((m / "config.json").read_text().replace("silu", "gelu")),
     "config.json: (size|checksum)_mismatch"),
])
def test_any_file_the_loader_reads_is_covered(model_copy, damage, rule):
    damage(model_copy)
    with pytest.raises(ArtifactError, match=rule):
        verify_model(model_copy)


def test_a_folder_without_a_manifest_is_a_plain_hugging_face_folder(model_copy):
    (model_copy / "manifest.json").unlink()
    assert verify_model(model_copy) is None
    assert Embedder.from_pretrained(model_copy, precision="fp32").checksum == weights_sha256(model_copy)
