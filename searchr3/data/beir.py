"""BEIR folders: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

``load_beir`` reads one split strictly: every defect raises :class:`DataError` naming file, line
and one of the rules of :mod:`searchr3.data.rules` (the same rules ``searchr3 validate`` checks).
:func:`load_split` is that strict reading for any format described as a :class:`RawSplit`
(``hf`` and ``nq`` use it too).

``save_beir`` writes a :class:`RetrievalSet` back in the same layout (title empty, the joined
text in ``text``), so ``load_beir(save_beir(rs, d, split), split)`` returns ``rs``.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from searchr3.data.errors import DataError
from searchr3.data.io import read_jsonl, read_qrels_tsv, require_path, write_jsonl
from searchr3.data.rules import Limits, join_title, parse_score, record_id, record_problems, record_text, same_text
from searchr3.data.types import RawSplit, RetrievalSet

__all__ = ["assemble", "beir_split", "check_set", "collect_texts", "join_title", "load_beir", "load_split", "read_corpus",
           "save_beir"]


def collect_texts(records: Iterable[tuple[int, dict]], where: str | Path, with_title: bool,
                  limits: Limits | None = None, names: dict[str, str] | None = None) -> dict[str, str]:
    """``{_id: text}`` from ``(line, {"_id", "text"[, "title"]})`` records, refusing the first broken row."""
    kind = "corpus" if with_title else "queries"
    limits = limits or Limits()
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, record in records:
        problems = record_problems(record, kind, limits, names)
        if problems:
            raise DataError(where, line, *problems[0])
        key = record_id(record)
        if key in texts:
            raise DataError(where, line, "duplicate_id", f"{key!r} already defined on line {first_line[key]}")
        texts[key] = record_text(record, kind)
        first_line[key] = line
    return texts


def assemble(name: str, corpus: dict[str, str], queries: dict[str, str],
             judgements: Iterable[tuple[int, str, str, object]], qrels_where: str | Path,
             meta: dict | None = None) -> RetrievalSet:
    """Join judgements ``(line, qid, doc_id, score as written)`` to corpus and queries; keep judged queries.

    Refuses (``DataError``) a bad or negative score, an unknown query or document, a pair judged
    twice, a query that is the text of its relevant document, and a split with nothing relevant.
    """
    qrels: dict[str, dict[str, int]] = {}
    for line, qid, doc_id, raw_score in judgements:
        score, problem = parse_score(raw_score)
        if problem:
            raise DataError(qrels_where, line, *problem)
        if qid not in queries:
            raise DataError(qrels_where, line, "qrels_unknown_query", f"query-id {qid!r} is not in the queries")
        if doc_id not in corpus:
            raise DataError(qrels_where, line, "qrels_unknown_doc", f"corpus-id {doc_id!r} is not in the corpus")
        judged = qrels.setdefault(qid, {})
        if doc_id in judged:
            raise DataError(qrels_where, line, "duplicate_judgement", f"({qid!r}, {doc_id!r}) judged twice")
        if score > 0 and same_text(queries[qid], corpus[doc_id]):
            raise DataError(qrels_where, line, "query_is_document",
                            f"query {qid!r} is the text of its relevant document {doc_id!r}")
        judged[doc_id] = score
    if not any(s > 0 for judged in qrels.values() for s in judged.values()):
        what = "no judgement" if not qrels else "no document judged relevant (score >= 1)"
        raise DataError(qrels_where, None, "no_relevant", f"the split has {what}; it cannot train or evaluate")
    kept = {qid: queries[qid] for qid in queries if qid in qrels}
    return RetrievalSet(name=name, corpus=corpus, queries=kept, qrels=qrels, meta=dict(meta or {}))


def read_corpus(folder: str | Path) -> dict[str, str]:
    """``corpus.jsonl`` of a BEIR folder as ``{_id: text}`` (title joined to text); queries and qrels not needed."""
    path = Path(folder) / "corpus.jsonl"
    return collect_texts(read_jsonl(path), path, with_title=True)


def load_split(raw: RawSplit, limits: Limits | None = None) -> RetrievalSet:
    """The strict reading of a :class:`RawSplit`: the first broken rule raises ``DataError``."""
    corpus = collect_texts(raw.corpus(), raw.corpus_where, with_title=True, limits=limits,
                           names=raw.field_names.get("corpus"))
    queries = collect_texts(raw.queries(), raw.queries_where, with_title=False, limits=limits,
                            names=raw.field_names.get("queries"))
    return assemble(raw.name, corpus, queries, raw.judgements(), raw.qrels_where, meta=raw.meta)


def check_set(rs: RetrievalSet, where: str, limits: Limits | None = None) -> RetrievalSet:
    """Apply the shared rules to an in-memory set (the built-in code-search set); returns ``rs`` unchanged.

    A broken rule raises ``DataError`` naming ``where`` and the record's position in the set.
    """
    def numbered(texts: dict[str, str]):
        return [(i, {"_id": key, "text": text}) for i, (key, text) in enumerate(texts.items(), start=1)]

    judgements = [(0, q, d, s) for q, judged in rs.qrels.items() for d, s in judged.items()]
    load_split(RawSplit(name=rs.name, split=str(rs.meta.get("split")), corpus=lambda: numbered(rs.corpus),
                        queries=lambda: numbered(rs.queries), judgements=lambda: judgements,
                        corpus_where=f"{where} corpus", queries_where=f"{where} queries",
                        qrels_where=f"{where} judgements"), limits)
    return rs


def _judged_ids(path: Path) -> set[str]:
    """Query ids of a qrels file, read leniently (another split's defects are reported when it is loaded)."""
    try:
        return {qid for _, qid, _, _ in read_qrels_tsv(path)}
    except DataError:
        return set()


def beir_split(folder: str | Path, split: str = "test", name: str | None = None) -> RawSplit:
    """One split of a BEIR folder as a :class:`RawSplit` (the three files must exist and be regular files)."""
    folder = require_path(folder, folder=True)
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (corpus_path, queries_path, qrels_path):
        require_path(path)

    def other_splits() -> dict[str, set[str]]:
        others = sorted(p for p in (folder / "qrels").glob("*.tsv") if p.name != qrels_path.name and p.is_file())
        return {p.stem: _judged_ids(p) for p in others}

    return RawSplit(name=name or folder.name, split=split, corpus=lambda: read_jsonl(corpus_path),
                    queries=lambda: read_jsonl(queries_path), judgements=lambda: read_qrels_tsv(qrels_path),
                    corpus_where=str(corpus_path), queries_where=str(queries_path), qrels_where=str(qrels_path),
                    other_splits=other_splits, meta={"format": "beir", "path": str(folder), "split": split})


def load_beir(folder: str | Path, split: str = "test", name: str | None = None,
              limits: Limits | None = None) -> RetrievalSet:
    """Load one split of a BEIR folder; queries without a judgement in that split are dropped."""
    return load_split(beir_split(folder, split, name), limits)


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
