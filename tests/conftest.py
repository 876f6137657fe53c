"""Test configuration: offline (ops/offline.env), deterministic, tiny models built here (no download)."""
import os

from ops.environment import apply_offline_env

apply_offline_env()  # before anything imports transformers, datasets, prefect or dvc
os.environ.setdefault("PREFECT_HOME", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".prefect"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A materialised tiny random model (embed token added), built once per session."""
    from searchr3.model.materialize import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    path = SHARED_DATA / "scifact"
    if not (path / "corpus.jsonl").exists():
        pytest.skip("../shared/data/scifact is absent (a fresh clone has no shared data)")
    return path
