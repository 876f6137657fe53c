"""A release loaded into memory for serving: verified, then model + index + documents + BM25.

:func:`load_release` runs ``searchr3.release.require_valid`` first (files agree with each other), loads
everything, then encodes one query as a smoke test (the model's vectors must have the index's
dimension). Anything that fails raises :class:`searchr3.release.ReleaseInvalid`, so a caller keeps
what it was serving. A loaded release is never modified afterwards: requests read it from many threads.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from searchr3.data.beir import join_title
from searchr3.release import Check, ReleaseInvalid, ReleasePaths, read_documents, require_valid

MODES = ("dense", "bm25", "hybrid")


@dataclass
class LoadedRelease:
    id: str
    paths: ReleasePaths
    embedder: object  # searchr3.model.embedder.Embedder
    index: object  # searchr3.index.store.DocumentIndex
    documents: dict[str, dict]  # doc_id -> {"title", "text"}
    bm25: object  # searchr3.data.bm25.Bm25Index over the indexed documents, in index.doc_ids order
    checks: list[Check]
    default_mode: str = "dense"
    load_s: float = 0.0
    loaded_at: float = field(default_factory=time.time)

    @property
    def record(self) -> dict:
        return self.paths.record or {}

    def info(self) -> dict:
        """What ``GET /release`` shows: the production record's facts and this process's view of them."""
        r = self.record
        return {
            "release": self.id,
            "system": r.get("system"),
            "default_mode": self.default_mode,
            "model": str(self.paths.model),
            "index": str(self.paths.index),
            "corpus": str(self.paths.corpus) if self.paths.corpus else None,
            "model_checksum": self.embedder.checksum,
            "documents": len(self.index),
            "git_rev": r.get("git_rev"),
            "git_dirty": r.get("git_dirty"),
            "promoted_at": r.get("promoted_at"),
            "run": r.get("run"),
            "gate": r.get("gate"),
            "metrics": r.get("metrics") or {},
            "model_card": r.get("model_card"),
            "verification": [c.as_dict() for c in self.checks],
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "load_s": round(self.load_s, 2),
        }


def default_mode(record: dict | None) -> str:
    """``hybrid`` when the promoted system is a fusion with BM25 (``rl+bm25``), else ``dense``."""
    from searchr3.eval.evaluate import HYBRID_SUFFIX

    system = (record or {}).get("system") or ""
    return "hybrid" if system.split("+reasoning")[0].endswith(HYBRID_SUFFIX) else "dense"


def load_release(paths: ReleasePaths, model_config=None, bm25_config=None) -> LoadedRelease:
    """Verify, load and smoke-test the release at ``paths``; raises ReleaseInvalid naming what failed."""
    from searchr3.data.bm25 import Bm25Index
    from searchr3.index.snapshot import load_snapshot
    from searchr3.model.config import ModelConfig
    from searchr3.model.embedder import Embedder

    started = time.perf_counter()
    checks = require_valid(paths)
    try:
        embedder = Embedder.from_pretrained(paths.model, config=copy.deepcopy(model_config or ModelConfig()))
        index = load_snapshot(paths.index)
        documents = read_documents(paths.corpus)
        ids = list(index.doc_ids)
        bm25 = Bm25Index([join_title(documents[d]["title"], documents[d]["text"]) for d in ids], bm25_config)
        probe = embedder.encode_queries(["smoke test query"]).vectors
    except Exception as err:  # noqa: BLE001 - any failure to load means: do not serve this release
        raise ReleaseInvalid(paths.release, [*checks, Check("load", False, f"{type(err).__name__}: {err}")]) from err
    if probe.shape[1] != index.dim:
        raise ReleaseInvalid(paths.release, [*checks, Check("load", False, f"the model's vectors have dimension "
                                                                           f"{probe.shape[1]}, the index's {index.dim}")])
    checks = [*checks, Check("load", True, f"model, {len(index)} vectors, {len(documents)} documents and BM25 loaded; "
                                           "a query encodes to the index's dimension")]
    return LoadedRelease(id=paths.release, paths=paths, embedder=embedder, index=index, documents=documents,
                         bm25=bm25, checks=checks, default_mode=default_mode(paths.record),
                         load_s=time.perf_counter() - started)
