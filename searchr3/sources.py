"""The sources the data stage reads, as content: the ``sources`` stage writes ``metrics/sources.json``.

DVC tracks files inside the repo; the sources a profile names usually live outside it (``../shared/data/scifact``)
or on the hub. The ``sources`` stage reads every source of ``data.sources`` and writes its content hash and row
counts. It runs on every ``dvc repro`` (``always_changed: true`` in dvc.yaml) and costs little (hashing a few
MB); its output changes only when a source's content changes, and the ``data`` stage depends on it, so data is
rebuilt and the model retrained exactly when rows were added to (or edited in) a source.

What identifies each source type:

- ``beir``, ``nq_open``, ``hf`` with ``path`` (a local folder or file): every file under the path (hidden files
  skipped) by sha256, with its size and, for line files (``.jsonl``, ``.tsv``, ``.csv``, also gzipped), the
  number of data rows (a ``.tsv``/``.csv`` header line is not counted);
- ``hf`` with ``name`` (a hub dataset): ``options.revision`` must pin a commit or tag; the hub is not read, the
  revision is the identity, so new hub data arrives by changing that parameter;
- ``codesearch``: built from the standard library of the running Python, whose version is the identity.

``metrics/sources.json`` = ``{"fingerprint": sha256, "sources": {label: {"type", "path", "revision", "sha256",
"files", "bytes", "rows": {file: n}}}}``; ``dvc metrics show`` lists the counts.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import platform
from pathlib import Path

from searchr3.errors import ConfigError
from searchr3.data.config import DataConfig, SourceConfig
from searchr3.data.errors import DataError

LINE_FILES = (".jsonl", ".tsv", ".csv", ".jsonl.gz", ".tsv.gz", ".csv.gz")
HEADER_FILES = (".tsv", ".csv", ".tsv.gz", ".csv.gz")


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_rows(path: Path) -> int | None:
    """Data rows of a line file (non-blank lines; a .tsv/.csv header is not a row); None for other files."""
    name = path.name.lower()
    if not name.endswith(LINE_FILES):
        return None
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        lines = [line for line in handle if line.strip()]
    header = name.endswith(HEADER_FILES) and bool(lines) and not lines[0].split(b"\t")[-1].strip().isdigit()
    return len(lines) - int(header)


def _local_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def fingerprint_source(src: SourceConfig, where: str, root: str | Path = ".") -> dict:
    """The identity of one source (see the module docstring); raises DataError/ConfigError naming ``where``."""
    entry: dict = {"type": src.type, "path": src.path, "revision": None}
    if src.type == "codesearch":
        entry["python"] = platform.python_version()
        entry["sha256"] = hashlib.sha256(f"codesearch python {entry['python']}".encode()).hexdigest()
        return entry
    if src.type == "hf" and not src.path:
        revision = (src.options or {}).get("revision")
        if not revision:
            raise ConfigError(f"params.yaml [{where}]: hf source {src.name!r} reads the hub without a pinned revision; "
                              "set options: {revision: <commit sha or tag>} (a new revision brings new data to the "
                              "nightly; an unpinned one changes without DVC seeing it)")
        entry.update(name=src.name, revision=str(revision))
        entry["sha256"] = hashlib.sha256(f"hub {src.name}@{revision}".encode()).hexdigest()
        return entry
    path = Path(root) / str(src.path)
    if not path.exists():
        raise DataError(path, None, "missing_file", f"source {src.display_label()} ({where}) is not there")
    files = _local_files(path)
    if not files:
        raise DataError(path, None, "empty_file", f"source {src.display_label()} ({where}) holds no file")
    digest = hashlib.sha256()
    rows: dict[str, int] = {}
    size = 0
    for file in files:
        name = file.name if path.is_file() else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{_hash_file(file)}\n".encode())
        size += file.stat().st_size
        count = count_rows(file)
        if count is not None:
            rows[name] = count
    entry.update(sha256=digest.hexdigest(), files=len(files), bytes=size, rows=rows)
    if src.type == "hf":
        entry["revision"] = (src.options or {}).get("revision")
    return entry


def fingerprint_sources(config: DataConfig, root: str | Path = ".") -> dict:
    """``{"fingerprint", "sources": {label: entry}}`` for every source of ``config`` (paths relative to ``root``)."""
    sources = {src.display_label(): fingerprint_source(src, f"data.sources[{i}]", root)
               for i, src in enumerate(config.source_configs())}
    identity = {label: {"type": e["type"], "sha256": e["sha256"]} for label, e in sources.items()}
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return {"fingerprint": fingerprint, "sources": sources}
