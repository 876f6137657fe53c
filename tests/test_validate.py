"""Great Expectations validation: each rule rejects a fixture with exactly its defect; clean data passes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from searchr3.data.build import build_data, load_eval_set, load_train
from searchr3.data.config import DataConfig
from searchr3.validate.config import ValidateConfig
from searchr3.validate.frames import balance_frame, train_frame
from searchr3.validate.runner import ValidationFailed, describe_row, run_checks, validate_data, validate_dataset
from searchr3.validate.suites import balance_check, train_check

SHARED = Path(__file__).parents[2] / "shared" / "data"

CORPUS = [{"_id": "d1", "title": "Apples", "text": "Apples are red."}, {"_id": "d2", "title": "", "text": "Bananas."},
          {"_id": "d3", "text": "Cherries are small."}]
QUERIES = [{"_id": "q1", "text": "red fruit"}, {"_id": "q2", "text": "yellow fruit"}]
QRELS = [("q1", "d1", "1"), ("q2", "d2", "1"), ("q2", "d3", "0")]


def write_beir(folder: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n"
                                                                                         for r in qrels))
    return folder


def broken_rules(err: ValidationFailed) -> set[tuple[str, str]]:
    return {(t["dataset"], f["rule"]) for t in err.summary["tables"] for f in t["failed"]}


def test_clean_beir_folder_passes_and_writes_reports(tmp_path):
    summary = validate_dataset(write_beir(tmp_path / "toy"), "test", report_dir=tmp_path / "reports")
    assert summary["success"] and [t["dataset"] for t in summary["tables"]] == \
        ["toy-test.corpus", "toy-test.queries", "toy-test.qrels"]
    assert json.loads((tmp_path / "reports" / "summary.json").read_text())["success"] is True
    assert (tmp_path / "reports" / "data_docs" / "index.html").is_file()


BAD_BEIR = {
    "duplicate doc id": (dict(corpus=CORPUS + [{"_id": "d2", "text": "again"}]), "toy-test.corpus", "duplicate_id"),
    "blank doc id": (dict(corpus=CORPUS + [{"_id": " ", "text": "no id"}]), "toy-test.corpus", "empty_field"),
    "blank text": (dict(corpus=CORPUS + [{"_id": "d4", "title": "", "text": "   "}]), "toy-test.corpus",
                   "empty_field"),
    "query too long": (dict(queries=QUERIES + [{"_id": "q3", "text": "x" * 41}]), "toy-test.queries", "text_too_long"),
    "duplicate query id": (dict(queries=QUERIES + [{"_id": "q1", "text": "again"}]), "toy-test.queries",
                           "duplicate_id"),
    "judged doc missing": (dict(qrels=QRELS + [("q1", "d404", "1")]), "toy-test.qrels", "qrels_unknown_doc"),
    "judged query missing": (dict(qrels=QRELS + [("q404", "d1", "1")]), "toy-test.qrels", "qrels_unknown_query"),
    "score not integer": (dict(qrels=QRELS + [("q1", "d2", "high")]), "toy-test.qrels", "qrels_score"),
    "judged twice": (dict(qrels=QRELS + [("q1", "d1", "1")]), "toy-test.qrels", "duplicate_judgement"),
    "nothing relevant": (dict(qrels=[("q1", "d1", "0")]), "toy-test.qrels", "no_relevant"),
}


@pytest.mark.parametrize("case", sorted(BAD_BEIR))
def test_each_dataset_rule_rejects_its_defect(tmp_path, case):
    kwargs, dataset, rule = BAD_BEIR[case]
    folder = write_beir(tmp_path / "toy", **kwargs)
    with pytest.raises(ValidationFailed) as info:
        validate_dataset(folder, "test", ValidateConfig(max_query_chars=40), report_dir=tmp_path / "reports")
    assert broken_rules(info.value) == {(dataset, rule)}
    assert f"{dataset}: rule {rule}" in str(info.value)
    assert json.loads((tmp_path / "reports" / "summary.json").read_text())["success"] is False


def test_failure_message_names_the_offending_row(tmp_path):
    folder = write_beir(tmp_path / "toy", qrels=QRELS + [("q1", "d404", "1")])
    with pytest.raises(ValidationFailed) as info:
        validate_dataset(folder, "test", report_dir=tmp_path / "reports")
    message = str(info.value)
    assert "expect_column_values_to_be_in_set on qrels_unknown_doc): 1 of 4 rows" in message
    assert f"e.g. {folder / 'qrels' / 'test.tsv'}:5 query_id=q1 doc_id=d404: " in message


def test_failure_message_puts_file_line_and_id_before_a_long_text(tmp_path):
    folder = write_beir(tmp_path / "toy", corpus=CORPUS + [{"_id": "d4", "text": "long " * 200}])
    with pytest.raises(ValidationFailed) as info:
        validate_dataset(folder, "test", ValidateConfig(max_doc_chars=100), report_dir=tmp_path / "reports")
    example = next(line for line in str(info.value).splitlines() if "e.g." in line)
    assert example.split("e.g. ", 1)[1].startswith(f"{folder / 'corpus.jsonl'}:4 doc_id=d4: ")
    # a row whose other fields are long: only they are shortened, never the row's address
    where = describe_row({"line": 4, "doc_id": "d4", "text": "long " * 200}, "corpus.jsonl")
    assert where.startswith("corpus.jsonl:4 doc_id=d4: ") and '"text": "long long' in where
    assert where.endswith("…") and len(where) < 300


# ---------------------------------------------------------------- training rows

def train_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"query_id": "a1", "query": "first query", "positive_id": "p1", "positive": "doc one",
         "negative_ids": ["p2"], "negatives": ["doc two"], "negative_scores": [1.0], "source": "s"},
        {"query_id": "a2", "query": "second query", "positive_id": "p2", "positive": "doc two",
         "negative_ids": ["p1", "p3"], "negatives": ["doc one", "doc three"], "negative_scores": [1.0, 0.5],
         "source": "s"},
    ])


TRAIN_CORPUS = pd.DataFrame({"doc_id": ["p1", "p2", "p3"], "text": ["doc one", "doc two", "doc three"],
                             "source": ["s"] * 3})
EVAL_QUERIES = {"s": pd.DataFrame({"query_id": ["e1"], "text": ["An evaluation query"]})}


def edit(row: int, **changes):
    frame = train_rows()
    for column, value in changes.items():
        frame.at[row, column] = value
    return frame


BAD_TRAIN = {
    "negative equals positive id": (edit(0, negative_ids=["p1"], negatives=["doc one"]), "negative_not_positive"),
    "negative equals positive text": (edit(1, negatives=["doc two", "doc three"]), "negative_not_positive"),
    "positive not in corpus": (edit(0, positive_id="p404"), "positive_in_corpus"),
    "negative not in corpus": (edit(1, negative_ids=["p1", "p404"]), "negatives_in_corpus"),
    "no negatives": (edit(0, negative_ids=[], negatives=[], negative_scores=[]), "min_negatives"),
    "duplicate query id": (edit(1, query_id="a1"), "unique_ids"),
    "blank query": (edit(1, query=" "), "non_empty_query"),
    "blank positive": (edit(1, positive="\n"), "non_empty_positive"),
    "leaked id": (edit(1, query_id="e1"), "no_eval_query_id"),
    "leaked text": (edit(1, query="an  evaluation QUERY"), "no_eval_query_text"),
}


def test_clean_training_rows_pass(tmp_path):
    frame = train_frame(train_rows(), TRAIN_CORPUS, EVAL_QUERIES)
    summary = run_checks([train_check(frame, ValidateConfig())], ValidateConfig(), "train", tmp_path)
    assert summary["success"] and summary["tables"][0]["expectations"] == 12


@pytest.mark.parametrize("case", sorted(BAD_TRAIN))
def test_each_training_rule_rejects_its_defect(tmp_path, case):
    rows, rule = BAD_TRAIN[case]
    frame = train_frame(rows, TRAIN_CORPUS, EVAL_QUERIES)
    with pytest.raises(ValidationFailed) as info:
        run_checks([train_check(frame, ValidateConfig())], ValidateConfig(), "train", tmp_path)
    assert broken_rules(info.value) == {("train", rule)}


def test_source_balance(tmp_path):
    config = ValidateConfig(min_source_share=0.05, max_source_share=0.9)
    skewed = pd.DataFrame({"source": ["big"] * 97 + ["small"] * 3})
    with pytest.raises(ValidationFailed) as info:
        run_checks([balance_check(balance_frame(skewed), config)], config, "mix", tmp_path)
    (failure,) = info.value.summary["tables"][0]["failed"]
    assert failure["rule"] == "source_share" and failure["unexpected_count"] == 2
    assert {e["source"] for e in failure["examples"]} == {"big", "small"}
    single = pd.DataFrame({"source": ["only"] * 10})  # one source is 100% by definition
    assert run_checks([balance_check(balance_frame(single), config)], config, "one", tmp_path)["success"]


# ---------------------------------------------------------------- a data-stage output


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lib")
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
    (root / "mod.py").write_text("\n".join(
        f'def compute_{i}(value):\n    """Compute the {words[i % 10]} {words[i // 10]} measure of a value."""\n'
        f"    total = value * {i + 1} + len('{words[i % 10]}')\n    return total - len('{words[i // 10]}')\n"
        for i in range(80)))
    out = tmp_path_factory.mktemp("built") / "data"
    build_data(DataConfig(sources=[{"type": "codesearch", "eval_splits": ["dev", "test"], "options": {
        "root": str(root), "test_queries": 4, "test_docs": 8, "dev_queries": 2, "dev_docs": 4}}],
        mining={"depth": 5, "negatives": 2}), out, progress=False)
    return out


