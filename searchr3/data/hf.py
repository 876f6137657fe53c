"""Retrieval sets from Hugging Face ``datasets``: a hub id, a local dataset repo, or ``save_to_disk`` folders.

Two layouts are understood:

* **BEIR-style dataset repo** (hub id such as ``mteb/scifact``, or a local folder with the same
  files and a ``README.md`` whose ``configs:`` header names them). Read with
  ``datasets.load_dataset(name_or_path, config)``, three configs:

  ===========  ====================  =====================================================
  config       split used            columns (first name found wins)
  ===========  ====================  =====================================================
  ``corpus``   its only split        id: ``_id``/``id``/``doc_id``; ``text``; optional ``title``
  ``queries``  its only split        id: ``_id``/``id``/``query_id``; text: ``text``/``query``
  ``default``  ``split`` (train...)  ``query-id``/``query_id``; ``corpus-id``/``corpus_id``/``doc_id``;
                                     ``score``/``relevance``/``label``
  ===========  ====================  =====================================================

  (``mteb/scifact`` ships ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{train,test}.jsonl``.)

* **Saved folders**: ``name_or_path`` holds ``corpus/``, ``queries/`` and ``qrels/`` written by
  ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``; ``qrels`` must be a ``DatasetDict``
  keyed by split. Same column names as above.

Rows are checked with the same rules as every loader (:mod:`searchr3.data.rules`); a
:class:`DataError` names ``PATH[config/split]`` and the 1-based row number as its line. A folder
that ``datasets`` cannot read at all is ``unreadable_dataset``.
"""
from __future__ import annotations

from pathlib import Path

from searchr3.data.beir import load_split
from searchr3.data.errors import DataError
from searchr3.data.rules import Limits
from searchr3.data.types import RawSplit, RetrievalSet

ID_COLUMNS = {"corpus": ("_id", "id", "doc_id", "corpus-id"), "queries": ("_id", "id", "query_id", "query-id")}
TEXT_COLUMNS = {"corpus": ("text",), "queries": ("text", "query")}
QRELS_COLUMNS = {"query": ("query-id", "query_id", "qid"), "doc": ("corpus-id", "corpus_id", "doc_id", "docid"),
                 "score": ("score", "relevance", "label")}


def dataset_card(qrels_splits: list[str]) -> str:
    """The ``README.md`` header that makes a local folder a dataset repo in the mteb layout above
    (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.jsonl``), readable by ``load_hf``."""
    splits = "".join(f"  - split: {s}\n    path: qrels/{s}.jsonl\n" for s in qrels_splits)
    return ("---\nconfigs:\n- config_name: corpus\n  data_files:\n  - split: corpus\n    path: corpus.jsonl\n"
            "- config_name: queries\n  data_files:\n  - split: queries\n    path: queries.jsonl\n"
            f"- config_name: default\n  data_files:\n{splits}---\n")


