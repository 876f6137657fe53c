"""A promoted release on disk, and the one function that verifies it before anyone serves it.

A release (``production/releases/<id>/``, written by ``searchr3.promote``) holds ``model/`` (a
``save_pretrained`` folder whose ``manifest.json`` names ``weights_sha256``), ``index/`` (a snapshot whose
manifest names the ``model_checksum`` that encoded it) and ``corpus/corpus.jsonl`` (the documents the
index holds). :func:`release_paths` resolves them from a production record; :func:`verify_release`
recomputes what can be recomputed and returns one :class:`Check` per rule, so a caller (the search
service before a hot swap) refuses a release whose files do not agree with each other.

File integrity is not checked here but by ``searchr3.integrity.verify_artifact`` (per-file sha256 in each
manifest), the one verifier every loader uses. To add a rule, write a ``_check_*`` function returning a
:class:`Check` and call it from :func:`verify_release`; callers need no change.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from searchr3.data.errors import DataError

CORPUS_DIR = "corpus"  # inside a release: corpus/corpus.jsonl, the documents of index/


@dataclass(frozen=True)
class ReleasePaths:
    """Where one release's parts are (absolute or relative to the process's working folder)."""

    release: str  # release id (the record's ``release``; the model path when there is none)
    model: Path
    index: Path
    corpus: Path | None  # folder with corpus.jsonl; None: the record and the index name none
    record: dict | None = None  # the production record this came from (None: paths given by hand)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


class ReleaseInvalid(Exception):
    """A release failed verification; ``checks`` holds every rule's outcome."""

    def __init__(self, release: str, checks: list[Check]):
        self.release = release
        self.checks = checks
        failed = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
        super().__init__(f"release {release} failed verification: {failed}")


def release_paths(record: dict, root: str | Path = ".") -> ReleasePaths:
    """The parts of the release a production record points at (paths in a record are relative to ``root``)."""
    root = Path(root)
    if not record.get("model"):
        raise ValueError("the production record names no model")
    if not record.get("index"):
        raise ValueError(f"release {record.get('release')}: the production record names no index snapshot; "
                         "promotion copies one only when indexes/production was built with the promoted model")
    index = root / record["index"]
    corpus = record.get("corpus") or _manifest_corpus(index)
    return ReleasePaths(release=str(record.get("release") or record["model"]), model=root / record["model"],
                        index=index, corpus=(root / corpus) if corpus else None, record=record)


def workspace_paths(model: str | Path, index: str | Path, root: str | Path = ".") -> ReleasePaths:
    """A model and an index named by hand (no record): the corpus is the one the index manifest names
    (a relative path there is relative to ``root``, the repo root, as the index stage writes it)."""
    corpus = _manifest_corpus(Path(index))
    return ReleasePaths(release=f"{Path(model).name}@{Path(index).name}", model=Path(model), index=Path(index),
                        corpus=(Path(root) / corpus) if corpus else None)


def _manifest_corpus(index: Path) -> str | None:
    try:
        return json.loads((index / "manifest.json").read_text()).get("corpus")
    except (OSError, json.JSONDecodeError):
        return None


def verify_release(paths: ReleasePaths) -> list[Check]:
    """Every rule's outcome (all are run, so one report names every problem). Reads files only; loads no model.

    - ``model_manifest``: ``model/manifest.json`` exists and names ``weights_sha256``;
    - ``model_weights``: every file the manifest seals has its size and sha256 (``searchr3.integrity``, the
      verifier the embedder and the snapshot loader use), and the weights sha256 follows from them;
    - ``record_checksum``: the record's ``model_checksum`` (when it has one) equals the recomputed sha256;
    - ``index_manifest``: the snapshot's manifest is readable and complete, and its sealed files verify;
    - ``index_model``: the snapshot's ``model_checksum`` equals the recomputed model sha256 (the index was
      encoded by these weights);
    - ``corpus``: every document id of the index has a text in ``corpus.jsonl`` (snippets and BM25 need them).
    """
    from searchr3.integrity import MANIFEST, verify_artifact
    from searchr3.model.materialize import verify_model

    checks: list[Check] = []
    claimed = _json(paths.model / MANIFEST).get("weights_sha256") if (paths.model / MANIFEST).is_file() else None
    checks.append(Check("model_manifest", bool(claimed),
                        f"{paths.model / MANIFEST} names weights_sha256" if claimed
                        else f"{paths.model / MANIFEST}: missing, or without weights_sha256"))
    actual = None
    if claimed:
        try:  # the one verifier (searchr3.integrity): every sealed file's size and sha256
            actual = verify_model(paths.model)
        except DataError as err:
            checks.append(Check("model_weights", False, str(err)))
        else:
            checks.append(Check("model_weights", True, f"every file sha256-verified; weights {_short(actual)}"))
    record_sum = (paths.record or {}).get("model_checksum")
    if record_sum is not None:
        checks.append(Check("record_checksum", record_sum == actual,
                            f"record model_checksum {_short(record_sum)}" + ("" if record_sum == actual else
                                                                            f" but the weights are {_short(actual)}")))
    try:
        from searchr3.index.snapshot import INDEX_FILE, IDS_FILE, VERSIONS_FILE, read_manifest

        manifest = read_manifest(paths.index)
        verify_artifact(paths.index, manifest, require=(INDEX_FILE, IDS_FILE, VERSIONS_FILE))
    except DataError as err:
        checks.append(Check("index_manifest", False, str(err)))
        return checks
    checks.append(Check("index_manifest", True, f"{manifest['count']} vectors of dim {manifest['dim']}"))
    encoded_by = manifest.get("model_checksum")
    checks.append(Check("index_model", encoded_by == actual,
                        f"index encoded by {_short(encoded_by)}" + ("" if encoded_by == actual else
                                                                   f" but the model is {_short(actual)}")))
    checks.append(_check_corpus(paths))
    return checks


def _check_corpus(paths: ReleasePaths) -> Check:
    if paths.corpus is None:
        return Check("corpus", False, "no corpus: neither the record nor the index manifest names one")
    try:
        ids = json.loads((paths.index / "doc_ids.json").read_text())
        texts = read_documents(paths.corpus)
    except (OSError, json.JSONDecodeError, DataError) as err:
        return Check("corpus", False, str(err))
    missing = [d for d in ids if d not in texts]
    if missing:
        return Check("corpus", False, f"{len(missing)} of {len(ids)} indexed documents have no text in "
                                      f"{paths.corpus}/corpus.jsonl (first: {missing[0]!r})")
    return Check("corpus", True, f"{len(ids)} indexed documents, all in {paths.corpus}/corpus.jsonl")


def require_valid(paths: ReleasePaths) -> list[Check]:
    """:func:`verify_release`, raising :class:`ReleaseInvalid` when any rule fails."""
    checks = verify_release(paths)
    if not all(c.ok for c in checks):
        raise ReleaseInvalid(paths.release, checks)
    return checks


def read_documents(folder: str | Path) -> dict[str, dict]:
    """``{_id: {"title", "text"}}`` of ``folder/corpus.jsonl`` (BEIR); defects raise DataError naming the line."""
    from searchr3.data.beir import collect_texts
    from searchr3.data.io import read_jsonl

    path = Path(folder) / "corpus.jsonl"
    records = list(read_jsonl(path))
    texts = collect_texts(records, path, with_title=False)  # refuses missing ids/texts and duplicates
    titles = {str(r["_id"]): r.get("title") or "" for _, r in records}
    return {doc_id: {"title": titles[doc_id], "text": text} for doc_id, text in texts.items()}


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "none"
