"""A trained model as a small difference from its base: write one from two model folders, load one back.

A LoRA-trained model is its base plus a low-rank change in each adapted matrix and a few changed rows (the embed
token's). ``write_delta`` recovers that difference from the two folders, tensor by tensor:

- ``low_rank``: an SVD of the difference, the rank read off its singular values (kept while
  ``s_i > rtol * s_max``; a merged rank-16 LoRA gives 16, SFT then RL on top of it 32); stored as fp16 factors
  ``B`` (out x r) and ``A`` (r x in), the singular values split evenly between them;
- ``rows``: only a few rows changed (the embed token's row of the embedding matrix): their indices and fp32 values;
- ``dense``: anything else (1-D tensors, or every matrix after full fine-tuning): the fp16 difference.

So a run's weights travel in a few MB instead of the whole model, and a reviewer rescores them on a base model
everyone rebuilds the same way (``searchr3 model materialize``). ``load_delta`` rebuilds the model on the base its
manifest names, after checking the base's weights sha256. The rebuilt weights match the target to the largest
absolute error the manifest records per tensor (fp16 rounding of the difference, not of the weights).

Folder layout: ``delta.safetensors`` plus ``manifest.json`` (sealed like a model folder: ``kind: delta``, the base
path as given and its weights sha256, the target's weights sha256, one entry per changed tensor).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from searchr3.errors import ArtifactError
from searchr3.files import atomic_directory, json_text
from searchr3.integrity import MANIFEST, read_manifest, seal, verify_artifact
from searchr3.model.loading import LOAD_LOCK
from searchr3.model.materialize import model_checksum

DELTA_FILE = "delta.safetensors"
RTOL = 1e-4  # singular values below RTOL * the largest are rounding noise of the fp32 weights


def is_delta(folder: str | Path) -> bool:
    return (Path(folder) / DELTA_FILE).is_file()


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    if not tensors:
        raise ArtifactError(folder, None, "missing_file", "no *.safetensors weights in the model folder")
    return tensors


def _low_rank(d: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(B, A) with B @ A ~= d, or None when a low-rank form is not smaller than ``d`` itself."""
    u, s, vh = torch.linalg.svd(d.double(), full_matrices=False)
    rank = int((s > rtol * s[0]).sum())
    m, n = d.shape
    if rank * (m + n) >= m * n:
        return None
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(torch.float16), (root[:, None] * vh[:rank]).to(torch.float16)


def _encode(name: str, d: torch.Tensor, rtol: float) -> tuple[dict, dict[str, torch.Tensor], torch.Tensor]:
    """One changed tensor as (manifest entry, stored tensors, the difference they rebuild)."""
    if d.dim() == 2:
        rows = torch.nonzero(d.abs().amax(dim=1)).flatten()
        if rows.numel() * 8 <= d.shape[0]:
            return ({"kind": "rows", "rows": rows.numel()},
                    {f"{name}.rows": rows, f"{name}.values": d[rows].float()}, _rows_diff(d, rows))
        factors = _low_rank(d, rtol)
        if factors is not None:
            b, a = factors
            return {"kind": "low_rank", "rank": a.shape[0]}, {f"{name}.B": b, f"{name}.A": a}, b.float() @ a.float()
    dense = d.to(torch.float16)
    return {"kind": "dense"}, {f"{name}.dense": dense}, dense.float()


