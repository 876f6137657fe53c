"""Tables (pandas) that the Great Expectations suites check, with the computed columns they need.

Corpus, queries and qrels tables are built from a :class:`~searchr3.data.types.RawSplit` (any input
format) with the shared rules of :mod:`searchr3.data.rules`: one boolean column per rule, True where
the row breaks it, computed by the very functions the loaders use. Reading is lenient about content
(every broken row is listed, with its line number) but strict about syntax: a file that is not UTF-8
JSON lines, or a qrels row without three columns, raises ``DataError`` as in the loaders.

Cross-table facts are computed here too (``qrels_unknown_doc``, ``shared_query``, training-row
``leaked_text`` ...) so that a plain GX expectation (value in ``{False}``) checks them and Data Docs
lists the offending rows.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from searchr3.data.beir import beir_split
from searchr3.data.rules import (JUDGEMENT_RULES, RECORD_RULES, SURROGATE, Limits, parse_score, record_id,
                                 record_problems, record_text, same_text, text_key)
from searchr3.data.types import RawSplit

query_key = text_key


def _printable(value):
    """A string pandas/Arrow can hold: lone surrogates (reported by ``invalid_unicode``) become U+FFFD."""
    if isinstance(value, str) and SURROGATE.search(value):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def records_frame(records, kind: str, id_column: str, limits: Limits, names: dict | None = None) -> pd.DataFrame:
    """``line, <id_column>, text`` and one column per record rule of a corpus or queries file."""
    rows = []
    for line, record in records:
        broken = {rule for rule, _ in record_problems(record, kind, limits, names)}
        row = {"line": line, id_column: _printable(record_id(record)), "text": _printable(record_text(record, kind))}
        row.update({rule: rule in broken for rule in RECORD_RULES})
        rows.append(row)
    return pd.DataFrame(rows, columns=["line", id_column, "text", *RECORD_RULES])


def judgements_frame(judgements, corpus: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    """``line, query_id, doc_id, score`` and one column per judgement rule of a qrels file."""
    doc_text = dict(zip(corpus["doc_id"], corpus["text"]))
    query_text = dict(zip(queries["query_id"], queries["text"]))
    rows = []
    for line, qid, doc_id, raw in judgements:
        qid, doc_id = _printable(qid), _printable(doc_id)
        score, problem = parse_score(raw)
        broken = {problem[0]} if problem else set()
        if qid not in query_text:
            broken.add("qrels_unknown_query")
        if doc_id not in doc_text:
            broken.add("qrels_unknown_doc")
        elif score is not None and score > 0 and qid in query_text and same_text(query_text[qid], doc_text[doc_id]):
            broken.add("query_is_document")
        row = {"line": line, "query_id": qid, "doc_id": doc_id, "score": score}
        row.update({rule: rule in broken for rule in JUDGEMENT_RULES})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["line", "query_id", "doc_id", "score", *JUDGEMENT_RULES])
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame


def split_frames(raw: RawSplit, limits: Limits | None = None) -> dict[str, pd.DataFrame]:
    """``{"corpus", "queries", "qrels"}`` tables of one split, every rule computed per row."""
    limits = limits or Limits()
    corpus = records_frame(raw.corpus(), "corpus", "doc_id", limits, raw.field_names.get("corpus"))
    queries = records_frame(raw.queries(), "queries", "query_id", limits, raw.field_names.get("queries"))
    qrels = judgements_frame(raw.judgements(), corpus, queries)
    judged = set(qrels["query_id"])
    elsewhere = set().union(*raw.other_splits().values())
    other_texts = {text_key(t) for q, t in zip(queries["query_id"], queries["text"]) if q in elsewhere and t}
    queries["shared_query"] = [q in judged and (q in elsewhere or (bool(t) and text_key(t) in other_texts))
                               for q, t in zip(queries["query_id"], queries["text"])]
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def beir_frames(folder: str | Path, split: str, limits: Limits | None = None) -> dict[str, pd.DataFrame]:
    """``{"corpus", "queries", "qrels"}`` tables of one split of a BEIR folder."""
    return split_frames(beir_split(folder, split), limits)


def train_frame(train: pd.DataFrame, corpus: pd.DataFrame, eval_queries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Training rows plus ``n_negatives, negative_is_positive, positive_in_corpus,
    negatives_in_corpus, leaked_id, leaked_text``.

    ``corpus``: ``doc_id, source`` of the training corpus. ``eval_queries``: per source label,
    the evaluation queries (``query_id, text``) of that source; texts count across all sources.
    """
    frame = train.copy()
    known_docs = set(zip(corpus["source"], corpus["doc_id"]))
    eval_ids = {label: set(q["query_id"]) for label, q in eval_queries.items()}
    eval_texts = {query_key(t) for q in eval_queries.values() for t in q["text"]}
    neg_ids = [list(v) for v in frame["negative_ids"]]
    negs = [list(v) for v in frame["negatives"]]
    frame["n_negatives"] = [len(v) for v in neg_ids]
    frame["negative_is_positive"] = [pid in ids or pos in texts for pid, pos, ids, texts
                                     in zip(frame["positive_id"], frame["positive"], neg_ids, negs)]
    frame["positive_in_corpus"] = [(s, d) in known_docs for s, d in zip(frame["source"], frame["positive_id"])]
    frame["negatives_in_corpus"] = [all((s, d) in known_docs for d in ids) for s, ids in zip(frame["source"], neg_ids)]
    frame["leaked_id"] = [q in eval_ids.get(s, ()) for s, q in zip(frame["source"], frame["query_id"])]
    frame["leaked_text"] = [query_key(t) in eval_texts for t in frame["query"]]
    return frame.drop(columns=["negatives", "negative_ids", "negative_scores"], errors="ignore")


def balance_frame(train: pd.DataFrame) -> pd.DataFrame:
    """``source, rows, share`` of the training rows."""
    counts = train["source"].value_counts().sort_index()
    total = int(counts.sum())
    return pd.DataFrame({"source": counts.index.astype(str), "rows": counts.values.astype(int),
                         "share": counts.values / total if total else counts.values.astype(float)})
