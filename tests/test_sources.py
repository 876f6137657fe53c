"""The sources stage (searchr3.sources): a source's content, not its name, decides whether data is rebuilt."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from searchr3.config import ConfigError
from searchr3.data.config import DataConfig
from searchr3.data.errors import DataError
from searchr3.sources import count_rows, fingerprint_sources


def beir(folder: Path, queries: int) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": f"doc {i}"}) + "\n"
                                                 for i in range(30)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n"
                                                  for i in range(queries)))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                                + "".join(f"q{i}\td{i}\t1\n" for i in range(queries)))
    return folder


def config(*sources: dict) -> DataConfig:
    return DataConfig(sources=list(sources))


def test_rows_appended_to_a_beir_source_change_its_fingerprint_and_counts(tmp_path):
    folder = beir(tmp_path / "toy", queries=10)
    cfg = config({"type": "beir", "path": "toy", "train_split": "train", "eval_splits": []})
    before = fingerprint_sources(cfg, root=tmp_path)
    assert fingerprint_sources(cfg, root=tmp_path) == before  # reading twice changes nothing
    entry = before["sources"]["toy"]
    assert entry["rows"] == {"corpus.jsonl": 30, "queries.jsonl": 10, "qrels/train.tsv": 10}
    assert entry["files"] == 3 and entry["bytes"] > 0
    with open(folder / "queries.jsonl", "a") as handle:
        handle.write(json.dumps({"_id": "q10", "text": "query 10"}) + "\n")
    with open(folder / "qrels" / "train.tsv", "a") as handle:
        handle.write("q10\td10\t1\n")
    after = fingerprint_sources(cfg, root=tmp_path)
    assert after["fingerprint"] != before["fingerprint"]
    assert after["sources"]["toy"]["rows"] == {"corpus.jsonl": 30, "queries.jsonl": 11, "qrels/train.tsv": 11}


def test_hidden_files_and_timestamps_do_not_count(tmp_path):
    folder = beir(tmp_path / "toy", queries=5)
    cfg = config({"type": "beir", "path": "toy", "train_split": "train", "eval_splits": []})
    before = fingerprint_sources(cfg, root=tmp_path)["fingerprint"]
    (folder / ".DS_Store").write_text("junk")
    (folder / "queries.jsonl").touch()
    assert fingerprint_sources(cfg, root=tmp_path)["fingerprint"] == before


def test_a_gzipped_file_counts_its_lines(tmp_path):
    path = tmp_path / "nq.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"question": "a"}\n{"question": "b"}\n\n')
    assert count_rows(path) == 2
    out = fingerprint_sources(config({"type": "nq_open", "path": "nq.jsonl.gz", "eval_splits": []}), root=tmp_path)
    assert out["sources"]["nq_open"]["rows"] == {"nq.jsonl.gz": 2}


def test_a_hub_source_must_pin_a_revision(tmp_path):
    with pytest.raises(ConfigError, match=r"data.sources\[0\].*mteb/scifact.*revision"):
        fingerprint_sources(config({"type": "hf", "name": "mteb/scifact"}), root=tmp_path)
    pinned = {"type": "hf", "name": "mteb/scifact", "options": {"revision": "abc"}}
    first = fingerprint_sources(config(pinned), root=tmp_path)
    moved = fingerprint_sources(config({**pinned, "options": {"revision": "def"}}), root=tmp_path)
    assert first["sources"]["scifact"]["revision"] == "abc" and first["fingerprint"] != moved["fingerprint"]


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(DataError, match=r"gone.*missing_file.*data.sources\[0\]"):
        fingerprint_sources(config({"type": "beir", "path": "gone", "eval_splits": ["test"]}), root=tmp_path)


def test_codesearch_is_identified_by_the_python_that_builds_it(tmp_path):
    import platform

    out = fingerprint_sources(config({"type": "codesearch", "eval_splits": ["test"]}), root=tmp_path)
    assert out["sources"]["codesearch"]["python"] == platform.python_version()


def test_the_sources_stage_writes_metrics_sources_json(tmp_path, monkeypatch):
    from searchr3 import stages

    beir(tmp_path / "toy", queries=4)
    monkeypatch.chdir(tmp_path)
    params = {"data": {"sources": [{"type": "beir", "path": "toy", "train_split": "train", "eval_splits": []}]}}
    summary = stages.sources(params)
    assert json.loads((tmp_path / "metrics" / "sources.json").read_text()) == summary
