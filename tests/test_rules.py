"""One set of rules: the loader and the validator refuse each corruption under the same rule name."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from searchr3.data.beir import load_beir
from searchr3.data.build import build_data
from searchr3.data.config import DataConfig
from searchr3.data.errors import DataError
from searchr3.data.hf import load_hf
from searchr3.data.nq import load_nq_open
from searchr3.data.rules import RECORD_RULES, RULES, Limits, parse_score, record_problems
from searchr3.validate.config import ValidateConfig
from searchr3.validate.runner import ValidationFailed, validate_dataset

CORPUS = [{"_id": "d1", "title": "Apples", "text": "Apples are red fruit."},
          {"_id": "d2", "title": "", "text": "Bananas are yellow."},
          {"_id": "d3", "title": "Cherries", "text": "Cherries are small and red."}]
QUERIES = [{"_id": "q1", "text": "red fruit"}, {"_id": "q2", "text": "yellow fruit"},
           {"_id": "t1", "text": "small fruit"}]
TEST = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td3\t0\n"
TRAIN = "query-id\tcorpus-id\tscore\nt1\td3\t1\n"


def lines(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_beir(folder: Path, corpus: str | None = None, queries: str | None = None, test: str | None = None) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(lines(CORPUS) if corpus is None else corpus, encoding="utf-8",
                                         errors="surrogatepass")
    (folder / "queries.jsonl").write_text(lines(QUERIES) if queries is None else queries, encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(TEST if test is None else test)
    (folder / "qrels" / "train.tsv").write_text(TRAIN)
    return folder


def edited(records, index, **values):
    return lines([{**r, **values} if i == index else r for i, r in enumerate(records)])


# case: (keyword arguments of write_beir, rule both must name)
CORRUPTIONS = {
    "blank text beside a title": (dict(corpus=edited(CORPUS, 0, text="  ")), "empty_field"),
    "non-string title": (dict(corpus=edited(CORPUS, 1, title=7)), "field_type"),
    "nested title": (dict(corpus=edited(CORPUS, 2, title={"en": "Cherries"})), "field_type"),
    "NUL character": (dict(corpus=edited(CORPUS, 0, text="Apples\x00 are red.")), "control_character"),
    "escape character in a query": (dict(queries=edited(QUERIES, 0, text="red \x1b fruit")), "control_character"),
    "lone surrogate": (dict(corpus=lines(CORPUS[:2]) + '{"_id": "d3", "text": "bad \\udc80 text"}\n'),
                       "invalid_unicode"),
    "document over the size bound": (dict(corpus=edited(CORPUS, 2, text="x" * 20_001)), "text_too_long"),
    "negative relevance": (dict(test=TEST.replace("q2\td3\t0", "q2\td3\t-1")), "negative_score"),
    "all scores -1": (dict(test="query-id\tcorpus-id\tscore\nq1\td1\t-1\nq2\td2\t-1\n"), "negative_score"),
    "non-integer relevance": (dict(test=TEST.replace("q2\td2\t2", "q2\td2\t1.5")), "qrels_score"),
    "header-only qrels": (dict(test="query-id\tcorpus-id\tscore\n"), "no_relevant"),
    "nothing relevant": (dict(test="query-id\tcorpus-id\tscore\nq1\td1\t0\n"), "no_relevant"),
    "query identical to its document": (dict(queries=edited(QUERIES, 1, text="bananas  are YELLOW.")),
                                        "query_is_document"),
    "query identical to a titled document's text": (dict(queries=edited(QUERIES, 0, text="Apples are red fruit.")),
                                                    "query_is_document"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_loader_and_validator_refuse_under_the_same_rule(tmp_path, case):
    kwargs, rule = CORRUPTIONS[case]
    folder = write_beir(tmp_path / "toy", **kwargs)
    with pytest.raises(DataError) as loaded:
        load_beir(folder, "test")
    assert loaded.value.rule == rule
    with pytest.raises(ValidationFailed) as validated:
        validate_dataset(folder, "test", report_dir=tmp_path / "reports")
    broken = {f["rule"] for t in validated.value.summary["tables"] for f in t["failed"]}
    assert rule in broken
    assert broken <= {rule, "no_relevant"}  # an all-negative split also has nothing relevant


@pytest.mark.parametrize("key", ["duplicate keys", "not a regular file"])
def test_syntax_errors_are_raised_alike(tmp_path, key):
    folder = write_beir(tmp_path / "toy")
    if key == "duplicate keys":
        (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "one", "text": "two"}\n')
        rule, detail = "duplicate_key", "key 'text' appears twice"
    else:
        (folder / "queries.jsonl").unlink()
        (folder / "queries.jsonl").mkdir()
        rule, detail = "not_a_file", "is a folder, not a file"
    for call in (lambda: load_beir(folder, "test"), lambda: validate_dataset(folder, "test", report_dir=tmp_path)):
        with pytest.raises(DataError) as info:
            call()
        assert info.value.rule == rule and detail in str(info.value)


def test_fifo_and_symlink_loop_are_named(tmp_path):
    folder = write_beir(tmp_path / "toy")
    corpus = folder / "corpus.jsonl"
    corpus.unlink()
    os.mkfifo(corpus)
    with pytest.raises(DataError, match="is a FIFO \\(named pipe\\), not a regular file") as info:
        load_beir(folder, "test")  # must not block on the pipe
    assert info.value.rule == "not_a_file"
    corpus.unlink()
    os.symlink("loop.jsonl", corpus)
    os.symlink("corpus.jsonl", folder / "loop.jsonl")
    with pytest.raises(DataError, match="is a symlink loop") as info:
        load_beir(folder, "test")
    assert info.value.rule == "not_a_file"
    corpus.unlink()
    os.symlink("gone.jsonl", corpus)
    with pytest.raises(DataError, match="symlink to 'gone.jsonl', which does not exist"):
        load_beir(folder, "test")


def test_harmless_variants_load_the_same(tmp_path):
    clean = load_beir(write_beir(tmp_path / "clean"), "test")
    bom_crlf = write_beir(tmp_path / "variant", corpus="\ufeff" + lines(CORPUS).replace("\n", "\r\n"),
                          queries=lines([{**q, "extra": [1, 2]} for q in QUERIES]) + "\n\n")
    variant = load_beir(bom_crlf, "test")
    assert (variant.corpus, variant.queries, variant.qrels) == (clean.corpus, clean.queries, clean.qrels)
    assert validate_dataset(bom_crlf, "test", report_dir=tmp_path / "reports")["success"]


def test_shared_query_text_is_flagged_not_refused(tmp_path):
    folder = write_beir(tmp_path / "toy", queries=edited(QUERIES, 2, text="Red  FRUIT"))  # t1 (train) = q1 (test)
    summary = validate_dataset(folder, "test", report_dir=tmp_path / "reports")
    assert summary["success"] and summary["warnings"] == ["toy-test.queries: shared_query (1 rows)"]
    load_beir(folder, "test")  # the loader reads one split; the data stage sees both and drops the train copy


def test_data_build_drops_and_reports_a_shared_query(tmp_path, caplog):
    folder = write_beir(tmp_path / "toy", queries=edited(QUERIES, 2, text="Red  FRUIT"))
    config = DataConfig(sources=[{"type": "beir", "path": str(folder), "train_split": "train",
                                  "eval_splits": ["test"]}], mining={"depth": 3, "negatives": 1})
    with pytest.raises(DataError) as info:  # its only training query leaks, so nothing is left to train on
        build_data(config, tmp_path / "data", progress=False)
    assert info.value.rule == "no_training_rows"
    assert "shared_query: 1 training queries of source toy" in caplog.text
    assert not (tmp_path / "data").exists()


def test_data_build_uses_the_validator_size_bounds(tmp_path):
    folder = write_beir(tmp_path / "toy")
    config = DataConfig(sources=[{"type": "beir", "path": str(folder), "train_split": "train",
                                  "eval_splits": ["test"]}], mining={"depth": 3, "negatives": 1})
    with pytest.raises(DataError) as info:
        build_data(config, tmp_path / "data", progress=False, limits=Limits.of(ValidateConfig(max_doc_chars=20)))
    assert info.value.rule == "text_too_long" and info.value.line == 1


def test_nq_open_rules(tmp_path):
    import gzip

    good = {"question": "who wrote hamlet", "ctxs": [{"title": "Hamlet", "text": "A play by Shakespeare."}]}
    cases = {"question": ({**good, "question": 7}, "field_type", "'question' must be a string"),
             "title": ({**good, "ctxs": [{"title": ["x"], "text": "t"}]}, "field_type", "'ctxs[0].title'"),
             "nul": ({**good, "question": "who\x00"}, "control_character", "'question' holds U+0000")}
    for name, (record, rule, detail) in cases.items():
        path = tmp_path / f"{name}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(json.dumps(good) + "\n" + json.dumps(record) + "\n")
        with pytest.raises(DataError) as info:
            load_nq_open(path)
        assert (info.value.rule, info.value.line) == (rule, 2) and detail in str(info.value)
    blank = tmp_path / "blank.jsonl.gz"  # a blank question has no split: it is reported whichever split is read
    with gzip.open(blank, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(good) + "\n" + json.dumps({**good, "question": "  "}) + "\n")
    for split in ("train", "test"):
        with pytest.raises(DataError) as info:
            load_nq_open(blank, split)
        assert (info.value.rule, info.value.line) == ("empty_field", 2)
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes((tmp_path / "nul.jsonl.gz").read_bytes()[:-12])
    with pytest.raises(DataError) as info:
        load_nq_open(truncated)
    assert info.value.rule == "unreadable_file"


def test_hf_rows_follow_the_same_rules(tmp_path):
    import datasets

    root = tmp_path / "saved"
    datasets.Dataset.from_list([{**r, "text": r["text"] if r["_id"] != "d2" else " "} for r in CORPUS]).save_to_disk(
        str(root / "corpus"))
    datasets.Dataset.from_list(QUERIES).save_to_disk(str(root / "queries"))
    qrels = [{"query-id": "q1", "corpus-id": "d1", "score": -1}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(qrels)}).save_to_disk(str(root / "qrels"))
    with pytest.raises(DataError) as info:
        load_hf(root, "test")
    assert (info.value.rule, info.value.line) == ("empty_field", 2)
    (root / "corpus" / "state.json").unlink()
    with pytest.raises(DataError) as info:
        load_hf(root, "test")
    assert info.value.rule == "unreadable_dataset"


def test_validate_reads_every_input_format(tmp_path):
    """`validate --dataset` guesses BEIR, HF (save_to_disk) and NQ-open from the path and checks the same rules."""
    import gzip

    import datasets

    nq = tmp_path / "nq.jsonl.gz"
    with gzip.open(nq, "wt", encoding="utf-8") as handle:
        for i in range(6):
            handle.write(json.dumps({"question": f"question {i}", "ctxs": [{"title": "T", "text": f"passage {i}"}]})
                         + "\n")
    assert validate_dataset(nq, "all", report_dir=tmp_path / "r1")["tables"][0]["dataset"] == "nq-all.corpus"
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(CORPUS).save_to_disk(str(saved / "corpus"))
    datasets.Dataset.from_list(QUERIES).save_to_disk(str(saved / "queries"))
    rows = [{"query-id": "q1", "corpus-id": "d1", "score": 1}, {"query-id": "q2", "corpus-id": "d2", "score": -3}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(saved / "qrels"))
    with pytest.raises(ValidationFailed) as info:
        validate_dataset(saved, "test", report_dir=tmp_path / "r2")
    assert "saved-test.qrels negative_score (1 rows, first at line 2)" in info.value.brief()
    with pytest.raises(DataError, match="is a file, expected a folder"):
        validate_dataset(tmp_path / "r2" / "summary.json", "test", report_dir=tmp_path / "r3")


def test_every_record_rule_is_documented():
    text = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
    assert all(f"`{name}`" in text for name in RULES)
    assert set(RECORD_RULES) <= set(RULES)


def test_rule_functions():
    limits = Limits(max_doc_chars=10, max_query_chars=5)
    assert record_problems({"_id": 3, "text": "short"}, "corpus", limits) == []  # integer ids are accepted
    assert record_problems({"_id": "a", "text": "toolong"}, "queries", limits)[0][0] == "text_too_long"
    assert record_problems({"_id": "a", "title": "T" * 9, "text": "x"}, "corpus", limits)[0][0] == "text_too_long"
    assert record_problems({"_id": True, "text": "x"}, "queries", limits)[0][0] == "field_type"
    assert [parse_score(v) for v in ("2", " 1 ", 3.0)] == [(2, None), (1, None), (3, None)]
    assert [parse_score(v)[1][0] for v in ("1.5", True, None, "-1")] == ["qrels_score"] * 3 + ["negative_score"]