def test_built_data_passes(built, tmp_path):
    summary = validate_data(built, report_dir=tmp_path / "reports")
    assert summary["success"]
    assert [t["dataset"] for t in summary["tables"]][-2:] == ["train", "train_balance"]


def test_query_leaked_from_test_into_train_is_rejected(built, tmp_path):
    import datasets

    data = tmp_path / "data"
    shutil.copytree(built, data)
    test_query = next(iter(load_eval_set(data / "eval" / "codesearch-test").queries.values()))
    rows = load_train(data).to_list()
    rows[0]["query"] = test_query
    features = load_train(data).features
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "train"))
    shutil.rmtree(data / "train")
    shutil.move(tmp_path / "train", data / "train")
    with pytest.raises(ValidationFailed) as info:
        validate_data(data, report_dir=tmp_path / "reports")
    assert broken_rules(info.value) == {("train", "no_eval_query_text")}
    assert rows[0]["query_id"] in str(info.value)


def test_cli_exit_codes(built, tmp_path, capsys):
    from searchr3.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  examples: 2\n")
    reports = tmp_path / "reports"
    assert main(["--params", str(params), "validate", "--data", str(built), "--report-dir", str(reports)]) == 0
    assert json.loads((reports / "summary.json").read_text())["success"] is True
    bad = write_beir(tmp_path / "bad", qrels=QRELS + [("q1", "d404", "1")])
    capsys.readouterr()
    assert main(["--params", str(params), "validate", "--dataset", str(bad), "--split", "test",
                 "--report-dir", str(reports)]) == 3
    out, err = capsys.readouterr()
    assert "bad-test.qrels: rule qrels_unknown_doc" in out  # the report
    assert err.count("\n") == 1 and err.startswith("searchr3: error: validation of ")
    assert "bad-test.qrels qrels_unknown_doc (1 rows, first at line 5)" in err


def test_default_relative_report_dir_works(tmp_path, monkeypatch):
    """`searchr3 validate --dataset DIR` with the default report folder (relative to the working directory)."""
    from searchr3.cli import main

    folder = write_beir(tmp_path / "toy")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--dataset", str(folder)]) == 0
    assert json.loads((tmp_path / "reports" / "validation" / "summary.json").read_text())["success"] is True


@pytest.mark.skipif(not (SHARED / "scifact").is_dir(), reason="../shared/data/scifact is absent")
def test_scifact_test_split_passes(tmp_path):
    assert validate_dataset(SHARED / "scifact", "test", report_dir=tmp_path)["success"]
