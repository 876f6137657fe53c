"""Natural Questions (open) in the "oracle" format of the Lost-in-the-Middle release.

Each line: ``{"question", "answers", "ctxs": [{"title", "text", ...}, ...]}`` where ``ctxs[0]``
is the gold passage. The retrieval set: query = question, its one relevant document = the gold
passage (``title + "\\n" + text``), corpus = every gold passage of the file, deduplicated (so the
other questions' passages are the distractors). The file has no splits: ``split="train"|"test"``
partitions the questions by a seeded hash of the question text (``test_fraction`` of them go to
test), so the partition never depends on file order and identical questions stay together.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from searchr3.data.beir import load_split
from searchr3.data.errors import DataError
from searchr3.data.io import read_jsonl
from searchr3.data.rules import Limits, record_text
from searchr3.data.types import RawSplit, RetrievalSet
from searchr3.errors import ConfigError

SPLITS = (None, "train", "test")
# what the shared rules call a record's fields, as this file names them (for error messages)
FIELD_NAMES = {"corpus": {"text": "ctxs[0].text", "title": "ctxs[0].title", "_id": "passage id"},
               "queries": {"text": "question", "_id": "question id"}}


def stable_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``(seed, key)``, the same on every machine and Python version."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _gold(record: dict, path: Path, line: int) -> dict:
    ctxs = record.get("ctxs")
    if not isinstance(ctxs, list) or not ctxs or not isinstance(ctxs[0], dict):
        raise DataError(path, line, "missing_field", "'ctxs' must be a non-empty list of passages")
    return {"title": ctxs[0].get("title"), "text": ctxs[0].get("text")}


def nq_split(path: str | Path, split: str | None = None, *, test_fraction: float = 0.2, seed: int = 0,
             limit: int | None = None, name: str = "nq_open") -> RawSplit:
    """The file as a :class:`RawSplit`: gold passages (deduplicated), every question (so that the rules see
    each line whichever split is read), and one judgement per question of ``split``."""
    if split not in SPLITS:
        raise ConfigError(f"nq_open split must be one of {SPLITS}, not {split!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) or not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"nq_open test_fraction must be in (0, 1), got {test_fraction!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"nq_open limit must be a positive integer or null, got {limit!r}")
    path = Path(path)
    corpus: list[tuple[int, dict]] = []
    queries: list[tuple[int, dict]] = []
    judgements: list[tuple[int, str, str, int]] = []
    seen_docs: set[str] = set()
    seen_pairs: set[tuple[str, str]] = set()
    query_of_text: dict[str, str] = {}
    questions = 0
    for line, record in read_jsonl(path):
        if limit is not None and questions >= limit:
            break
        questions += 1
        passage = _gold(record, path, line)
        text = record_text(passage, "corpus")
        doc_id = "nq-" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16] if text \
            else f"nq-line{line}"
        if doc_id not in seen_docs:
            seen_docs.add(doc_id)
            corpus.append((line, {"_id": doc_id, **passage}))
        question = record.get("question")
        in_split = True
        if isinstance(question, str) and question.strip():
            question = " ".join(question.split())
            in_test = stable_fraction(question.lower(), seed) < test_fraction
            in_split = split is None or in_test == (split == "test")
            qid = query_of_text.get(question)
            if qid is None:
                qid = query_of_text[question] = f"nq-q{line}"
                queries.append((line, {"_id": qid, "text": question}))
        else:  # not a question: no split can be computed; the rules report it whichever split is read
            qid = f"nq-q{line}"
            queries.append((line, {"_id": qid, "text": question}))
        if in_split and (qid, doc_id) not in seen_pairs:
            seen_pairs.add((qid, doc_id))
            judgements.append((line, qid, doc_id, 1))
    where = str(path)
    return RawSplit(name=name, split=split or "all", corpus=lambda: corpus, queries=lambda: queries,
                    judgements=lambda: judgements, corpus_where=where, queries_where=where, qrels_where=where,
                    field_names=FIELD_NAMES,
                    meta={"format": "nq_open", "path": where, "split": split or "all", "test_fraction": test_fraction,
                          "seed": seed, "questions_read": questions})


def load_nq_open(path: str | Path, split: str | None = None, *, test_fraction: float = 0.2, seed: int = 0,
                 limit: int | None = None, name: str = "nq_open", limits: Limits | None = None) -> RetrievalSet:
    """Read the oracle file (``.jsonl`` or ``.jsonl.gz``); ``limit`` keeps the first questions only."""
    return load_split(nq_split(path, split, test_fraction=test_fraction, seed=seed, limit=limit, name=name), limits)
