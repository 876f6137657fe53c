"""The data stage: load every source, mine negatives, guard against leakage, mix, write atomically.

Output folder (``searchr3 data build --out data``)::

    data/
      manifest.json          counts per source and split, mining stats, the config used
      train/                 HF dataset (save_to_disk): query_id, query, positive_id, positive,
                             negative_ids, negatives, positive_score, negative_scores, source
      train_corpus/          HF dataset: doc_id, text, source (every document of the training sets;
                             the corpus a live index is built from during RL)

Training document ids (``positive_id``, ``negative_ids``, ``train_corpus.doc_id``) are ``doc_key(source,
id)`` = ``"<source label>:<id in the source>"``: a source's ids are unique only within it, these are unique
across sources, and every later stage (the RL index, its reward and refresh) uses them unchanged.
      eval/<label>-<split>/  BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv
                             (read back with ``load_eval_set``; any BEIR tool reads it too)

Every source is read by its strict loader under the shared rules (:mod:`searchr3.data.rules`,
with the size bounds of ``validate:``), so the data stage refuses exactly what ``searchr3 validate``
refuses; the built-in code-search set is checked by the same rules.

Leakage guard (rule ``shared_query``, a warning): a training query whose text (whitespace-collapsed,
lower-cased) equals any evaluation query of any source, or whose id is an evaluation query id of
the same source, is dropped before mixing, counted in the manifest and reported as a warning. Mixing: source ``i`` gets a share
``weight_i / sum(weights)`` of ``train_size`` rows (null: the largest size every source can fill);
rows are picked and ordered by a seeded hash, so a build is reproducible.
The whole folder is built beside ``out`` and swapped in only when everything succeeded.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import math
import platform
from dataclasses import asdict
from pathlib import Path

from searchr3.config import ConfigError
from searchr3.data.beir import check_set, load_beir, save_beir
from searchr3.data.bm25 import Bm25Config
from searchr3.data.codesearch import build_codesearch
from searchr3.data.config import DataConfig, SourceConfig
from searchr3.data.errors import ArtifactError, DataError
from searchr3.data.hf import load_hf
from searchr3.files import atomic_directory, write_json_atomic
from searchr3.data.mining import mine_bm25, mine_dense
from searchr3.data.nq import load_nq_open
from searchr3.data.rules import Limits, text_key
from searchr3.data.types import RetrievalSet

log = logging.getLogger(__name__)

TRAIN_DIR, TRAIN_CORPUS_DIR, EVAL_DIR, MANIFEST = "train", "train_corpus", "eval", "manifest.json"
TRAIN_COLUMNS = ("query_id", "query", "positive_id", "positive", "negative_ids", "negatives",
                 "positive_score", "negative_scores", "source")


def doc_key(source: str, doc_id: str) -> str:
    """A training document's id from the data stage on: ``"<source label>:<id in the source>"``."""
    return f"{source}:{doc_id}"


query_key = text_key  # the form in which two queries count as the same text (leakage checks use it too)


def _hash_order(seed: int, *parts: str) -> str:
    return hashlib.sha256("\x00".join([str(seed), *parts]).encode()).hexdigest()


def _call(loader, where: str, *args, **kwargs):
    """Call a loader, turning an unknown ``options`` key or a bad option value into a ConfigError naming it."""
    try:
        inspect.signature(loader).bind(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"[{where}]: bad options for {loader.__name__}: {err}") from None
    try:
        return loader(*args, **kwargs)
    except ConfigError as err:
        raise ConfigError(f"[{where}]: {err}") from None


def load_source(src: SourceConfig, seed: int, where: str = "data.sources", progress: bool = False,
                limits: Limits | None = None) -> dict[str, RetrievalSet]:
    """The train split (if any) and eval splits of one source, keyed by split name (rules checked)."""
    splits = ([src.train_split] if src.train_split else []) + list(src.eval_splits)
    label = src.display_label()
    limits = limits or Limits()
    if src.type == "codesearch":
        sets = _call(build_codesearch, where, seed, progress=progress, **src.options)
        missing = sorted(set(splits) - set(sets))
        if missing:
            raise ConfigError(f"[{where}]: codesearch has splits {sorted(sets)}, not {missing}")
        return {s: check_set(sets[s], f"codesearch {s} set ({sets[s].meta.get('stdlib')})", limits) for s in splits}
    carved = "dev" if src.dev_from_train else None  # built from the train split below, not read from the source
    out = {}
    for split in dict.fromkeys(s for s in splits if s != carved):
        if src.type == "beir":
            out[split] = _call(load_beir, where, src.path, split, name=label, limits=limits, **src.options)
        elif src.type == "nq_open":
            out[split] = _call(load_nq_open, where, src.path, split, seed=seed, name=label, limits=limits,
                               **src.options)
        else:
            out[split] = _call(load_hf, where, src.name or src.path, split, name=label, limits=limits, **src.options)
    if carved:
        out[carved] = carve_dev(out[src.train_split], src.dev_from_train, seed, where)
    return out


