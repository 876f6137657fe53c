"""Reading line-oriented input files strictly (atomic writers live in ``searchr3.files``).

Readers yield ``(line_number, record)`` (1-based) and raise :class:`DataError` naming the file,
the line and the rule broken: ``missing_file``, ``empty_file``, ``non_utf8``, ``malformed_json``,
``qrels_columns``, ``qrels_score``. Blank lines are skipped. ``.gz`` files are read transparently.

``write_jsonl`` writes in place: call it inside ``searchr3.files.atomic_directory``.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from searchr3.data.errors import DataError

QRELS_HEADER = ("query-id", "corpus-id", "score")


def _open_binary(path: Path):
    if not path.is_file():
        raise DataError(path, None, "missing_file", "file not found")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file as ``(line_number, text)``; an empty file is an error."""
    path = Path(path)
    seen_any = False
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                detail = f"byte {raw[err.start]:#04x} at column {err.start + 1}"
                raise DataError(path, number, "non_utf8", detail) from None
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark is not content
            if not line.strip():
                continue
            seen_any = True
            yield number, line.rstrip("\r\n")
    if not seen_any:
        raise DataError(path, None, "empty_file", "no records")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Records of a JSON-lines file; each non-blank line must be a JSON object."""
    path = Path(path)
    for number, line in read_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, number, "malformed_json", err.msg) from None
        if not isinstance(record, dict):
            raise DataError(path, number, "malformed_json", f"expected a JSON object, got {type(record).__name__}")
        yield number, record


def read_qrels_tsv(path: str | Path) -> Iterator[tuple[int, str, str, int]]:
    """Rows ``(line, query_id, doc_id, score)`` of a BEIR qrels file.

    A first line reading ``query-id<TAB>corpus-id<TAB>score`` is the header and is skipped.
    """
    path = Path(path)
    first = True
    for number, line in read_lines(path):
        cols = line.split("\t")
        if len(cols) != 3:
            raise DataError(path, number, "qrels_columns",
                            f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}")
        query_id, doc_id, score = (c.strip() for c in cols)
        is_header, first = first and tuple(c.strip() for c in cols) == QRELS_HEADER, False
        if is_header:
            continue
        try:
            value = int(score)
        except ValueError:
            raise DataError(path, number, "qrels_score", f"score {score!r} is not an integer") from None
        yield number, query_id, doc_id, value


def write_jsonl(path: Path, records) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
