"""Reading line-oriented input files strictly (atomic writers live in ``searchr3.files``).

Readers yield ``(line_number, record)`` (1-based) and raise :class:`DataError` naming the file,
the line and the rule broken (:mod:`searchr3.data.rules`): ``missing_file``, ``not_a_file``,
``unreadable_file``, ``empty_file``, ``non_utf8``, ``malformed_json``, ``duplicate_key``,
``qrels_columns``. Blank lines are skipped; a byte-order mark and CRLF line ends are accepted.
``.gz`` files are read transparently.

``write_jsonl`` writes in place: call it inside ``searchr3.files.atomic_directory``.
"""
from __future__ import annotations

import errno
import gzip
import json
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path

from searchr3.data.errors import DataError

QRELS_HEADER = ("query-id", "corpus-id", "score")


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def require_path(path: str | Path, folder: bool = False) -> Path:
    """``path`` if it is a regular file (``folder=True``: a folder); else a DataError saying what it is."""
    path = Path(path)
    want = "folder" if folder else "regular file"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(path, None, "missing_file", f"is a symlink to {os.readlink(path)!r}, which does "
                                                        "not exist") from None
        raise DataError(path, None, "missing_file", f"{want.split()[-1]} not found") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DataError(path, None, "not_a_file", f"is a symlink loop, not a {want}") from None
        raise DataError(path, None, "unreadable_file", err.strerror or str(err)) from None
    if folder:
        if not stat.S_ISDIR(mode):
            raise DataError(path, None, "not_a_file", "is a file, expected a folder")
        return path
    if stat.S_ISDIR(mode):
        raise DataError(path, None, "not_a_file", "is a folder, not a file")
    for test, what in _KINDS:
        if test(mode):
            raise DataError(path, None, "not_a_file", f"is {what}, not a regular file")
    return path


def _open_binary(path: Path):
    require_path(path)
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as err:
        raise DataError(path, None, "unreadable_file", err.strerror or str(err)) from None


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered byte lines; I/O and decompression failures become ``unreadable_file``."""
    number = 0
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):  # noqa: B007 - number is read after the loop
                yield number, raw
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise DataError(path, number + 1, "unreadable_file", detail) from None


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file as ``(line_number, text)``; an empty file is an error."""
    path = Path(path)
    seen_any = False
    for number, raw in _raw_lines(path):
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


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    record = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Records of a JSON-lines file; each non-blank line must be a JSON object naming each key once."""
    path = Path(path)
    for number, line in read_lines(path):
        try:
            record = json.loads(line, object_pairs_hook=_unique_keys)
        except _DuplicateKey as err:
            raise DataError(path, number, "duplicate_key", f"key {err.args[0]!r} appears twice in one object "
                                                           "(which value is meant?)") from None
        except json.JSONDecodeError as err:
            raise DataError(path, number, "malformed_json", f"{err.msg} at column {err.colno}") from None
        except RecursionError:
            raise DataError(path, number, "malformed_json", "nested too deeply") from None
        if not isinstance(record, dict):
            raise DataError(path, number, "malformed_json", f"expected a JSON object, got {type(record).__name__}")
        yield number, record


def read_qrels_tsv(path: str | Path) -> Iterator[tuple[int, str, str, str]]:
    """Rows ``(line, query_id, doc_id, score as written)`` of a BEIR qrels file.

    A first line reading ``query-id<TAB>corpus-id<TAB>score`` is the header and is skipped. The
    score is checked by :func:`searchr3.data.rules.parse_score` (loader and validator alike).
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
        yield number, query_id, doc_id, score


def write_jsonl(path: Path, records) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
