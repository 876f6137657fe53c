"""Artifacts that verify themselves: per-file sha256 in a folder's ``manifest.json``, checked at load.

A model folder (``searchr3.model.materialize.save_model``) and an index snapshot
(``searchr3.index.snapshot.save_snapshot``) are *sealed* when written: :func:`seal` adds to the manifest
``files: {relative path: {"sha256", "size"}}`` for every file of the folder except the manifest itself.
:func:`verify_artifact` is **the one verifier**: the embedder and the snapshot loader call it before they
read anything, ``searchr3.release.verify_release`` (serving, promotion) calls it for a release's model and
index, and anyone copying an artifact (``searchr3.promote``) can call it on the copy. A file that is
missing, has another size or another sha256 raises :class:`~searchr3.errors.ArtifactError` (exit 4)
naming that file.

Fast path: hashing a 540 MB model takes seconds, so a verified hash is remembered in a small cache
(``$SEARCHR3_CACHE_DIR/verified.json``, default ``~/.cache/searchr3``) keyed by the file's absolute path,
device, inode, size, mtime and ctime. Any write to the file changes its ctime (which no user tool can set
back), so a file changed after it was verified is hashed again; a file damaged without any write (a failing
disk) is caught on the first load after the cache entry is gone. ``SEARCHR3_VERIFY=full`` ignores the cache.
The artifact folders themselves are never written (DVC tracks them).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from searchr3.errors import ArtifactError

MANIFEST = "manifest.json"
CACHE_ENV = "SEARCHR3_CACHE_DIR"
VERIFY_ENV = "SEARCHR3_VERIFY"  # "full": hash every file, ignoring the cache
_CACHE_FILE = "verified.json"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def artifact_files(folder: str | Path) -> list[str]:
    """Every regular file under ``folder`` (relative POSIX paths, sorted), except the manifest."""
    folder = Path(folder)
    out = []
    for root, _, names in os.walk(folder):
        for name in names:
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel != MANIFEST and (Path(root) / name).is_file():
                out.append(rel)
    return sorted(out)


def file_digests(folder: str | Path) -> dict[str, dict]:
    """``{relative path: {"sha256", "size"}}`` for :func:`artifact_files` of ``folder``."""
    folder = Path(folder)
    return {rel: {"sha256": sha256_file(folder / rel), "size": (folder / rel).stat().st_size}
            for rel in artifact_files(folder)}


def seal(folder: str | Path, manifest: dict) -> dict:
    """``manifest`` plus ``files`` (the digests of everything now in ``folder``); call it last, before the
    manifest is written."""
    return {**manifest, "files": file_digests(folder)}


# ---- the fast-path cache -------------------------------------------------------------------------

def _cache_path() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "searchr3")
    return Path(root) / _CACHE_FILE


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _load_cache() -> dict:
    if os.environ.get(VERIFY_ENV) == "full":
        return {}
    try:
        value = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _save_cache(cache: dict) -> None:
    """Best effort: a cache that cannot be written only costs a re-hash next time."""
    from searchr3.files import write_json_atomic

    try:
        if len(cache) > 5000:  # old entries: keep the newest half
            cache = dict(list(cache.items())[-2500:])
        write_json_atomic(_cache_path(), cache)
    except OSError:
        pass


def cached_sha256(path: str | Path, cache: dict | None = None) -> str:
    """sha256 of ``path``, from ``cache`` when the file's (inode, size, mtime, ctime) are the ones it was hashed at."""
    path = Path(path).resolve()
    key = str(path)
    stat_key = _stat_key(path)
    if cache is not None:
        hit = cache.get(key)
        if isinstance(hit, dict) and hit.get("stat") == stat_key:
            return hit["sha256"]
    digest = sha256_file(path)
    if cache is not None and _stat_key(path) == stat_key:  # unchanged while it was being read
        cache.pop(key, None)
        cache[key] = {"stat": stat_key, "sha256": digest}
    return digest


# ---- the verifier ---------------------------------------------------------------------------------

def read_manifest(folder: str | Path) -> dict:
    """The folder's manifest as a dict; a missing or broken one is an ArtifactError naming it."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ArtifactError(path, None, "missing_manifest", "no manifest.json: not a searchr3 artifact folder")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ArtifactError(path, None, "invalid-json", f"not UTF-8 ({err.reason})") from err
    except json.JSONDecodeError as err:
        raise ArtifactError(path, err.lineno, "invalid-json", err.msg) from err
    if not isinstance(value, dict):
        raise ArtifactError(path, None, "invalid-json", "the manifest is not a JSON object")
    return value


def verify_artifact(folder: str | Path, manifest: dict | None = None, *, require: tuple[str, ...] = ()) -> dict:
    """Check every file the manifest lists (size, then sha256) and that ``require``d files are listed.

    Returns the manifest. Raises ArtifactError naming the first bad file: ``checksum_mismatch`` (another
    sha256), ``size_mismatch``, ``missing_file``; ``unsealed_artifact`` when the manifest lists no files
    (written before artifacts were sealed: rebuild it); ``unlisted_file`` when a ``require``d file is not
    listed. Files in the folder that the manifest does not list are ignored.
    """
    folder = Path(folder)
    manifest = read_manifest(folder) if manifest is None else manifest
    files = manifest.get("files")
    where = folder / MANIFEST
    if not isinstance(files, dict) or not files:
        raise ArtifactError(where, None, "unsealed_artifact",
                            "the manifest lists no per-file sha256 (written by an older searchr3, or by hand), "
                            "so its files cannot be verified")
    for name in require:
        if name not in files:
            raise ArtifactError(where, None, "unlisted_file", f"{name} is not among the files the manifest seals")
    cache = _load_cache()
    known = dict(cache)
    for rel, entry in sorted(files.items()):
        path = folder / rel
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or ".." in Path(rel).parts:
            raise ArtifactError(where, None, "invalid-json", f"files[{rel!r}] is not {{sha256, size}}")
        if not path.is_file():
            raise ArtifactError(path, None, "missing_file", "listed in the manifest but absent (or not a regular file)")
        size = path.stat().st_size
        if entry.get("size") is not None and size != entry["size"]:
            raise ArtifactError(path, None, "size_mismatch",
                                f"{size} bytes but the manifest says {entry['size']} (truncated or replaced)")
        digest = cached_sha256(path, cache)
        if digest != entry["sha256"]:
            cache.pop(str(path.resolve()), None)
            raise ArtifactError(path, None, "checksum_mismatch",
                                f"sha256 {digest[:12]} but the manifest says {entry['sha256'][:12]}: the file is "
                                "damaged or was changed after it was written")
    if cache != known and os.environ.get(VERIFY_ENV) != "full":
        _save_cache(cache)
    return manifest
