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

from searchr3.data.beir import join_title
from searchr3.data.errors import DataError
from searchr3.data.io import read_jsonl
from searchr3.data.types import RetrievalSet

SPLITS = (None, "train", "test")


def stable_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``(seed, key)``, the same on every machine and Python version."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _gold_passage(record: dict, path: Path, line: int) -> str:
    ctxs = record.get("ctxs")
    if not isinstance(ctxs, list) or not ctxs or not isinstance(ctxs[0], dict):
        raise DataError(path, line, "missing_field", "'ctxs' must be a non-empty list of passages")
    gold = ctxs[0]
    text = gold.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, line, "empty_field", "ctxs[0].text is missing or empty")
    return join_title(gold.get("title"), text)


def load_nq_open(path: str | Path, split: str | None = None, *, test_fraction: float = 0.2, seed: int = 0,
                 limit: int | None = None, name: str = "nq_open") -> RetrievalSet:
    """Read the oracle file (``.jsonl`` or ``.jsonl.gz``); ``limit`` keeps the first questions only."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    path = Path(path)
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    query_of_text: dict[str, str] = {}
    questions = 0
    for line, record in read_jsonl(path):
        if limit is not None and questions >= limit:
            break
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(path, line, "missing_field", "'question' is missing or empty")
        passage = _gold_passage(record, path, line)
        questions += 1
        doc_id = "nq-" + hashlib.sha1(passage.encode()).hexdigest()[:16]
        corpus[doc_id] = passage
        question = " ".join(question.split())
        in_test = stable_fraction(question.lower(), seed) < test_fraction
        if split is not None and in_test != (split == "test"):
            continue
        qid = query_of_text.setdefault(question, f"nq-q{line}")
        queries[qid] = question
        qrels.setdefault(qid, {})[doc_id] = 1
    return RetrievalSet(name=name, corpus=corpus, queries=queries, qrels=qrels,
                        meta={"format": "nq_open", "path": str(path), "split": split or "all",
                              "test_fraction": test_fraction, "seed": seed, "questions_read": questions})