def _rows_diff(d: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(d, dtype=torch.float32)
    out[rows] = d[rows].float()
    return out


def write_delta(base: str | Path, model: str | Path, out: str | Path, *, rtol: float = RTOL) -> dict:
    """Write ``out`` (``delta.safetensors`` + sealed ``manifest.json``) such that base + delta ~= model; returns
    the manifest. Both folders must hold the same tensors with the same shapes (same architecture, same vocab)."""
    from safetensors.torch import save_file

    base, model = Path(base), Path(model)
    base_sha = model_checksum(base)
    model_sha = model_checksum(model)
    before, after = _tensors(base), _tensors(model)
    if before.keys() != after.keys():
        missing = sorted(before.keys() ^ after.keys())
        raise ArtifactError(model, None, "architecture_mismatch",
                            f"{len(missing)} tensors differ from the base's {base} (first: {missing[0]})")
    stored: dict[str, torch.Tensor] = {}
    entries: dict[str, dict] = {}
    for name in sorted(after):
        b, a = before[name], after[name]
        if b.shape != a.shape:
            raise ArtifactError(model, None, "architecture_mismatch",
                                f"{name}: shape {tuple(a.shape)} but the base's is {tuple(b.shape)}")
        d = a.float() - b.float()
        if not torch.any(d):
            continue
        entry, tensors, rebuilt = _encode(name, d, rtol)
        entry["max_abs_error"] = float((rebuilt - d).abs().max())
        entry["relative_error"] = float((rebuilt - d).norm() / d.norm())
        entries[name] = entry
        stored.update(tensors)
    manifest = {"kind": "delta", "base": str(base), "base_weights_sha256": base_sha, "weights_sha256": model_sha,
                "model": str(model), "rtol": rtol, "tensors": entries,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with atomic_directory(out) as tmp:
        save_file({k: v.contiguous() for k, v in stored.items()}, str(tmp / DELTA_FILE))
        manifest = seal(tmp, manifest)
        (tmp / MANIFEST).write_text(json_text(manifest, ascii_only=True))
    return manifest


def delta_checksum(manifest: dict) -> str:
    """The rebuilt model's identity (for document-embedding caches): its base and the delta file, not the target's
    weights sha256 (the rebuilt weights differ from the target's by the fp16 rounding of the difference)."""
    text = manifest["base_weights_sha256"] + manifest["files"][DELTA_FILE]["sha256"]
    return hashlib.sha256(text.encode()).hexdigest()


def base_of(manifest: dict, base: str | Path | None = None) -> Path:
    """The base model a delta is rebuilt on: ``base`` when given, else the one its manifest names."""
    return Path(base if base is not None else manifest["base"])


def load_delta(folder: str | Path, base: str | Path | None = None, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu"):
    """(model, tokenizer, checksum): the base named by the manifest (or ``base``) with the delta applied.

    Raises ArtifactError (exit 4) for a damaged delta folder or a base whose weights are not the ones the delta
    was written against."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    manifest = verify_artifact(folder, read_manifest(folder), require=(DELTA_FILE,))
    if manifest.get("kind") != "delta" or not isinstance(manifest.get("tensors"), dict) \
            or not isinstance(manifest.get("base_weights_sha256"), str):
        raise ArtifactError(folder / MANIFEST, None, "invalid-json",
                            "not a delta manifest (needs kind: delta, base_weights_sha256 and tensors)")
    base = base_of(manifest, base)
    if not (base / "config.json").is_file():
        raise ArtifactError(base, None, "model_not_found",
                            f"the base model of delta {folder} (rebuild it with `searchr3 model materialize --out {base}`,"
                            " or pass --base)")
    base_sha = model_checksum(base)
    if base_sha != manifest["base_weights_sha256"]:
        raise ArtifactError(base, None, "checksum_mismatch",
                            f"weights sha256 {base_sha[:12]} but delta {folder} was written against "
                            f"{manifest['base_weights_sha256'][:12]}")
    stored = load_file(str(folder / DELTA_FILE))
    with LOAD_LOCK:  # from_pretrained is not thread-safe (searchr3.model.loading)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(base)
    state = model.state_dict()
    with torch.no_grad():
        for name, entry in manifest["tensors"].items():
            if name not in state:
                raise ArtifactError(folder / MANIFEST, None, "architecture_mismatch",
                                    f"{name} is not a tensor of the base model {base}")
            target = state[name]
            if entry["kind"] == "low_rank":
                target.add_(stored[f"{name}.B"].float() @ stored[f"{name}.A"].float())
            elif entry["kind"] == "rows":
                target[stored[f"{name}.rows"]] += stored[f"{name}.values"]
            else:
                target.add_(stored[f"{name}.dense"].float())
    return model.to(device=device, dtype=dtype).eval(), tokenizer, delta_checksum(manifest)


def apply_delta(folder: str | Path, out: str | Path, base: str | Path | None = None) -> dict:
    """Write the model a delta rebuilds (``load_delta``) as a model folder at ``out`` (sealed manifest: the base's
    fields, plus the delta it came from), e.g. to train on from a committed delta; returns the manifest."""
    from searchr3.model.materialize import save_model

    model, tokenizer, checksum = load_delta(folder, base)
    base = base_of(read_manifest(Path(folder)), base)
    inherited = {k: v for k, v in read_manifest(base).items()
                 if k not in ("files", "weights_sha256", "created")} if (base / MANIFEST).is_file() else {}
    manifest = dict(inherited, base_model=str(base), delta=str(folder), delta_checksum=checksum,
                    created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    save_model(model, tokenizer, out, manifest)
    return read_manifest(Path(out))


def describe(manifest: dict) -> str:
    """One line: what the delta holds."""
    kinds: dict[str, int] = {}
    for entry in manifest["tensors"].values():
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    ranks = sorted({e["rank"] for e in manifest["tensors"].values() if e["kind"] == "low_rank"})
    size = manifest["files"][DELTA_FILE].get("size")
    worst = max((e["max_abs_error"] for e in manifest["tensors"].values()), default=0.0)
    parts = [f"{n} {k}" for k, n in sorted(kinds.items())]
    return (f"{len(manifest['tensors'])} changed tensors ({', '.join(parts) or 'none'}"
            f"{'; ranks ' + '/'.join(map(str, ranks)) if ranks else ''})"
            f"{f', {size / 1e6:.1f} MB' if size else ''}, largest weight error {worst:.2e}")

