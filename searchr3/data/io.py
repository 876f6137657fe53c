"""Reading line-oriented input files strictly, and writing outputs atomically.

Readers yield ``(line_number, record)`` (1-based) and raise :class:`DataError` naming the file,
the line and the rule broken: ``missing_file``, ``empty_file``, ``non_utf8``, ``malformed_json``,
``qrels_columns``, ``qrels_score``. Blank lines are skipped. ``.gz`` files are read transparently.

Writers never leave a half-written output: they build next to the target and ``os.replace`` it.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
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


def write_json_atomic(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON; readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, ensure_ascii=False, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(out: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on success it replaces ``out``.

    If the body raises, the temporary folder is removed and ``out`` is left exactly as it was.
    Replacing an existing folder takes two renames (old aside, new in place); both are on the
    same filesystem, so the window in which ``out`` is missing is a few microseconds.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
