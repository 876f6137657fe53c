"""Live FAISS document index for the RL stage: versioned vectors, incremental refresh, snapshots."""
from searchr3.index.config import IndexConfig, RefreshConfig
from searchr3.index.refresh import KnnGraph, RefreshPlan, RefreshPolicy, build_knn_graph, fidelity, refresh
from searchr3.index.snapshot import load_snapshot, read_manifest, save_snapshot
from searchr3.index.store import DocumentIndex, encode_in_batches

__all__ = [
    "DocumentIndex", "IndexConfig", "KnnGraph", "RefreshConfig", "RefreshPlan", "RefreshPolicy", "build_knn_graph",
    "encode_in_batches", "fidelity", "load_snapshot", "read_manifest", "refresh", "save_snapshot",
]
