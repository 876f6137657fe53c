"""BEIR folders: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

``load_beir`` reads one split strictly; every defect raises :class:`DataError` with its own
rule: ``missing_file``, ``empty_file``, ``non_utf8``, ``malformed_json``, ``missing_field``
(``_id``/``text`` absent or null), ``empty_field`` (blank ``_id``/``text``), ``field_type``,
``duplicate_id``, ``qrels_columns``, ``qrels_score``, ``duplicate_judgement``,
``qrels_unknown_doc``, ``qrels_unknown_query``.

``save_beir`` writes a :class:`RetrievalSet` back in the same layout (title empty, the joined
text in ``text``), so ``load_beir(save_beir(rs, d, split), split)`` returns ``rs``.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from searchr3.data.errors import DataError
from searchr3.data.io import read_jsonl, read_qrels_tsv, write_jsonl
from searchr3.data.types import RetrievalSet


def join_title(title: str | None, text: str) -> str:
    """Document text as every loader builds it: ``title + "\\n" + text`` when the title is non-empty."""
    title = (title or "").strip()
    return f"{title}\n{text}" if title else text


def _required_str(record: dict, key: str, where: str | Path, line: int) -> str:
    value = record.get(key)
    if value is None:
        raise DataError(where, line, "missing_field", f"no {key!r}")
    if isinstance(value, int) and not isinstance(value, bool) and key != "text":
        value = str(value)  # some BEIR exports store numeric ids
    if not isinstance(value, str):
        raise DataError(where, line, "field_type", f"{key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(where, line, "empty_field", f"{key!r} is empty")
    return value


def collect_texts(records: Iterable[tuple[int, dict]], where: str | Path, with_title: bool) -> dict[str, str]:
    """``{_id: text}`` from ``(line, {"_id", "text"[, "title"]})`` records, refusing defects."""
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, record in records:
        key = _required_str(record, "_id", where, line)
        text = _required_str(record, "text", where, line)
        if with_title:
            title = record.get("title")
            if title is not None and not isinstance(title, str):
                raise DataError(where, line, "field_type", f"'title' must be a string, got {type(title).__name__}")
            text = join_title(title, text)
        if key in texts:
            raise DataError(where, line, "duplicate_id", f"{key!r} already defined on line {first_line[key]}")
        texts[key] = text
        first_line[key] = line
    return texts


def assemble(name: str, corpus: dict[str, str], queries: dict[str, str],
             judgements: Iterable[tuple[int, str, str, int]], qrels_where: str | Path,
             meta: dict | None = None) -> RetrievalSet:
    """Join judgements ``(line, qid, doc_id, score)`` to corpus and queries; keep judged queries only."""
    qrels: dict[str, dict[str, int]] = {}
    for line, qid, doc_id, score in judgements:
        if doc_id not in corpus:
            raise DataError(qrels_where, line, "qrels_unknown_doc", f"corpus-id {doc_id!r} is not in the corpus")
        if qid not in queries:
            raise DataError(qrels_where, line, "qrels_unknown_query", f"query-id {qid!r} is not in the queries")
        judged = qrels.setdefault(qid, {})
        if doc_id in judged:
            raise DataError(qrels_where, line, "duplicate_judgement", f"({qid!r}, {doc_id!r}) judged twice")
        judged[doc_id] = score
    kept = {qid: queries[qid] for qid in queries if qid in qrels}
    return RetrievalSet(name=name, corpus=corpus, queries=kept, qrels=qrels, meta=dict(meta or {}))


def read_corpus(folder: str | Path) -> dict[str, str]:
    """``corpus.jsonl`` of a BEIR folder as ``{_id: text}`` (title joined to text); queries and qrels not needed."""
    path = Path(folder) / "corpus.jsonl"
    return collect_texts(read_jsonl(path), path, with_title=True)


def load_beir(folder: str | Path, split: str = "test", name: str | None = None) -> RetrievalSet:
    """Load one split of a BEIR folder; queries without a judgement in that split are dropped."""
    folder = Path(folder)
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (corpus_path, queries_path, qrels_path):
        if not path.is_file():
            raise DataError(path, None, "missing_file", "file not found")
    corpus = read_corpus(folder)
    queries = collect_texts(read_jsonl(queries_path), queries_path, with_title=False)
    return assemble(name or folder.name, corpus, queries, read_qrels_tsv(qrels_path), qrels_path,
                    meta={"format": "beir", "path": str(folder), "split": split})


def save_beir(rs: RetrievalSet, folder: str | Path, split: str = "test") -> Path:
    """Write ``rs`` as a BEIR folder (corpus, judged queries, ``qrels/<split>.tsv``); returns the folder."""
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "corpus.jsonl", ({"_id": d, "title": "", "text": t} for d, t in rs.corpus.items()))
    write_jsonl(folder / "queries.jsonl", ({"_id": q, "text": t} for q, t in rs.queries.items()))
    with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in rs.qrels.items():
            for doc_id, score in judged.items():
                handle.write(f"{qid}\t{doc_id}\t{score}\n")
    return folder