def _pick(columns: list[str], candidates: tuple[str, ...], where: str, role: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise DataError(where, None, "missing_column", f"no {role} column (tried {list(candidates)}; has {columns})")


def _single_split(dsd, where: str):
    """The only split of a DatasetDict (corpus and queries configs have exactly one)."""
    import datasets

    if isinstance(dsd, datasets.Dataset):
        return dsd
    if len(dsd) != 1:
        raise DataError(where, None, "ambiguous_split", f"expected one split, found {sorted(dsd)}")
    return next(iter(dsd.values()))


def _records(ds, kind: str, where: str):
    """``(row, {"_id", "text"[, "title"]})`` of a corpus or queries dataset (rows numbered from 1)."""
    columns = list(ds.column_names)
    id_col = _pick(columns, ID_COLUMNS[kind], where, "id")
    text_col = _pick(columns, TEXT_COLUMNS[kind], where, "text")
    wanted = {"_id": id_col, "text": text_col}
    if kind == "corpus" and "title" in columns:
        wanted["title"] = "title"
    cols = {key: ds[col] for key, col in wanted.items()}
    return [(i + 1, {key: values[i] for key, values in cols.items()}) for i in range(len(ds))]


def _qrels_columns(ds, where: str) -> dict[str, str]:
    return {role: _pick(list(ds.column_names), options, where, role) for role, options in QRELS_COLUMNS.items()}


def _judgements(ds, where: str):
    """``(row, query_id, doc_id, score as stored)``; the score is checked by the shared rules."""
    names = _qrels_columns(ds, where)
    qids, docs, scores = ds[names["query"]], ds[names["doc"]], ds[names["score"]]
    return [(i, str(qid), str(doc), score) for i, (qid, doc, score) in enumerate(zip(qids, docs, scores), start=1)]


def _guarded(where: str, load):
    """Run a ``datasets`` read; any failure of the library to read the folder is ``unreadable_dataset``."""
    try:
        return load()
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many types for an unreadable folder
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise DataError(where, None, "unreadable_dataset", f"{type(err).__name__}: {detail}") from None


def is_saved_folder(folder: Path) -> bool:
    """Whether ``folder`` holds ``save_to_disk`` outputs (the saved-folders layout)."""
    return any((folder / "corpus" / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json"))


def _saved_parts(folder: Path, split: str):
    """``(corpus, queries, qrels DatasetDict, where)`` of a folder of ``save_to_disk`` outputs."""
    import datasets

    where = {"corpus": f"{folder / 'corpus'}", "queries": f"{folder / 'queries'}",
             "qrels": f"{folder / 'qrels'}[{split}]"}

    def load(part: str):
        return _guarded(where[part], lambda: datasets.load_from_disk(str(folder / part)))

    corpus = _single_split(load("corpus"), where["corpus"])
    queries = _single_split(load("queries"), where["queries"])
    return corpus, queries, load("qrels"), where


def _repo_parts(source: str, split: str, configs: tuple[str, str, str], revision: str | None,
                cache_dir: str | None):
    """``(corpus, queries, qrels DatasetDict, where)`` of a dataset repo, via ``load_dataset``."""
    import datasets

    if not Path(source).exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise DataError(source, None, "missing_file", "neither a local folder nor a hub id ([owner/]name)")
    corpus_config, queries_config, qrels_config = configs
    where = {"corpus": f"{source}[{corpus_config}]", "queries": f"{source}[{queries_config}]",
             "qrels": f"{source}[{qrels_config}/{split}]"}

    def load(config: str, part: str):
        return _guarded(where[part], lambda: datasets.load_dataset(source, config, revision=revision,
                                                                   cache_dir=cache_dir))

    corpus = _single_split(load(corpus_config, "corpus"), where["corpus"])
    queries = _single_split(load(queries_config, "queries"), where["queries"])
    return corpus, queries, load(qrels_config, "qrels"), where


def hf_split(name_or_path: str | Path, split: str = "test", *, corpus_config: str = "corpus",
             queries_config: str = "queries", qrels_config: str = "default", revision: str | None = None,
             name: str | None = None, cache_dir: str | Path | None = None) -> RawSplit:
    """``split`` of a BEIR-style dataset (see the module docstring) as a :class:`RawSplit`."""
    import datasets

    source = str(name_or_path)
    folder = Path(source)
    if folder.is_dir() and is_saved_folder(folder):
        layout = "save_to_disk"
        corpus_ds, queries_ds, qrels_dict, where = _saved_parts(folder, split)
    else:
        layout = "load_dataset"
        corpus_ds, queries_ds, qrels_dict, where = _repo_parts(
            source, split, (corpus_config, queries_config, qrels_config), revision,
            str(cache_dir) if cache_dir is not None else None)
    if not isinstance(qrels_dict, datasets.DatasetDict) or split not in qrels_dict:
        found = sorted(qrels_dict) if isinstance(qrels_dict, datasets.DatasetDict) else "a single Dataset"
        raise DataError(where["qrels"], None, "missing_split", f"no qrels split {split!r} (found {found})")
    corpus = _guarded(where["corpus"], lambda: _records(corpus_ds, "corpus", where["corpus"]))
    queries = _guarded(where["queries"], lambda: _records(queries_ds, "queries", where["queries"]))
    judgements = _guarded(where["qrels"], lambda: _judgements(qrels_dict[split], where["qrels"]))

    def other_splits() -> dict[str, set[str]]:
        out = {}
        for other in sorted(set(qrels_dict) - {split}):
            ds = qrels_dict[other]
            out[other] = {str(q) for q in ds[_qrels_columns(ds, where["qrels"])["query"]]}
        return out

    return RawSplit(name=name or Path(source.rstrip("/")).name, split=split, corpus=lambda: corpus,
                    queries=lambda: queries, judgements=lambda: judgements, corpus_where=where["corpus"],
                    queries_where=where["queries"], qrels_where=where["qrels"], other_splits=other_splits,
                    meta={"format": "hf", "layout": layout, "source": source, "split": split, "revision": revision})


def load_hf(name_or_path: str | Path, split: str = "test", *, corpus_config: str = "corpus",
            queries_config: str = "queries", qrels_config: str = "default", revision: str | None = None,
            name: str | None = None, cache_dir: str | Path | None = None, limits: Limits | None = None) -> RetrievalSet:
    """Load ``split`` of a BEIR-style dataset through ``datasets`` (see the module docstring).

    ``cache_dir`` is passed to ``load_dataset`` (default: the ``datasets`` cache, ``HF_DATASETS_CACHE``).
    """
    return load_split(hf_split(name_or_path, split, corpus_config=corpus_config, queries_config=queries_config,
                               qrels_config=qrels_config, revision=revision, name=name, cache_dir=cache_dir), limits)