def carve_dev(train: RetrievalSet, n: int, seed: int, where: str = "data.sources") -> RetrievalSet:
    """A dev set of ``n`` seeded judged queries of ``train`` over its corpus (``dev_from_train``).

    The training rows of those queries are dropped later by the leakage guard (an evaluation query never
    trains), so no claim is in both. At least as many judged queries must remain to train on."""
    judged = sorted(train.judged_queries(), key=lambda q: _hash_order(seed, train.name, "dev", q))
    if n > len(judged) // 2:
        raise ConfigError(f"[{where}]: dev_from_train={n} would leave fewer training queries than dev ones "
                          f"({len(judged)} judged train queries)")
    kept = set(judged[:n])
    return RetrievalSet(name=train.name, corpus=train.corpus, queries={q: t for q, t in train.queries.items() if q in kept},
                        qrels={q: train.qrels[q] for q in train.qrels if q in kept},
                        meta={**train.meta, "split": "dev", "carved_from": "train", "dev_from_train": n})


def cap_queries(rs: RetrievalSet, limit: int | None, seed: int) -> RetrievalSet:
    """Keep a seeded subset of ``limit`` queries (the corpus is untouched)."""
    if limit is None or len(rs.queries) <= limit:
        return rs
    kept = sorted(rs.queries, key=lambda q: _hash_order(seed, rs.name, q))[:limit]
    kept_set = set(kept)
    return RetrievalSet(name=rs.name, corpus=rs.corpus, queries={q: t for q, t in rs.queries.items() if q in kept_set},
                        qrels={q: rs.qrels[q] for q in rs.qrels if q in kept_set}, meta={**rs.meta, "max_train": limit})


def share_counts(available: dict[str, int], weights: dict[str, float], total: int | None) -> dict[str, int]:
    """Rows per source for a mix in proportion to ``weights`` (largest-remainder rounding).

    ``total=None``: the largest total that every source can supply in proportion. A source that
    cannot fill its share of an explicit ``total`` gives all it has; a source with no rows is left out.
    """
    available = {s: n for s, n in available.items() if n > 0}  # an empty source cannot take a share
    norm = sum(weights[s] for s in available)
    share = {s: weights[s] / norm for s in available}
    if total is None:
        total = min(math.floor(available[s] / share[s] + 1e-9) for s in available) if available else 0
    exact = {s: share[s] * total for s in available}
    counts = {s: math.floor(v) for s, v in exact.items()}
    for s in sorted(available, key=lambda s: (-(exact[s] - counts[s]), s))[:total - sum(counts.values())]:
        counts[s] += 1
    return {s: min(counts[s], available[s]) for s in available}


def mix_rows(rows_by_source: dict[str, list[dict]], weights: dict[str, float], total: int | None,
             seed: int) -> list[dict]:
    counts = share_counts({s: len(r) for s, r in rows_by_source.items()}, weights, total)
    mixed = []
    for source, rows in rows_by_source.items():
        if source not in counts:
            log.warning("source %s has no training rows left; the mix leaves it out", source)
            continue
        ordered = sorted(rows, key=lambda r: _hash_order(seed, "pick", source, r["query_id"]))
        mixed.extend(ordered[:counts[source]])
    return sorted(mixed, key=lambda r: _hash_order(seed, "order", r["source"], r["query_id"]))


def _mine(train: RetrievalSet, config: DataConfig, embedder, bm25: Bm25Config | None, progress: bool):
    m = config.mining
    kwargs = dict(k=m.depth, false_negative_ratio=m.false_negative_ratio, seed=config.seed,
                  num_negatives=m.negatives, progress=progress)
    if m.method == "dense":
        return mine_dense(embedder, train, **kwargs)
    return mine_bm25(train, config=bm25, **kwargs)


def _set_counts(rs: RetrievalSet) -> dict:
    return {"queries": len(rs.queries), "documents": len(rs.corpus),
            "judgements": sum(len(j) for j in rs.qrels.values())}


