"""Index snapshots on disk (``indexes/<name>/``), written atomically.

Layout::

    index.faiss     faiss.write_index of the live index
    doc_ids.json    list of string doc ids; position = the int64 FAISS label
    versions.npy    int64 policy version that encoded each vector (same order)
    manifest.json   model_checksum, kind, dim, count, created (UTC ISO), versions min/max, + caller's fields,
                    and ``files``: the sha256 and size of the three files above (``searchr3.integrity.seal``)

The snapshot is written with ``searchr3.files.atomic_directory`` (built in a temporary sibling folder,
swapped into place), so a reader sees the old snapshot or the new one, never a half-written folder.
Document texts are not stored (they live in ``data/``); pass them to ``load_snapshot`` to refresh.

``load_snapshot`` verifies the three files against the manifest (``searchr3.integrity.verify_artifact``)
before it reads them, and checks that every stored vector has unit norm (within 1e-3), so an inner-product
score outside [-1, 1] cannot come out of a loaded snapshot; a failure is an ArtifactError (exit 4) naming
the file.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import faiss
import numpy as np

from searchr3.data.errors import ArtifactError
from searchr3.files import atomic_directory, json_text
from searchr3.integrity import MANIFEST, seal, verify_artifact
from searchr3.integrity import read_manifest as read_artifact_manifest
from searchr3.index.store import DocumentIndex

INDEX_FILE = "index.faiss"
IDS_FILE = "doc_ids.json"
VERSIONS_FILE = "versions.npy"
MANIFEST_FILE = MANIFEST
FORMAT = 1


def save_snapshot(index: DocumentIndex, out_dir: str | Path, manifest: dict) -> Path:
    """Write ``index`` to ``out_dir``; ``manifest`` must hold ``model_checksum`` and may add any JSON fields."""
    if index.faiss_index is None:
        raise ValueError("cannot snapshot an empty index: call build() first")
    if not manifest.get("model_checksum"):
        raise ValueError("manifest must include model_checksum (the Embedder.checksum that encoded the vectors)")
    out_dir = Path(out_dir)
    full = {
        **manifest,
        "format": FORMAT,
        "kind": index.kind,
        "nlist": index.nlist,
        "nprobe": index.nprobe,
        "hnsw_m": index.hnsw_m,
        "ef_search": index.ef_search,
        "dim": index.dim,
        "count": len(index),
        "version_min": int(index.versions.min()),
        "version_max": int(index.versions.max()),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_directory(out_dir) as tmp:
        faiss.write_index(index.faiss_index, str(tmp / INDEX_FILE))
        (tmp / IDS_FILE).write_text(json.dumps(index.doc_ids))
        np.save(tmp / VERSIONS_FILE, index.versions)
        (tmp / MANIFEST_FILE).write_text(json_text(seal(tmp, full), sort_keys=True, ascii_only=True))
    return out_dir


def read_manifest(snapshot_dir: str | Path) -> dict:
    """The snapshot's manifest (parsed by the one artifact-manifest reader), with the keys a snapshot needs."""
    path = Path(snapshot_dir) / MANIFEST_FILE
    if not path.exists():
        raise ArtifactError(path, None, "snapshot-missing-file", "manifest.json not found; not an index snapshot")
    manifest = read_artifact_manifest(snapshot_dir)
    for key in ("kind", "dim", "count", "model_checksum"):
        if key not in manifest:
            raise ArtifactError(path, None, "manifest-missing-key", f"{key!r} is required")
    return manifest


def load_snapshot(snapshot_dir: str | Path, texts: dict[str, str] | None = None) -> DocumentIndex:
    """Load a searchable ``DocumentIndex``; give ``texts`` (doc_id -> text) to re-encode it later."""
    snapshot_dir = Path(snapshot_dir)
    manifest = read_manifest(snapshot_dir)
    for name in (INDEX_FILE, IDS_FILE, VERSIONS_FILE):
        if not (snapshot_dir / name).exists():
            raise ArtifactError(snapshot_dir / name, None, "snapshot-missing-file", f"{name} not found")
    verify_artifact(snapshot_dir, manifest, require=(INDEX_FILE, IDS_FILE, VERSIONS_FILE))
    try:
        doc_ids = json.loads((snapshot_dir / IDS_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(snapshot_dir / IDS_FILE, err.lineno, "invalid-json", err.msg) from err
    if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids):
        raise ArtifactError(snapshot_dir / IDS_FILE, None, "doc-ids-not-strings", "expected a JSON list of strings")
    try:
        versions = np.load(snapshot_dir / VERSIONS_FILE, allow_pickle=False)
    except ValueError as err:
        raise ArtifactError(snapshot_dir / VERSIONS_FILE, None, "unreadable_file", str(err)) from err
    try:
        faiss_index = faiss.read_index(str(snapshot_dir / INDEX_FILE))
    except RuntimeError as err:
        raise ArtifactError(snapshot_dir / INDEX_FILE, None, "unreadable_file",
                            " ".join(str(err).split())[:200]) from err
    counts = {"manifest count": manifest["count"], "index vectors": int(faiss_index.ntotal),
              "doc ids": len(doc_ids), "versions": len(versions)}
    if len(set(counts.values())) != 1:
        raise ArtifactError(snapshot_dir, None, "snapshot-count-mismatch", ", ".join(f"{k}={v}" for k, v in counts.items()))
    if int(faiss_index.d) != manifest["dim"]:
        raise ArtifactError(snapshot_dir / MANIFEST_FILE, None, "snapshot-dim-mismatch",
                        f"manifest dim {manifest['dim']} but index dim {faiss_index.d}")
    index = DocumentIndex(kind=manifest["kind"], nlist=manifest.get("nlist", 1024), nprobe=manifest.get("nprobe", 16),
                          hnsw_m=manifest.get("hnsw_m", 32), ef_search=manifest.get("ef_search", 128))
    index.attach(faiss_index, doc_ids, versions)
    check_unit_norms(index, snapshot_dir / INDEX_FILE)
    if texts:
        index.texts = dict(texts)
    return index


def check_unit_norms(index: DocumentIndex, where: str | Path, tolerance: float = 1e-3, chunk: int = 4096) -> None:
    """Every stored vector is finite with norm 1 (± ``tolerance``), so inner-product scores stay in [-1, 1];
    a flat index's labels are exactly the doc_ids positions."""
    labels = np.arange(len(index), dtype=np.int64)
    if isinstance(index.faiss_index, faiss.IndexIDMap):  # flat: the label of every vector is its doc_ids position
        stored = np.sort(faiss.vector_to_array(index.faiss_index.id_map))
        if not np.array_equal(stored, labels):
            raise ArtifactError(where, None, "snapshot-bad-labels",
                                "the FAISS labels are not 0..count-1, so results would name the wrong documents")
    for start in range(0, len(labels), chunk):
        part = labels[start:start + chunk]
        vectors = np.asarray(index.faiss_index.reconstruct_batch(part), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > tolerance))
        if len(bad):
            j = int(part[bad[0]])
            raise ArtifactError(where, None, "vector_not_normalised",
                                f"{len(bad)} stored vector(s) without unit norm (first: document "
                                f"{index.doc_ids[j]!r}, norm {norms[bad[0]]:.6g}); scores would leave [-1, 1]")
