"""Tables (pandas) that the Great Expectations suites check, with the computed columns they need.

Reading is lenient about content (a blank text, a duplicate id, a judgement naming an unknown
document become rows the suites reject, with their line numbers) but strict about syntax: a
file that is not UTF-8 JSON lines, or a qrels row without three columns, raises ``DataError``.

Cross-table facts are computed here as boolean columns (``doc_exists``, ``leaked_text`` ...)
so that a plain GX expectation (value in ``{True}`` / ``{False}``) checks them and Data Docs
lists the offending rows.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from searchr3.data.beir import join_title
from searchr3.data.build import query_key
from searchr3.data.errors import DataError
from searchr3.data.io import read_jsonl, read_lines


def _text_or_empty(value) -> str:
    return value if isinstance(value, str) else ""


def _id_or_empty(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else ""


def texts_frame(path: Path, id_column: str, with_title: bool) -> pd.DataFrame:
    """``line, <id_column>, text`` from a BEIR corpus/queries file; missing fields become ``""``."""
    rows = []
    for line, record in read_jsonl(path):
        text = _text_or_empty(record.get("text"))
        if with_title and isinstance(record.get("title"), str) and text:
            text = join_title(record["title"], text)
        rows.append({"line": line, id_column: _id_or_empty(record.get("_id")), "text": text})
    return pd.DataFrame(rows, columns=["line", id_column, "text"])


def qrels_frame(path: Path, doc_ids: set[str], query_ids: set[str]) -> pd.DataFrame:
    """``line, query_id, doc_id, score, score_is_int, query_exists, doc_exists`` of a qrels TSV."""
    rows = []
    for line, text in read_lines(path):
        cols = [c.strip() for c in text.split("\t")]
        if len(cols) != 3:
            raise DataError(path, line, "qrels_columns", f"expected 3 tab-separated columns, got {len(cols)}")
        if not rows and cols == ["query-id", "corpus-id", "score"]:
            continue
        qid, doc_id, score = cols
        try:
            value, is_int = int(score), True
        except ValueError:
            value, is_int = None, False
        rows.append({"line": line, "query_id": qid, "doc_id": doc_id, "score": value, "score_is_int": is_int})
    frame = pd.DataFrame(rows, columns=["line", "query_id", "doc_id", "score", "score_is_int"])
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    frame["query_exists"] = frame["query_id"].isin(query_ids)
    frame["doc_exists"] = frame["doc_id"].isin(doc_ids)
    return frame


def beir_frames(folder: str | Path, split: str) -> dict[str, pd.DataFrame]:
    """``{"corpus", "queries", "qrels"}`` tables of one split of a BEIR folder."""
    folder = Path(folder)
    corpus = texts_frame(folder / "corpus.jsonl", "doc_id", with_title=True)
    queries = texts_frame(folder / "queries.jsonl", "query_id", with_title=False)
    qrels = qrels_frame(folder / "qrels" / f"{split}.tsv", set(corpus["doc_id"]), set(queries["query_id"]))
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


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
