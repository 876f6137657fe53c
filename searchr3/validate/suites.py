"""The expectation suites: one function per kind of table, each expectation tagged with its rule.

``meta["rule"]`` is the stable name a failure report uses (``unique_ids``, ``doc_exists`` ...);
``Check.index_columns`` are the columns that identify an offending row in reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from searchr3.validate.config import ValidateConfig

NON_BLANK = r"\S"


@dataclass
class Check:
    name: str  # dataset name in reports, e.g. "scifact-test.qrels" (no '/')
    frame: pd.DataFrame
    expectations: list = field(default_factory=list)
    index_columns: list[str] = field(default_factory=list)


def _gxe():
    import great_expectations.expectations as gxe

    return gxe


def _tag(expectation, rule: str, description: str):
    expectation.meta = {"rule": rule}
    expectation.description = description
    return expectation


def _is(column: str, value: bool, rule: str, description: str):
    return _tag(_gxe().ExpectColumnValuesToBeInSet(column=column, value_set=[value]), rule, description)


def text_table_expectations(id_column: str, max_chars: int, config: ValidateConfig) -> list:
    """Corpus or queries: non-empty table, ids present and unique, text non-blank and bounded."""
    gxe = _gxe()
    return [
        _tag(gxe.ExpectTableRowCountToBeBetween(min_value=1), "not_empty", "the table has rows"),
        _tag(gxe.ExpectColumnValuesToMatchRegex(column=id_column, regex=NON_BLANK), "ids_present",
             f"every row has a non-blank {id_column}"),
        _tag(gxe.ExpectColumnValuesToBeUnique(column=id_column), "unique_ids", f"{id_column} values are unique"),
        _tag(gxe.ExpectColumnValuesToMatchRegex(column="text", regex=NON_BLANK), "non_empty_text",
             "every text has a non-blank character"),
        _tag(gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=config.min_text_chars,
                                                     max_value=max_chars),
             "text_length", f"text length within [{config.min_text_chars}, {max_chars}] characters"),
    ]


def corpus_check(name: str, frame: pd.DataFrame, config: ValidateConfig) -> Check:
    return Check(f"{name}.corpus", frame, text_table_expectations("doc_id", config.max_doc_chars, config),
                 ["line", "doc_id"])


def queries_check(name: str, frame: pd.DataFrame, config: ValidateConfig) -> Check:
    return Check(f"{name}.queries", frame, text_table_expectations("query_id", config.max_query_chars, config),
                 ["line", "query_id"])


def qrels_check(name: str, frame: pd.DataFrame) -> Check:
    gxe = _gxe()
    return Check(f"{name}.qrels", frame, [
        _tag(gxe.ExpectTableRowCountToBeBetween(min_value=1), "not_empty", "the split has judgements"),
        _is("score_is_int", True, "integer_score", "every score is an integer"),
        _is("query_exists", True, "query_exists", "every judged query is in queries.jsonl"),
        _is("doc_exists", True, "doc_exists", "every judged document (positives included) is in the corpus"),
        _tag(gxe.ExpectCompoundColumnsToBeUnique(column_list=["query_id", "doc_id"]), "unique_judgement",
             "no (query, document) pair is judged twice"),
        _tag(gxe.ExpectColumnMaxToBeBetween(column="score", min_value=1), "has_relevant",
             "the split judges at least one document relevant"),
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
