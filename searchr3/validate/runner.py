"""Run the suites with Great Expectations (ephemeral context, pandas data source).

Every run writes Data Docs HTML (``<report_dir>/data_docs/index.html``, replaced atomically) and
``<report_dir>/summary.json``; when a rule is broken it raises :class:`ValidationFailed`, whose
message names the dataset, the expectation, the rule and a few offending rows. Rules of severity
``warning`` (``shared_query``) are listed in ``summary["warnings"]`` and do not fail the run.
``report_dir`` may be relative (to the working directory).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pandas as pd

from searchr3.data.beir import beir_split
from searchr3.data.build import eval_set_dirs, load_train, load_train_corpus
from searchr3.data.errors import ArtifactError
from searchr3.data.io import require_path
from searchr3.data.rules import Limits
from searchr3.data.types import RawSplit
from searchr3.errors import EXIT_DATA, ConfigError, SearchR3Error
from searchr3.files import atomic_directory, write_json_atomic
from searchr3.validate.config import REPORT_DIR, ValidateConfig
from searchr3.validate.frames import balance_frame, split_frames, train_frame
from searchr3.validate.suites import Check, balance_check, corpus_check, qrels_check, queries_check, train_check

log = logging.getLogger(__name__)
DOCS_SITE = "searchr3"


class ValidationFailed(SearchR3Error):
    """Some expectation failed; ``summary`` is what summary.json holds. Exit code 3 (bad data).

    ``str(err)`` is the full report (one line per broken rule, with example rows); :meth:`brief`
    is the one line the CLI prints as the error.
    """

    exit_code = EXIT_DATA
    hint = "fix the rows the report lists; the rules are in docs/errors.md"

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary
        self.report = message

    def brief(self) -> str:
        broken = [(t["dataset"], f) for t in self.summary.get("tables", []) for f in t.get("failed", [])]
        parts = []
        for dataset, fail in broken[:4]:
            example = (fail.get("examples") or [None])[0]
            line = example.get("line") if isinstance(example, dict) else None
            count = fail.get("unexpected_count")
            parts.append(f"{dataset} {fail['rule']}" + (f" ({count} rows" if count is not None else " (")
                         + (f", first at line {line})" if line is not None else ")"))
        more = f" and {len(broken) - 4} more" if len(broken) > 4 else ""
        where = Path(self.summary.get("data_docs", "")).parent.parent / "summary.json"
        return f"validation of {self.summary.get('target')} failed: {len(broken)} rule(s) broken: " \
               f"{'; '.join(parts)}{more}; report: {where}"


def _context(docs_dir: Path):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.add_data_docs_site(site_name=DOCS_SITE, site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    return context


def _plain(value):
    """JSON-safe form of a value GX reports (numpy scalars, NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _describe(check: Check, result, examples: int) -> dict:
    config = result.expectation_config
    res = result.result or {}
    rows = res.get("partial_unexpected_index_list") or res.get("partial_unexpected_list") or []
    entry = {
        "rule": (config.meta or {}).get("rule", config.type),
        "severity": (config.meta or {}).get("severity", "error"),
        "expectation": config.type,
        "column": config.kwargs.get("column") or config.kwargs.get("column_list"),
        "success": bool(result.success),
        "unexpected_count": res.get("unexpected_count"),
        "element_count": res.get("element_count"),
        "examples": _plain(list(rows)[:examples]),
    }
    if "observed_value" in res:
        entry["observed_value"] = _plain(res["observed_value"])
    if result.exception_info and result.exception_info.get("raised_exception"):
        entry["error"] = str(result.exception_info.get("exception_message"))
    return entry


def run_checks(checks: list[Check], config: ValidateConfig, target: str, report_dir: str | Path | None = None) -> dict:
    """Validate every table, write Data Docs and summary.json; raise ValidationFailed on a broken rule."""
    import great_expectations as gx

    report_dir = Path(report_dir or REPORT_DIR)
    start = time.perf_counter()
    tables = []
    with atomic_directory(report_dir / "data_docs") as docs_dir:
        context = _context(Path(docs_dir).resolve())  # GX wants an absolute base_directory
        source = context.data_sources.add_pandas("searchr3")
        for check in checks:
            batch = source.add_dataframe_asset(name=check.name).add_batch_definition_whole_dataframe("all")
            suite = context.suites.add(gx.ExpectationSuite(name=check.name, expectations=check.expectations))
            definition = context.validation_definitions.add(gx.ValidationDefinition(name=check.name, data=batch,
                                                                                    suite=suite))
            index = [c for c in check.index_columns if c in check.frame.columns]
            outcome = definition.run(batch_parameters={"dataframe": check.frame}, result_format={
                "result_format": "SUMMARY", "unexpected_index_column_names": index,
                "partial_unexpected_count": config.examples})
            results = [_describe(check, r, config.examples) for r in outcome.results]
            failed = [r for r in results if not r["success"] and r["severity"] != "warning"]
            warned = [r for r in results if not r["success"] and r["severity"] == "warning"]
            tables.append({"dataset": check.name, "file": check.file, "rows": len(check.frame), "success": not failed,
                           "expectations": len(results), "failed": failed, "warnings": warned})
            log.info("validated %s: %s", check.name, "ok" if not failed else "FAILED")
        context.build_data_docs(site_names=[DOCS_SITE])  # not GX's default temporary site
    summary = {"target": target, "success": all(t["success"] for t in tables),
               "warnings": [f"{t['dataset']}: {w['rule']} ({w['unexpected_count']} rows)"
                            for t in tables for w in t["warnings"]],
               "wall_seconds": round(time.perf_counter() - start, 3),
               "data_docs": str(report_dir / "data_docs" / "index.html"), "tables": tables}
    write_json_atomic(report_dir / "summary.json", summary)
    if not summary["success"]:
        raise ValidationFailed(failure_message(summary), summary)
    return summary


ROW_IDS = ("source", "query_id", "doc_id", "_id", "id")


def describe_row(example, file: str | None = None, max_chars: int = 240) -> str:
    """One offending row as ``FILE:LINE id=...: {the other fields}``: where and which row first, then the text
    (only the text is shortened, so a long document never hides the row's id and line)."""
    if not isinstance(example, dict):
        return json.dumps(example, ensure_ascii=False)[:max_chars]
    line = example.get("line")
    where = f"{file}:{line}" if file and line is not None else file or (f"line {line}" if line is not None else "")
    ids = [f"{key}={example[key]}" for key in ROW_IDS if key in example]
    head = " ".join(x for x in (where, *ids) if x)
    fields = {k: v for k, v in example.items() if k != "line" and k not in ROW_IDS}
    if not fields:
        return head
    rest = json.dumps(fields, ensure_ascii=False)
    rest = rest if len(rest) <= max_chars else rest[:max_chars - 1] + "…"
    return f"{head}: {rest}" if head else rest


def failure_message(summary: dict) -> str:
    broken = [(t, f) for t in summary["tables"] for f in t["failed"]]
    lines = [f"validation of {summary['target']} failed: {len(broken)} rule(s) broken "
             f"(details: {summary['data_docs']})"]
    for table, fail in broken:
        count = ("" if fail["unexpected_count"] is None
                 else f": {fail['unexpected_count']} of {fail['element_count']} rows")
        observed = f" (observed {fail['observed_value']})" if "observed_value" in fail else ""
        lines.append(f"  {table['dataset']}: rule {fail['rule']} ({fail['expectation']} on {fail['column']}){count}"
                     f"{observed}")
        for example in fail["examples"]:
            lines.append(f"      e.g. {describe_row(example, table.get('file'))}")
        if fail.get("error"):
            lines.append(f"      error: {fail['error']}")
    return "\n".join(lines)


FORMATS = ("auto", "beir", "hf", "nq_open")


def _guess_format(p: Path) -> str:
    """beir: a folder with qrels/*.tsv (or corpus.jsonl and no dataset card); hf: a save_to_disk folder or a
    dataset repo (README.md); nq_open: a .jsonl[.gz] file; anything else is refused as the path it is."""
    if p.is_dir():
        from searchr3.data.hf import is_saved_folder

        if is_saved_folder(p) or ((p / "README.md").is_file() and not any((p / "qrels").glob("*.tsv"))):
            return "hf"
        return "beir"
    if p.name.endswith((".jsonl", ".jsonl.gz")):
        return "nq_open"
    if not p.exists() and not p.is_symlink() and str(p).count("/") == 1 and not str(p).startswith((".", "~")):
        return "hf"  # a hub id such as mteb/scifact (read from the datasets cache when offline)
    require_path(p, folder=True)  # says what the path is instead (missing, a file, a symlink loop ...)
    return "beir"


def dataset_split(path: str | Path, split: str = "test", fmt: str = "auto") -> RawSplit:
    """One split of an input dataset in any supported format (``auto``: guessed from the path).

    beir: a folder with ``corpus.jsonl``; hf: a ``save_to_disk`` folder or a dataset repo (a local
    folder, or a hub id in the cache); nq_open: an oracle ``.jsonl[.gz]`` file (``split``: train,
    test or all).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {list(FORMATS)}, not {fmt!r}")
    p = Path(path)
    if fmt == "auto":
        fmt = _guess_format(p)
    if fmt == "beir":
        return beir_split(p, split)
    if fmt == "nq_open":
        from searchr3.data.nq import nq_split

        if split not in ("train", "test", "all"):
            raise ConfigError(f"--split {split!r}: an NQ-open file has the splits train, test and all")
        return nq_split(p, None if split == "all" else split, name=p.name.split(".")[0])
    from searchr3.data.hf import hf_split

    return hf_split(str(path), split)


def split_checks(raw: RawSplit, config: ValidateConfig, name: str | None = None,
                 frames: dict[str, pd.DataFrame] | None = None) -> list[Check]:
    """Corpus, queries and qrels checks of one split (any format), under the shared rules; each check names
    the file its rows come from. ``frames``: the split's frames when the caller already built them."""
    name = name or f"{raw.name}-{raw.split}"
    frames = frames if frames is not None else split_frames(raw, Limits.of(config))
    checks = [corpus_check(name, frames["corpus"]), queries_check(name, frames["queries"]),
              qrels_check(name, frames["qrels"])]
    for check, where in zip(checks, (raw.corpus_where, raw.queries_where, raw.qrels_where)):
        check.file = where  # named before the row in failure messages
    return checks


def beir_checks(folder: str | Path, split: str, config: ValidateConfig, name: str | None = None) -> list[Check]:
    return split_checks(beir_split(folder, split), config, name or f"{Path(folder).name}-{split}")


def validate_dataset(folder: str | Path, split: str = "test", config: ValidateConfig | None = None,
                     report_dir: str | Path | None = None, fmt: str = "auto") -> dict:
    """Validate one split of an input dataset (``searchr3 validate --dataset PATH --split S``)."""
    config = config or ValidateConfig()
    raw = dataset_split(folder, split, fmt)
    return run_checks(split_checks(raw, config, f"{raw.name}-{raw.split}"), config, f"{folder} [{split}]",
                      report_dir)


def data_checks(data_dir: str | Path, config: ValidateConfig) -> list[Check]:
    """Checks for a data-stage output: every eval set, the training rows and their source balance."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ArtifactError(data_dir, None, "missing_file", "data folder not found (run `searchr3 data build`)")
    checks: list[Check] = []
    eval_queries: dict[str, list[pd.DataFrame]] = {}
    for folder in eval_set_dirs(data_dir):
        qrels = sorted((folder / "qrels").glob("*.tsv"))
        if len(qrels) != 1:
            raise ArtifactError(folder / "qrels", None, "missing_file", "expected exactly one qrels/<split>.tsv")
        raw = beir_split(folder, qrels[0].stem)
        frames = split_frames(raw, Limits.of(config))
        checks += split_checks(raw, config, folder.name, frames)
        label = folder.name.rsplit("-", 1)[0]
        judged = frames["queries"][frames["queries"]["query_id"].isin(set(frames["qrels"]["query_id"]))]
        eval_queries.setdefault(label, []).append(judged)
    train = load_train(data_dir).to_pandas()
    corpus = load_train_corpus(data_dir).to_pandas()
    merged = {label: pd.concat(frames, ignore_index=True) for label, frames in eval_queries.items()}
    checks.append(train_check(train_frame(train, corpus, merged), config))
    checks[-1].file = str(data_dir / "train")
    checks.append(balance_check(balance_frame(train), config))
    return checks


def validate_data(data_dir: str | Path, config: ValidateConfig | None = None,
                  report_dir: str | Path | None = None) -> dict:
    """Validate a ``searchr3 data build`` output (``searchr3 validate --data DIR``)."""
    config = config or ValidateConfig()
    return run_checks(data_checks(data_dir, config), config, str(data_dir), report_dir)