def _write_datasets(folder: Path, rows: list[dict], corpus_rows: list[dict], progress: bool) -> None:
    import datasets

    train_features = datasets.Features({
        "query_id": datasets.Value("string"), "query": datasets.Value("string"),
        "positive_id": datasets.Value("string"), "positive": datasets.Value("string"),
        "negative_ids": datasets.List(datasets.Value("string")), "negatives": datasets.List(datasets.Value("string")),
        "positive_score": datasets.Value("float32"), "negative_scores": datasets.List(datasets.Value("float32")),
        "source": datasets.Value("string"),
    })
    corpus_features = datasets.Features({"doc_id": datasets.Value("string"), "text": datasets.Value("string"),
                                         "source": datasets.Value("string")})
    columns = {c: [r[c] for r in rows] for c in TRAIN_COLUMNS}
    corpus_columns = {c: [r[c] for r in corpus_rows] for c in ("doc_id", "text", "source")}
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        datasets.Dataset.from_dict(columns, features=train_features).save_to_disk(str(folder / TRAIN_DIR))
        datasets.Dataset.from_dict(corpus_columns, features=corpus_features).save_to_disk(
            str(folder / TRAIN_CORPUS_DIR))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _evaluation_queries(sources: list[SourceConfig], loaded: dict) -> tuple[set[str], dict[str, set[str]]]:
    """Texts (as ``query_key``) of every evaluation query, and evaluation query ids per source."""
    keys: set[str] = set()
    ids: dict[str, set[str]] = {}
    for src in sources:
        label = src.display_label()
        for split in src.eval_splits:
            rs = loaded[label][split]
            keys.update(query_key(t) for t in rs.queries.values())
            ids.setdefault(label, set()).update(rs.queries)
    return keys, ids


def build_data(config: DataConfig, out: str | Path, progress: bool = True, embedder=None,
               bm25: Bm25Config | None = None, limits: Limits | None = None) -> dict:
    """Build the data stage into ``out`` (replaced atomically); returns the manifest.

    ``bm25`` (the ``bm25:`` section) configures BM25 mining; ``embedder`` replaces ``mining.model`` for dense mining.
    ``limits``: the size bounds of the shared rules (``Limits.of(ValidateConfig)``; default: its defaults).
    """
    sources = config.source_configs()
    if config.mining.method == "dense" and embedder is None:
        from searchr3.model.embedder import Embedder

        embedder = Embedder.from_pretrained(config.mining.model)
    loaded: dict[str, dict[str, RetrievalSet]] = {}
    for i, src in enumerate(sources):
        log.info("loading source %s (%s)", src.display_label(), src.type)
        loaded[src.display_label()] = load_source(src, config.seed, where=f"data.sources[{i}]", progress=progress,
                                                  limits=limits)

    eval_keys, eval_ids = _evaluation_queries(sources, loaded)
    manifest: dict = {"layout": {"train": f"{TRAIN_DIR}/ (HF save_to_disk)",
                                 "train_corpus": f"{TRAIN_CORPUS_DIR}/ (HF save_to_disk)",
                                 "eval": f"{EVAL_DIR}/<label>-<split>/ (BEIR folder)"},
                      "python": platform.python_version(), "seed": config.seed, "config": asdict(config),
                      "bm25": asdict(bm25 or Bm25Config()) if config.mining.method == "bm25" else None,
                      "sources": {}, "eval_sets": {}}
    rows_by_source: dict[str, list[dict]] = {}
    corpus_rows: list[dict] = []
    with atomic_directory(out) as tmp:
        for src in sources:
            label = src.display_label()
            entry: dict = {"type": src.type, "weight": src.weight}
            for split in src.eval_splits:
                name = f"{label}-{split}"
                save_beir(loaded[label][split], tmp / EVAL_DIR / name, split)
                manifest["eval_sets"][name] = {"path": f"{EVAL_DIR}/{name}", "split": split,
                                               **_set_counts(loaded[label][split])}
            if src.train_split:
                train = cap_queries(loaded[label][src.train_split], src.max_train, config.seed)
                result = _mine(train, config, embedder, bm25, progress)
                rows = [{**row, "source": label, "positive_id": doc_key(label, row["positive_id"]),
                         "negative_ids": [doc_key(label, d) for d in row["negative_ids"]]} for row in result.rows
                        if query_key(row["query"]) not in eval_keys and row["query_id"] not in eval_ids.get(label, ())]
                leaked = len(result.rows) - len(rows)
                if leaked:
                    log.warning("warning: shared_query: %d training queries of source %s are also evaluation "
                                "queries (same id, or same text in any source); dropped from training", leaked, label)
                rows_by_source[label] = rows
                corpus_rows.extend({"doc_id": doc_key(label, d), "text": t, "source": label} for d, t in train.corpus.items())
                entry["train"] = {"split": src.train_split, **_set_counts(train), "rows_mined": len(result.rows),
                                  "dropped_leaking_queries": leaked}
                entry["mining"] = result.stats.as_dict()
                log.info("%s: mined %d rows (%.1f queries/s), %d candidates dropped by the false-negative filter",
                         label, len(result.rows), result.stats.queries_per_s, result.stats.dropped_by_filter)
            manifest["sources"][label] = entry
        weights = {s.display_label(): s.weight for s in sources if s.train_split}
        mixed = mix_rows(rows_by_source, weights, config.train_size, config.seed)
        by_source = {s: sum(r["source"] == s for r in mixed) for s in rows_by_source}
        for label, n in by_source.items():
            manifest["sources"][label]["train"]["rows_in_mix"] = n
        manifest["train"] = {"rows": len(mixed), "by_source": by_source, "corpus_documents": len(corpus_rows)}
        if weights and not mixed:
            raise DataError("data.sources", None, "no_training_rows",
                            f"the training splits of {sorted(weights)} left no row after mining and the leakage guard")
        _write_datasets(tmp, mixed, corpus_rows, progress)
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def eval_set_dirs(data_dir: str | Path) -> list[Path]:
    """The evaluation folders of a data-stage output, sorted by name."""
    root = Path(data_dir) / EVAL_DIR
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def load_eval_set(folder: str | Path) -> RetrievalSet:
    """Read an ``eval/<label>-<split>/`` folder (BEIR layout with exactly one qrels file)."""
    folder = Path(folder)
    qrels = sorted((folder / "qrels").glob("*.tsv"))
    if len(qrels) != 1:
        raise ArtifactError(folder / "qrels", None, "missing_file" if not qrels else "ambiguous_split",
                            f"expected one qrels/<split>.tsv, found {[p.name for p in qrels]}")
    return load_beir(folder, qrels[0].stem, name=folder.name)


