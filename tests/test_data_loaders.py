"""Loaders (BEIR, HF datasets, NQ-open) and the data stage (build, mixing, atomic output)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from searchr3.config import ConfigError
from searchr3.data.beir import load_beir, save_beir
from searchr3.data.build import build_data, eval_set_dirs, load_eval_set, load_train, load_train_corpus, share_counts
from searchr3.data.config import DataConfig
from searchr3.data.errors import DataError
from searchr3.data.hf import dataset_card, load_hf
from searchr3.data.nq import load_nq_open

SHARED = Path(__file__).parents[2] / "shared" / "data"

CORPUS = [
    {"_id": "d1", "title": "Apples", "text": "Apples are red fruit."},
    {"_id": "d2", "title": "", "text": "Bananas are yellow."},
    {"_id": "d3", "text": "Cherries are small."},
]
QUERIES = [{"_id": "q1", "text": "red fruit"}, {"_id": "q2", "text": "yellow fruit"}, {"_id": "q3", "text": "unjudged"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td3\t0\n"


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def write_beir(folder: Path, corpus: bytes | None = None, queries: bytes | None = None, qrels: bytes | None = None,
               split: str = "test") -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_bytes(jsonl(CORPUS) if corpus is None else corpus)
    (folder / "queries.jsonl").write_bytes(jsonl(QUERIES) if queries is None else queries)
    (folder / "qrels" / f"{split}.tsv").write_bytes(QRELS.encode() if qrels is None else qrels)
    return folder


# ---------------------------------------------------------------- BEIR


def test_load_beir_joins_title_and_keeps_judged_queries(tmp_path):
    rs = load_beir(write_beir(tmp_path / "toy"), "test")
    assert rs.name == "toy"
    assert rs.corpus == {"d1": "Apples\nApples are red fruit.", "d2": "Bananas are yellow.",
                         "d3": "Cherries are small."}
    assert rs.queries == {"q1": "red fruit", "q2": "yellow fruit"}  # q3 has no judgement in this split
    assert rs.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 0}}
    assert rs.judged_queries() == {"q1": "red fruit", "q2": "yellow fruit"}


def test_save_beir_round_trips(tmp_path):
    rs = load_beir(write_beir(tmp_path / "toy"), "test")
    again = load_beir(save_beir(rs, tmp_path / "copy", "dev"), "dev")
    assert (again.corpus, again.queries, again.qrels) == (rs.corpus, rs.queries, rs.qrels)


BAD_BEIR = {
    # case: (file to overwrite, its bytes, rule, file named in the error, line)
    "empty corpus": ("corpus.jsonl", b"", "empty_file", "corpus.jsonl", None),
    "blank-only queries": ("queries.jsonl", b"\n  \n", "empty_file", "queries.jsonl", None),
    "malformed json": ("corpus.jsonl", jsonl(CORPUS[:1]) + b'{"_id": "d2", "text": \n', "malformed_json",
                       "corpus.jsonl", 2),
    "json array line": ("queries.jsonl", b'["q1", "red"]\n', "malformed_json", "queries.jsonl", 1),
    "missing _id": ("corpus.jsonl", jsonl([CORPUS[0], {"title": "x", "text": "no id"}]), "missing_field",
                    "corpus.jsonl", 2),
    "empty _id": ("queries.jsonl", jsonl([{"_id": " ", "text": "blank id"}]), "empty_field", "queries.jsonl", 1),
    "missing text": ("queries.jsonl", jsonl([QUERIES[0], {"_id": "q2"}]), "missing_field", "queries.jsonl", 2),
    "empty text": ("corpus.jsonl", jsonl([CORPUS[0], {"_id": "d2", "title": "T", "text": ""}]), "empty_field",
                   "corpus.jsonl", 2),
    "text not a string": ("corpus.jsonl", jsonl([{"_id": "d1", "text": 7}]), "field_type", "corpus.jsonl", 1),
    "duplicate ids": ("corpus.jsonl", jsonl(CORPUS + [{"_id": "d2", "text": "again"}]), "duplicate_id",
                      "corpus.jsonl", 4),
    "non-utf8 bytes": ("corpus.jsonl", jsonl(CORPUS[:1]) + b'{"_id": "d2", "text": "caf\xe9"}\n', "non_utf8",
                       "corpus.jsonl", 2),
    "qrels column count": ("qrels/test.tsv", b"query-id\tcorpus-id\tscore\nq1\td1\n", "qrels_columns",
                           "test.tsv", 2),
    "qrels score not int": ("qrels/test.tsv", b"query-id\tcorpus-id\tscore\nq1\td1\t0.5\n", "qrels_score",
                            "test.tsv", 2),
    "qrels unknown doc": ("qrels/test.tsv", b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td404\t1\n",
                          "qrels_unknown_doc", "test.tsv", 3),
    "qrels unknown query": ("qrels/test.tsv", b"query-id\tcorpus-id\tscore\nq404\td1\t1\n", "qrels_unknown_query",
                            "test.tsv", 2),
    "qrels duplicate judgement": ("qrels/test.tsv", b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n",
                                  "duplicate_judgement", "test.tsv", 3),
}


@pytest.mark.parametrize("case", sorted(BAD_BEIR))
def test_load_beir_names_file_line_and_rule(tmp_path, case):
    name, data, rule, filename, line = BAD_BEIR[case]
    folder = write_beir(tmp_path / "bad")
    (folder / name).write_bytes(data)
    with pytest.raises(DataError) as info:
        load_beir(folder, "test")
    err = info.value
    assert (err.rule, Path(err.path).name, err.line) == (rule, filename, line)
    where = err.path if line is None else f"{err.path}:{line}"
    assert str(err).startswith(f"{where}: {rule}")


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_load_beir_missing_file(tmp_path, missing):
    folder = write_beir(tmp_path / "bad")
    (folder / missing).unlink()
    with pytest.raises(DataError) as info:
        load_beir(folder, "test")
    assert info.value.rule == "missing_file" and info.value.path.endswith(missing)


def test_load_beir_accepts_numeric_ids(tmp_path):
    folder = write_beir(tmp_path / "num", corpus=jsonl([{"_id": 5, "title": "", "text": "five"}]),
                        queries=jsonl([{"_id": 1, "text": "one"}]), qrels=b"query-id\tcorpus-id\tscore\n1\t5\t1\n")
    assert load_beir(folder, "test").qrels == {"1": {"5": 1}}


# ---------------------------------------------------------------- NQ-open


def write_nq(path: Path, records) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for r in records:
            handle.write(json.dumps(r) + "\n")
    return path


NQ = [
    {"question": "who wrote hamlet", "answers": ["Shakespeare"],
     "ctxs": [{"title": "Hamlet", "text": "Hamlet is a tragedy by Shakespeare."}, {"title": "x", "text": "other"}]},
    {"question": "when was hamlet written", "answers": ["1600"],
     "ctxs": [{"title": "Hamlet", "text": "Hamlet is a tragedy by Shakespeare."}]},
    {"question": "capital of france", "answers": ["Paris"], "ctxs": [{"title": "", "text": "Paris is the capital."}]},
]


def test_load_nq_open_gold_passages_deduplicated(tmp_path):
    rs = load_nq_open(write_nq(tmp_path / "nq.jsonl.gz", NQ))
    assert sorted(rs.corpus.values()) == ["Hamlet\nHamlet is a tragedy by Shakespeare.", "Paris is the capital."]
    assert list(rs.queries.values()) == ["who wrote hamlet", "when was hamlet written", "capital of france"]
    hamlet = [q for q, t in rs.queries.items() if "hamlet" in t]
    assert rs.qrels[hamlet[0]] == rs.qrels[hamlet[1]]  # both point at the one shared passage
    assert all(len(j) == 1 for j in rs.qrels.values())


def test_load_nq_open_splits_partition_questions(tmp_path):
    records = [{"question": f"question number {i}", "ctxs": [{"title": "T", "text": f"passage {i % 7}"}]}
               for i in range(60)]
    path = write_nq(tmp_path / "nq.jsonl.gz", records)
    train, test = load_nq_open(path, "train", seed=3), load_nq_open(path, "test", seed=3)
    assert set(train.queries).isdisjoint(test.queries)
    assert len(train.queries) + len(test.queries) == 60
    assert train.corpus == test.corpus and len(train.corpus) == 7  # every gold passage, both splits
    assert load_nq_open(path, "test", seed=3).queries == test.queries


def test_load_nq_open_missing_ctxs(tmp_path):
    path = write_nq(tmp_path / "nq.jsonl.gz", [NQ[0], {"question": "no passage", "ctxs": []}])
    with pytest.raises(DataError) as info:
        load_nq_open(path)
    assert (info.value.rule, info.value.line) == ("missing_field", 2)


# ---------------------------------------------------------------- HF datasets

def write_mteb_repo(folder: Path, qrels_rows: list[dict]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "README.md").write_text(dataset_card(["test"]))
    (folder / "corpus.jsonl").write_bytes(jsonl(CORPUS))
    (folder / "queries.jsonl").write_bytes(jsonl(QUERIES))
    (folder / "qrels" / "test.jsonl").write_bytes(jsonl(qrels_rows))
    return folder


MTEB_QRELS = [{"query-id": "q1", "corpus-id": "d1", "score": 1}, {"query-id": "q2", "corpus-id": "d2", "score": 2},
              {"query-id": "q2", "corpus-id": "d3", "score": 0}]


def test_load_hf_dataset_repo_matches_beir(tmp_path):
    repo = write_mteb_repo(tmp_path / "scifact_like", MTEB_QRELS)
    rs = load_hf(repo, "test", cache_dir=tmp_path / "cache")
    beir = load_beir(write_beir(tmp_path / "beir"), "test")
    assert (rs.corpus, rs.queries, rs.qrels) == (beir.corpus, beir.queries, beir.qrels)
    assert rs.meta["layout"] == "load_dataset"


def test_load_hf_rows_checked_like_beir(tmp_path):
    repo = write_mteb_repo(tmp_path / "bad", MTEB_QRELS + [{"query-id": "q1", "corpus-id": "d404", "score": 1}])
    with pytest.raises(DataError) as info:
        load_hf(repo, "test", cache_dir=tmp_path / "cache")
    assert (info.value.rule, info.value.line) == ("qrels_unknown_doc", 4)
    assert "[default/test]" in info.value.path


def test_load_hf_unknown_columns(tmp_path):
    repo = write_mteb_repo(tmp_path / "odd", [{"query-id": "q1", "corpus-id": "d1", "grade": 1}])
    with pytest.raises(DataError) as info:
        load_hf(repo, "test", cache_dir=tmp_path / "cache")
    assert info.value.rule == "missing_column" and "score" in info.value.detail


def test_load_hf_save_to_disk_folders(tmp_path):
    import datasets

    root = tmp_path / "saved"
    datasets.Dataset.from_list([{"id": r["_id"], "title": r.get("title", ""), "text": r["text"]} for r in CORPUS]
                               ).save_to_disk(str(root / "corpus"))
    datasets.Dataset.from_list([{"id": r["_id"], "text": r["text"]} for r in QUERIES]).save_to_disk(
        str(root / "queries"))
    qrels = datasets.Dataset.from_list([{"query_id": r["query-id"], "doc_id": r["corpus-id"], "score": r["score"]}
                                        for r in MTEB_QRELS])
    datasets.DatasetDict({"test": qrels}).save_to_disk(str(root / "qrels"))
    rs = load_hf(root, "test")
    assert rs.meta["layout"] == "save_to_disk"
    assert rs.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 0}}
    assert rs.corpus["d1"] == "Apples\nApples are red fruit."
    with pytest.raises(DataError) as info:
        load_hf(root, "train")
    assert info.value.rule == "missing_split"


# ---------------------------------------------------------------- data stage


def write_code_root(root: Path, n: int = 80) -> Path:
    """A fake standard library: ``n`` documented functions with distinct summaries and bodies."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    lines = []
    for i in range(n):
        a, b = words[i % 10], words[(i // 10) % 10]
        lines += [f"def compute_{a}_{b}_{i}(value):",
                  f'    """Compute the {a} {b} measure number {i} of a value."""',
                  f"    total = value * {i + 1} + len('{a}')",
                  f"    return total - {i} // 2 + len('{b}')", ""]
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("\n".join(lines))
    return root


def small_codesearch(root: Path) -> dict:
    return {"type": "codesearch", "eval_splits": ["dev", "test"],
            "options": {"root": str(root), "test_queries": 4, "test_docs": 8, "dev_queries": 2, "dev_docs": 4}}


def test_build_writes_train_eval_and_manifest(tmp_path):
    root = write_code_root(tmp_path / "lib")
    beir = write_beir(tmp_path / "toy", split="train")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td3\t1\n")
    config = DataConfig(sources=[small_codesearch(root), {"type": "beir", "path": str(beir)}],
                        mining={"depth": 5, "negatives": 2, "false_negative_ratio": 0.95})
    out = tmp_path / "data"
    manifest = build_data(config, out, progress=False)
    assert sorted(p.name for p in eval_set_dirs(out)) == ["codesearch-dev", "codesearch-test", "toy-test"]
    test = load_eval_set(out / "eval" / "codesearch-test")
    assert (len(test.queries), len(test.corpus)) == (4, 8)
    assert load_eval_set(out / "eval" / "toy-test").qrels == {"q3": {"d3": 1}}
    train = load_train(out)
    assert {"query_id", "query", "positive", "negatives", "negative_ids", "source"} <= set(train.column_names)
    for row in train:
        assert row["positive_id"] not in row["negative_ids"] and row["positive"] not in row["negatives"]
    by_source = manifest["train"]["by_source"]
    assert by_source["toy"] == 2 and by_source["codesearch"] == 2  # equal weights: the smaller source sets the size
    assert manifest["sources"]["codesearch"]["mining"]["method"] == "bm25"
    assert json.loads((out / "manifest.json").read_text())["train"]["rows"] == len(train) == 4
    assert len(load_train_corpus(out)) == manifest["train"]["corpus_documents"]


def test_build_drops_training_queries_that_leak_into_evaluation(tmp_path):
    beir = write_beir(tmp_path / "toy", split="train")
    # q1's text is also an evaluation query (different id, other case and spacing)
    queries = QUERIES + [{"_id": "q9", "text": "RED  fruit"}]
    (beir / "queries.jsonl").write_bytes(jsonl(queries))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n")
    manifest = build_data(DataConfig(sources=[{"type": "beir", "path": str(beir)}]), tmp_path / "data",
                          progress=False)
    assert manifest["sources"]["toy"]["train"]["dropped_leaking_queries"] == 1
    assert list(load_train(tmp_path / "data")["query_id"]) == ["q2"]


def twelve_claims(folder: Path) -> Path:
    """A BEIR folder with a train split only: 12 judged queries over 14 documents (SciFact's shape: no dev split)."""
    corpus = [{"_id": f"d{i}", "text": f"document {i} about topic {i} and word{i}"} for i in range(14)]
    queries = [{"_id": f"q{i}", "text": f"claim on topic {i} word{i}"} for i in range(12)]
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(12))
    return write_beir(folder, jsonl(corpus), jsonl(queries), qrels.encode(), split="train")


def test_dev_from_train_holds_claims_out_of_training(tmp_path):
    """dev_from_train: N seeded train queries become the dev set over the train corpus, and none of them trains."""
    source = {"type": "beir", "path": str(twelve_claims(tmp_path / "claims")), "label": "claims",
              "eval_splits": ["dev"], "dev_from_train": 4}
    manifest = build_data(DataConfig(sources=[source], mining={"depth": 5, "negatives": 1}), tmp_path / "data",
                          progress=False)
    dev = load_eval_set(tmp_path / "data" / "eval" / "claims-dev")
    assert len(dev.queries) == 4 and len(dev.corpus) == 14 and set(dev.qrels) == set(dev.queries)
    trained = set(load_train(tmp_path / "data")["query_id"])
    assert trained and not trained & set(dev.queries)
    assert len(trained) == 8  # every other claim trains
    assert manifest["sources"]["claims"]["train"]["dropped_leaking_queries"] == 4
    again = build_data(DataConfig(sources=[source], mining={"depth": 5, "negatives": 1}), tmp_path / "again",
                       progress=False)
    assert set(load_eval_set(tmp_path / "again" / "eval" / "claims-dev").queries) == set(dev.queries)  # seeded
    other_seed = build_data(DataConfig(seed=1, sources=[source], mining={"depth": 5, "negatives": 1}),
                            tmp_path / "seed1", progress=False)
    assert other_seed["eval_sets"]["claims-dev"]["queries"] == 4
    assert set(load_eval_set(tmp_path / "seed1" / "eval" / "claims-dev").queries) != set(dev.queries)


@pytest.mark.parametrize("source, rule", [
    ({"type": "codesearch", "eval_splits": ["dev"], "dev_from_train": 5}, "other than codesearch"),
    ({"type": "beir", "path": "x", "eval_splits": ["test"], "dev_from_train": 5}, "'dev' in eval_splits"),
    ({"type": "beir", "path": "x", "train_split": None, "eval_splits": ["dev"], "dev_from_train": 5}, "train_split"),
])
def test_dev_from_train_needs_a_train_split_and_a_dev_split(source, rule):
    with pytest.raises(ConfigError, match=rule):
        DataConfig(sources=[source]).source_configs()


def test_dev_from_train_leaves_at_least_as_many_training_claims(tmp_path):
    source = {"type": "beir", "path": str(twelve_claims(tmp_path / "claims")), "eval_splits": ["dev"],
              "dev_from_train": 7}
    with pytest.raises(ConfigError, match="fewer training queries than dev ones"):
        build_data(DataConfig(sources=[source]), tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


class BrokenEmbedder:
    def encode_documents(self, texts, progress=False):
        raise RuntimeError("encoder crashed")


@pytest.mark.parametrize("stage", ["loading", "writing"])
def test_failed_build_leaves_previous_output(tmp_path, stage):
    out = tmp_path / "data"
    out.mkdir()
    (out / "previous.txt").write_text("old build")
    if stage == "loading":  # the source is missing: nothing is written at all
        config = DataConfig(sources=[{"type": "beir", "path": str(tmp_path / "nowhere")}])
        embedder, error = None, DataError
    else:  # eval sets are already written into the temporary folder when mining crashes
        beir = write_beir(tmp_path / "data_src", split="train")
        (beir / "qrels" / "test.tsv").write_text(QRELS)
        config = DataConfig(sources=[{"type": "beir", "path": str(beir)}],
                            mining={"method": "dense", "model": "unused"})
        embedder, error = BrokenEmbedder(), RuntimeError
    with pytest.raises(error):
        build_data(config, out, progress=False, embedder=embedder)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data_src") == ["data"]  # no temporary folder
    assert sorted(p.name for p in out.iterdir()) == ["previous.txt"]
    assert (out / "previous.txt").read_text() == "old build"
    assert (out / "previous.txt").read_text() == "old build"


def test_successful_build_replaces_previous_output(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "previous.txt").write_text("old build")
    build_data(DataConfig(sources=[{"type": "beir", "path": str(write_beir(tmp_path / "toy", split="train")),
                                    "eval_splits": []}]), out, progress=False)
    assert not (out / "previous.txt").exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "toy"]


@pytest.mark.parametrize("available, weights, total, expected", [
    ({"a": 100, "b": 10}, {"a": 1, "b": 1}, None, {"a": 10, "b": 10}),  # b limits an equal mix
    ({"a": 100, "b": 10}, {"a": 1, "b": 1}, 30, {"a": 15, "b": 10}),  # b gives all it has
    ({"a": 100, "b": 100}, {"a": 2, "b": 1}, 10, {"a": 7, "b": 3}),  # 6.67/3.33: remainder to a
    ({"a": 100, "b": 0}, {"a": 1, "b": 1}, None, {"a": 100}),  # an empty source is left out
])
def test_share_counts(available, weights, total, expected):
    assert share_counts(available, weights, total) == expected


@pytest.mark.parametrize("sources, message", [
    ([{"type": "codesearch", "colour": "red"}], "colour"),
    ([{"type": "beir"}], "needs `path`"),
    ([{"type": "beir", "path": "a/x"}, {"type": "beir", "path": "b/x"}], "used twice"),
    ([{"type": "csv", "path": "x"}], "not one of"),
    ([{"type": "codesearch", "options": {"test_dox": 3}}], "test_dox"),
])
def test_bad_source_config(tmp_path, sources, message):
    with pytest.raises(ConfigError, match=message):
        build_data(DataConfig(sources=sources), tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


def test_cli_data_build(tmp_path, capsys):
    from searchr3.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"data": {"sources": [small_codesearch(write_code_root(tmp_path / "lib"))]}}))
    assert main(["--params", str(params), "data", "build", "--out", str(tmp_path / "data"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_sets"]["codesearch-test"] == {"queries": 4, "documents": 8}


# ---------------------------------------------------------------- reference data (skipped when absent)


@pytest.mark.skipif(not (SHARED / "scifact").is_dir(), reason="../shared/data/scifact is absent")
def test_scifact_counts_match_beir():
    test = load_beir(SHARED / "scifact", "test")
    train = load_beir(SHARED / "scifact", "train")
    assert (len(test.corpus), len(test.queries), sum(map(len, test.qrels.values()))) == (5183, 300, 339)
    assert (len(train.queries), sum(map(len, train.qrels.values()))) == (809, 919)


@pytest.mark.skipif(not (SHARED / "nq_open").is_dir(), reason="../shared/data/nq_open is absent")
def test_nq_open_reference_file():
    rs = load_nq_open(SHARED / "nq_open" / "nq-open-oracle.jsonl.gz")
    assert len(rs.queries) == 2655 and len(rs.corpus) == 2600
