"""The expectation suites: one function per kind of table, each expectation tagged with its rule.

``meta["rule"]`` is the stable name a failure report uses; for corpus, queries and qrels tables the
expectations are generated from the rule lists of :mod:`searchr3.data.rules` (the loaders' rules),
so the validator and the loaders cannot drift apart. ``meta["severity"]`` is ``warning`` for rules
that are reported without failing the run (``shared_query``). ``Check.index_columns`` are the
columns that identify an offending row in reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from searchr3.data.rules import JUDGEMENT_RULES, RECORD_RULES, RULES
from searchr3.validate.config import ValidateConfig

NON_BLANK = r"\S"


@dataclass
class Check:
    name: str  # dataset name in reports, e.g. "scifact-test.qrels" (no '/')
    frame: pd.DataFrame
    expectations: list = field(default_factory=list)
    index_columns: list[str] = field(default_factory=list)
    file: str | None = None  # the file (or dataset folder) the rows come from, named first in failure reports


def _gxe():
    import great_expectations.expectations as gxe

    return gxe


def _tag(expectation, rule: str, description: str | None = None):
    expectation.meta = {"rule": rule, "severity": RULES[rule].severity if rule in RULES else "error"}
    expectation.description = description or RULES[rule].description
    return expectation


def _is(column: str, value: bool, rule: str, description: str | None = None):
    return _tag(_gxe().ExpectColumnValuesToBeInSet(column=column, value_set=[value]), rule, description)


def _rule_columns(rules) -> list:
    """One expectation per rule: its boolean column (computed by the shared rule functions) is all False."""
    return [_is(rule, False, rule) for rule in rules]


def text_table_expectations(id_column: str) -> list:
    """Corpus or queries: rows present, every record rule kept, ids unique."""
    gxe = _gxe()
    return [
        _tag(gxe.ExpectTableRowCountToBeBetween(min_value=1), "empty_file"),
        *_rule_columns(RECORD_RULES),
        _tag(gxe.ExpectColumnValuesToBeUnique(column=id_column), "duplicate_id"),
    ]


def corpus_check(name: str, frame: pd.DataFrame) -> Check:
    return Check(f"{name}.corpus", frame, text_table_expectations("doc_id"), ["line", "doc_id"])


def queries_check(name: str, frame: pd.DataFrame) -> Check:
    expectations = text_table_expectations("query_id")
    if "shared_query" in frame.columns:
        expectations.append(_is("shared_query", False, "shared_query"))
    return Check(f"{name}.queries", frame, expectations, ["line", "query_id"])


def qrels_check(name: str, frame: pd.DataFrame) -> Check:
    gxe = _gxe()
    return Check(f"{name}.qrels", frame, [
        _tag(gxe.ExpectTableRowCountToBeBetween(min_value=1), "no_relevant", "the split has judgements"),
        *_rule_columns(JUDGEMENT_RULES),
        _tag(gxe.ExpectCompoundColumnsToBeUnique(column_list=["query_id", "doc_id"]), "duplicate_judgement"),
        _tag(gxe.ExpectColumnMaxToBeBetween(column="score", min_value=1), "no_relevant"),
    ], ["line", "query_id", "doc_id"])


def train_check(frame: pd.DataFrame, config: ValidateConfig) -> Check:
    """Training triples, after :func:`searchr3.validate.frames.train_frame` added its columns."""
    gxe = _gxe()
    return Check("train", frame, [
        _tag(gxe.ExpectTableRowCountToBeBetween(min_value=1), "not_empty", "there are training rows"),
        _tag(gxe.ExpectCompoundColumnsToBeUnique(column_list=["source", "query_id"]), "unique_ids",
             "one row per (source, query_id)"),
        _tag(gxe.ExpectColumnValuesToMatchRegex(column="query", regex=NON_BLANK), "non_empty_query",
             "every query has a non-blank character"),
        _tag(gxe.ExpectColumnValuesToMatchRegex(column="positive", regex=NON_BLANK), "non_empty_positive",
             "every positive has a non-blank character"),
        _tag(gxe.ExpectColumnValueLengthsToBeBetween(column="query", min_value=config.min_text_chars,
                                                     max_value=config.max_query_chars),
             "query_length", f"query length within [{config.min_text_chars}, {config.max_query_chars}]"),
        _tag(gxe.ExpectColumnValueLengthsToBeBetween(column="positive", min_value=config.min_text_chars,
                                                     max_value=config.max_doc_chars),
             "positive_length", f"positive length within [{config.min_text_chars}, {config.max_doc_chars}]"),
        _is("positive_in_corpus", True, "positive_in_corpus", "the positive is a document of the training corpus"),
        _is("negatives_in_corpus", True, "negatives_in_corpus", "every negative is a document of the training corpus"),
        _is("negative_is_positive", False, "negative_not_positive", "no negative equals the positive (id or text)"),
        _tag(gxe.ExpectColumnValuesToBeBetween(column="n_negatives", min_value=config.min_negatives),
             "min_negatives", f"at least {config.min_negatives} negative(s) per row"),
        _is("leaked_id", False, "no_eval_query_id", "no training query id is an evaluation query id of its source"),
        _is("leaked_text", False, "no_eval_query_text", "no training query text equals an evaluation query text"),
    ], ["source", "query_id"])


def balance_check(frame: pd.DataFrame, config: ValidateConfig) -> Check:
    """Share of each source in the training rows (the upper bound only applies to 2+ sources)."""
    gxe = _gxe()
    upper = config.max_source_share if len(frame) > 1 else 1.0
    return Check("train_balance", frame, [
        _tag(gxe.ExpectColumnValuesToBeBetween(column="share", min_value=config.min_source_share, max_value=upper),
             "source_share", f"each source holds between {config.min_source_share:.0%} and {upper:.0%} of the rows"),
    ], ["source"])
