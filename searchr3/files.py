"""Writing outputs atomically (files and folders), and reading a JSON file that may be absent.

Every writer in the project goes through this module, so a reader (or a crash at any point) sees the
old output or the new one, never a half-written one:

- :func:`atomic_file` yields an open handle on a temporary file beside the target and moves it into
  place with ``os.replace`` when the block succeeds (on an error the temporary file is removed and the
  target is left as it was); :func:`write_text_atomic` and :func:`write_json_atomic` are built on it.
- :func:`atomic_directory` yields an empty temporary folder beside the target and swaps it into place
  when the block succeeds (two renames when the target exists: old aside, new in; the old one is
  deleted after).

``durable=True`` also makes the result survive a power cut: the file (every file of a folder) is
fsynced before the rename and the parent folder after it. It costs a few milliseconds per file, so it
is used where a later step trusts the output after a crash: the production record and the release it
points to, and training checkpoints (a resumed run reads them). Pipeline outputs that DVC can rebuild
are written without it.

Permissions: files and folders get what ``open``/``mkdir`` would give them (0o666/0o777 less the
umask), not the private 0o600/0o700 of ``tempfile``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (``root`` included)."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        fsync_dir(folder)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", *, durable: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` (``"w"``: UTF-8 text, ``"wb"``: bytes); on success it replaces ``path``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str, *, durable: bool = False) -> Path:
    with atomic_file(path, "w", durable=durable) as handle:
        handle.write(text)
    return Path(path)


def json_text(obj, *, sort_keys: bool = False, ascii_only: bool = False) -> str:
    """``obj`` as the project writes JSON files: indented by 2, one trailing newline."""
    return json.dumps(obj, indent=2, ensure_ascii=ascii_only, sort_keys=sort_keys) + "\n"


def write_json_atomic(path: str | Path, obj, *, sort_keys: bool = False, ascii_only: bool = False,
                      durable: bool = False) -> Path:
    """Write ``obj`` as indented JSON (:func:`json_text`); readers see the old file or the new one."""
    return write_text_atomic(path, json_text(obj, sort_keys=sort_keys, ascii_only=ascii_only), durable=durable)


@contextlib.contextmanager
def atomic_directory(out: str | Path, *, durable: bool = False) -> Iterator[Path]:
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
        os.chmod(tmp, 0o777 & ~_umask())
        if durable:
            _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if durable:
        fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_json_if_exists(path: str | Path):
    """The parsed JSON of ``path``, or None when there is no such file."""
    p = Path(path)
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