def dev_set(data_dir: str | Path, name: str | None = None) -> RetrievalSet | None:
    """The evaluation set SFT chooses its checkpoint on: ``name`` (``sft.dev_set``), else the first ``*-dev``
    set, else None when the data has none. A ``name`` the data stage did not write is an error, not a fallback."""
    if name:
        folder = Path(data_dir) / EVAL_DIR / name
        if not folder.is_dir():
            raise ArtifactError(folder, None, "missing_file", f"sft.dev_set {name!r} is not an evaluation set of "
                                f"the data stage (it wrote {[d.name for d in eval_set_dirs(data_dir)]})")
        return load_eval_set(folder)
    dev = [d for d in eval_set_dirs(data_dir) if d.name.endswith("-dev")]
    return load_eval_set(dev[0]) if dev else None


def _load_saved(path: Path, what: str):
    import datasets

    if not path.is_dir():
        raise ArtifactError(path, None, "missing_file", f"no {what} dataset (run `searchr3 data build`)")
    try:
        return datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - datasets raises many types for a damaged folder
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ArtifactError(path, None, "unreadable_dataset", f"{type(err).__name__}: {detail}") from None


def load_train(data_dir: str | Path):
    """The mixed training rows (``datasets.Dataset``)."""
    return _load_saved(Path(data_dir) / TRAIN_DIR, "train")


def load_train_corpus(data_dir: str | Path):
    return _load_saved(Path(data_dir) / TRAIN_CORPUS_DIR, "train_corpus")


def load_train_with_corpus(data_dir: str | Path) -> tuple[list[dict], dict[str, str]]:
    """The training rows (dicts) and ``doc_id -> text`` of the training corpus, ids as the data stage wrote them."""
    corpus: dict[str, str] = {}
    for n, record in enumerate(load_train_corpus(data_dir)):
        if record["doc_id"] in corpus:
            raise DataError(Path(data_dir) / TRAIN_CORPUS_DIR, n + 1, "duplicate_doc_id",
                            f"{record['doc_id']!r} appears twice (rebuild the data stage)")
        corpus[record["doc_id"]] = record["text"]
    return [dict(r) for r in load_train(data_dir)], corpus
