"""The promotion gate: a retrained model replaces production only when it is a real, not-worse change.

Rule, in order (``decide``), on ``metric`` (nDCG@10) of the gate set (``searchr3.eval.sets.gate_set``), both
values read from ``metrics/eval.json`` shaped ``{dataset: {system: {"ndcg@10": ...}}}``:

1. nothing evaluated on the gate set: **reject** (``no-candidate``);
2. the candidate's weights are production's (same ``weights_sha256``): **no-op** (``unchanged``): nothing is
   copied, no release is made, nothing is pruned. An unchanged nightly (DVC skipped training) lands here;
3. no production yet: **promote** (``first``);
4. production was gated on another set and has no value on this one: **reject** (``not-comparable``);
5. candidate > production + ``tolerance``: **promote** (``better``);
6. candidate < production - ``tolerance``: **reject** (``worse``);
7. a tie (within ``tolerance``) with different weights follows ``on_tie``:
   ``new_data`` (default) promotes only when the candidate was trained on sources whose content differs from
   production's (the fingerprint of ``metrics/sources.json``: rows were added or changed) -- equal quality,
   newer data; ``never`` keeps production; ``always`` promotes.

Promotion (:func:`promote`) copies the candidate model, its index snapshot and the snapshot's corpus into
``production/releases/<release_id>/`` (the workspace's ``models/`` and ``data/`` are overwritten by the next
run, so production must not point at them), writes a model card (``model/README.md``,
``searchr3.model.card``) there, then writes ``production/record.json`` atomically, then prunes old releases
(:func:`prune_releases`: only here, after a successful promotion, and never the release production points to
nor its predecessor). ``searchr3.release.verify_release`` checks such a release before it is served. The
record is written last: a run that crashes at any earlier point leaves production as it was. A rejection or a
no-op writes nothing.

The record also says what the release was trained on: the sources' fingerprint and row counts, and how many
rows were added since the previous release (``data.added_since_previous``).

This module never imports Prefect or DVC; the Prefect task in ``tasks/promote.py`` calls it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from searchr3.files import atomic_directory, read_json_if_exists, write_json_atomic
from searchr3.paths import MODELS, PATHS, STAGE_SUMMARIES
from searchr3.release import CORPUS_DIR

RELEASES_IGNORE = "# promoted models and index copies: large, recoverable from the DVC remote\n*\n"
TIE_RULES = ("new_data", "never", "always")


@dataclass
class PromoteConfig:
    """``promote:`` section of params.yaml."""

    tolerance: float = 0.005  # |candidate - production| <= tolerance is a tie (metric on the gate set)
    on_tie: str = "new_data"  # a tie with different weights: new_data (promote if the sources changed) | never | always
    metric: str = "ndcg@10"  # the metric of metrics/eval.json the gate compares
    candidate: str = "rl"  # system of metrics/eval.json that is promoted ("rl", "rl+reasoning" ...)
    fallback: list[str] = field(default_factory=lambda: ["sft"])  # if the candidate was not evaluated: best of these
    record: str = PATHS["record"]  # what the search command serves (searchr3/production.py reads it)
    releases: str = PATHS["releases"]  # promoted model + index copies; git-ignored by a .gitignore inside
    keep_releases: int = 2  # releases kept on disk after a promotion (never fewer than production + its predecessor)
    dvc_remote: str = "local"  # DVC remote `dvc push` sends the pipeline's outputs to on promotion; "" = no push
    dvc_remote_url: str = ".dvc-remote"  # used to create dvc_remote when missing (in .dvc/config.local, so git
    #                                      stays clean; a local folder inside the repo is git-ignored by a
    #                                      .gitignore inside; a team sets s3://... or ssh://...)

    def __post_init__(self) -> None:
        if self.tolerance < 0:
            raise ValueError(f"promote.tolerance must be >= 0, got {self.tolerance}")
        if self.on_tie not in TIE_RULES:
            raise ValueError(f"promote.on_tie must be one of {list(TIE_RULES)}, not {self.on_tie!r}")


@dataclass
class Decision:
    promote: bool
    reason: str
    candidate: float | None  # the candidate's metric on the gate set (None: not evaluated there)
    production: float | None  # production's metric on the gate set (None: no production, or not comparable)
    system: str | None = None  # the system of metrics/eval.json that was gated
    gate_set: str = ""
    metric: str = "ndcg@10"
    tolerance: float = 0.0
    # first | better | tie-new-data | tie-always | forced (promote); unchanged | worse | tie | not-comparable |
    # no-candidate (do not)
    outcome: str = ""
    weights: str | None = None  # the candidate model's weights_sha256 (None: unknown)

    def as_dict(self) -> dict:
        return asdict(self)


def _value(metrics: dict, gate_set: str, system: str, metric: str) -> float | None:
    value = (metrics.get(gate_set) or {}).get(system, {}).get(metric)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def choose_system(metrics: dict, gate_set: str, candidate: str = "rl", fallback: Sequence[str] = ("sft",),
                  metric: str = "ndcg@10") -> str | None:
    """``candidate`` if it was scored on the gate set, else the best-scoring of ``fallback``, else None."""
    if _value(metrics, gate_set, candidate, metric) is not None:
        return candidate
    scored = [(v, s) for s in fallback if (v := _value(metrics, gate_set, s, metric)) is not None]
    return max(scored)[1] if scored else None


def production_value(record: dict, gate_set: str, metric: str = "ndcg@10") -> float | None:
    """Production's ``metric`` on ``gate_set``, from the metrics saved in its record (None: not measured there)."""
    gate = record.get("gate") or {}
    if gate.get("set") == gate_set and gate.get("metric") == metric and gate.get("value") is not None:
        return float(gate["value"])
    return _value(record.get("metrics") or {}, gate_set, record.get("system") or "", metric)


def model_dir_of(system: str) -> str | None:
    """The workspace folder of a system of metrics/eval.json (``rl+reasoning`` -> ``models/rl``)."""
    return MODELS.get(system.split("+", 1)[0])


def weights_of(model_dir: str | Path) -> str | None:
    """The ``weights_sha256`` a trained model's manifest records (None: no manifest or no such field)."""
    return (read_json_if_exists(Path(model_dir) / "manifest.json") or {}).get("weights_sha256")


def _short(digest: str | None) -> str:
    return (digest or "?")[:12]


def decide(candidate_metrics: dict, production_record: dict | None, gate_set: str, tolerance: float,
           candidate: str = "rl", fallback: Sequence[str] = ("sft",), metric: str = "ndcg@10", *,
           weights: str | None = None, sources: str | None = None, on_tie: str = "new_data") -> Decision:
    """Apply the rule of this module's docstring.

    ``candidate_metrics`` is ``metrics/eval.json``; ``production_record`` is ``production/record.json`` (None:
    nothing in production yet). ``weights``: the gated model's ``weights_sha256``; ``sources``: the fingerprint
    of the sources it was trained on (``metrics/sources.json``). Either may be None (unknown): unknown weights
    are never "unchanged"; unknown sources are never "new data".
    """
    if tolerance < 0:
        raise ValueError(f"promote.tolerance must be >= 0, got {tolerance}")
    if on_tie not in TIE_RULES:
        raise ValueError(f"promote.on_tie must be one of {list(TIE_RULES)}, not {on_tie!r}")
    base = {"gate_set": gate_set, "metric": metric, "tolerance": tolerance}
    system = choose_system(candidate_metrics, gate_set, candidate, fallback, metric)
    if system is None:
        tried = ", ".join([candidate, *fallback])
        return Decision(False, f"no candidate ({tried}) has {metric} on the gate set {gate_set!r} in the evaluation "
                               "metrics", None, None, None, **base, outcome="no-candidate", weights=weights)
    value = _value(candidate_metrics, gate_set, system, metric)
    note = "" if system == candidate else f" ({candidate} was not evaluated; best fallback is {system})"

    def verdict(promote: bool, outcome: str, reason: str, current: float | None) -> Decision:
        return Decision(promote, reason, value, current, system, **base, outcome=outcome, weights=weights)

    if production_record is None:
        return verdict(True, "first", f"first promotion: {system} {metric}={value:.4f} on {gate_set}{note}", None)
    current = production_value(production_record, gate_set, metric)
    if weights is not None and weights == production_record.get("model_checksum"):
        return verdict(False, "unchanged", f"unchanged: {system} has the weights production already serves "
                                           f"(release {production_record.get('release')}, sha256 "
                                           f"{_short(weights)}); nothing to promote", current)
    if current is None:
        return verdict(False, "not-comparable",
                       f"production has no {metric} on {gate_set!r} (it was gated on "
                       f"{(production_record.get('gate') or {}).get('set')!r}); the two cannot be compared. "
                       "Evaluate production on this set or promote by hand", None)
    compared = (f"{system} {metric}={value:.4f} vs production {current:.4f} on {gate_set} "
                f"(tie within {tolerance}){note}")
    if value > current + tolerance:
        return verdict(True, "better", f"promote: better: {compared}", current)
    if value < current - tolerance:
        return verdict(False, "worse", f"reject: worse: {compared}; {value:.4f} < {current - tolerance:.4f}", current)
    if on_tie == "always":
        return verdict(True, "tie-always", f"promote: a tie, and promote.on_tie is always: {compared}", current)
    before = ((production_record.get("data") or {}).get("sources_fingerprint"))
    if on_tie == "new_data" and sources is not None and before is not None and sources != before:
        return verdict(True, "tie-new-data", f"promote: a tie on newer data (the sources changed since release "
                                             f"{production_record.get('release')}): {compared}", current)
    why = ("the sources are unchanged since production's release" if on_tie == "new_data" and sources == before
           else "the sources of one side are unknown" if on_tie == "new_data" else "promote.on_tie is never")
    return verdict(False, "tie", f"reject: a tie and {why}; production stays: {compared}", current)


def decide_workspace(metrics: dict, production_record: dict | None, config: PromoteConfig, gate_set: str,
                     cwd: str | Path = ".") -> Decision:
    """:func:`decide` with what the workspace at ``cwd`` says: the gated model's weights (its manifest) and the
    fingerprint of the sources it was trained on (``metrics/sources.json``)."""
    system = choose_system(metrics, gate_set, config.candidate, config.fallback, config.metric)
    model_dir = model_dir_of(system) if system else None
    weights = weights_of(Path(cwd) / model_dir) if model_dir else None
    sources = (read_json_if_exists(Path(cwd) / PATHS["sources"]) or {}).get("fingerprint")
    return decide(metrics, production_record, gate_set, config.tolerance, config.candidate, config.fallback,
                  config.metric, weights=weights, sources=sources, on_tie=config.on_tie)


def file_sha256(path: str | Path) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


# Tracked files a pipeline run rewrites (DVC records them in dvc.lock): they do not make the code dirty.
PIPELINE_OUTPUTS = ("dvc.lock", "dvclive", *PATHS.values(), *STAGE_SUMMARIES.values())


def is_pipeline_output(path: str) -> bool:
    return any(path == out or path.startswith(out.rstrip("/") + "/") for out in PIPELINE_OUTPUTS)


def git_revision(cwd: str | Path = ".") -> dict:
    """``{"rev", "dirty", "changed"}`` of the git work tree at ``cwd``.

    ``changed``: tracked files that differ from HEAD, pipeline outputs excluded (``dvc.lock``, ``metrics/`` ...,
    which every retraining rewrites and dvc.lock fingerprints); ``dirty``: whether there is any such file, i.e.
    the code or parameters that produced the release are not exactly ``rev``. None when git cannot tell.
    """
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    rev = git("rev-parse", "HEAD")
    status = git("status", "--porcelain=v1", "-z", "--untracked-files=no") if rev else None
    if status is None:
        return {"rev": rev.strip() if rev else None, "dirty": None, "changed": None}
    entries = [e for e in status.split("\0") if e]
    changed, skip = [], False
    for entry in entries:
        if skip:  # the source path of a rename/copy entry
            skip = False
            continue
        code, path = entry[:2], entry[3:]
        skip = "R" in code or "C" in code
        if not is_pipeline_output(path):
            changed.append(path)
    return {"rev": rev.strip(), "dirty": bool(changed), "changed": changed}


def write_record(record: dict, path: str | Path) -> Path:
    """Write ``record`` as JSON, atomically and durably (fsynced before and after the rename).

    Readers (and a crash at any point, power cut included) see the old record or the new one, never a partial file.
    """
    return write_json_atomic(path, record, durable=True)


def release_id(now: dt.datetime, run_id: str | None) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + (f"-{run_id[:8]}" if run_id else "")


def copy_release(model_dir: str | Path, index_dir: str | Path | None, releases: str | Path, name: str,
                 dvc_lock: str | Path = "dvc.lock", corpus_dir: str | Path | None = None,
                 files: dict[str, str] | None = None) -> dict[str, str | None]:
    """Copy the model, index snapshot, its corpus and dvc.lock into ``releases/name`` (built aside, fsynced, renamed
    into place); ``files`` maps paths inside the release to texts written there too (the model card).

    Durable like the record that will point at it: after a crash the record never names a release whose files
    were still in the page cache."""
    releases = Path(releases)
    releases.mkdir(parents=True, exist_ok=True)
    ignore = releases / ".gitignore"
    if not ignore.exists():
        ignore.write_text(RELEASES_IGNORE)
    target = releases / name
    with atomic_directory(target, durable=True) as tmp:
        shutil.copytree(model_dir, tmp / "model")
        if index_dir is not None:
            shutil.copytree(index_dir, tmp / "index")
        if corpus_dir is not None:
            (tmp / CORPUS_DIR).mkdir()
            shutil.copy2(Path(corpus_dir) / "corpus.jsonl", tmp / CORPUS_DIR / "corpus.jsonl")
        if Path(dvc_lock).is_file():
            shutil.copy2(dvc_lock, tmp / "dvc.lock")
        for relative, text in (files or {}).items():
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp / relative).write_text(text, encoding="utf-8")
    return {"model": str(target / "model"), "index": str(target / "index") if index_dir is not None else None,
            "corpus": str(target / CORPUS_DIR) if corpus_dir is not None else None,
            "dvc_lock": str(target / "dvc.lock") if Path(dvc_lock).is_file() else None}


def prune_releases(releases: str | Path, keep: int, current: str, protect: Sequence[str] = ()) -> list[str]:
    """Delete all but the newest ``keep`` releases (names sort by time); never ``current`` nor ``protect``.

    Called only after a successful promotion, with ``protect`` = the predecessor production pointed to before.
    """
    folders = sorted(p for p in Path(releases).iterdir() if p.is_dir() and not p.name.startswith("."))
    kept = {p.name for p in folders[-keep:]} if keep > 0 else set()
    kept |= {current, *(name for name in protect if name)}
    doomed = [p for p in folders if p.name not in kept]
    for p in doomed:
        shutil.rmtree(p)
    return [p.name for p in doomed]


def matching_index(index_dir: str | Path, model_dir: str, cwd: str | Path = ".") -> Path | None:
    """``cwd/index_dir`` if its manifest says ``model_dir`` encoded it (else None: not servable with that model).

    The index stage writes ``model_path`` relative to the repo root (``models/rl``).
    """
    folder = Path(cwd) / index_dir
    model_path = (read_json_if_exists(folder / "manifest.json") or {}).get("model_path")
    if not model_path:
        return None
    same = (Path(cwd) / model_path).resolve() == (Path(cwd) / model_dir).resolve()
    return folder if same else None


def index_corpus(index: Path | None, cwd: str | Path = ".") -> Path | None:
    """The corpus folder (with corpus.jsonl) the snapshot's manifest names, when it still exists."""
    corpus = (read_json_if_exists(index / "manifest.json") or {}).get("corpus") if index is not None else None
    folder = Path(cwd) / corpus if corpus else None
    return folder if folder is not None and (folder / "corpus.jsonl").is_file() else None


def _flat_counts(tree: dict, prefix: str = "") -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            out.update(_flat_counts(value, f"{prefix}{key}."))
        elif isinstance(value, int) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def data_provenance(cwd: str | Path = ".", sources_path: str = PATHS["sources"],
                    manifest_path: str = STAGE_SUMMARIES["data"]) -> dict:
    """What the pipeline trained on: the sources' fingerprint and rows, and the data stage's row counts.

    Read from ``metrics/sources.json`` (the ``sources`` stage) and ``data/manifest.json`` (the ``data`` stage);
    missing files give None fields (a workspace built before the sources stage existed).
    """
    sources = read_json_if_exists(Path(cwd) / sources_path) or {}
    manifest = read_json_if_exists(Path(cwd) / manifest_path) or {}
    train = manifest.get("train") or {}
    rows = {"train": train.get("rows"), "train_corpus": train.get("corpus_documents"),
            "eval_queries": {name: entry.get("queries") for name, entry in (manifest.get("eval_sets") or {}).items()},
            "sources": {label: entry.get("rows") for label, entry in (sources.get("sources") or {}).items()}}
    return {"sources_fingerprint": sources.get("fingerprint"), "rows": rows}


def rows_added(rows: dict, previous_rows: dict | None) -> dict[str, int] | None:
    """Row counts minus the previous release's, per counted thing (``train``, ``sources.<label>.queries`` ...).

    None when the previous release recorded no counts; a thing the previous release did not have counts in full.
    """
    if not previous_rows:
        return None
    now, before = _flat_counts(rows), _flat_counts(previous_rows)
    return {key: value - before.get(key, 0) for key, value in now.items()}


def promote(decision: Decision, metrics: dict, config: PromoteConfig, *, index_dir: str | Path = PATHS["index"],
            run_id: str | None = None, dvc_remote: str | None = None, now: dt.datetime | None = None,
            cwd: str | Path = ".", model_config=None, profile: str | None = None) -> dict:
    """Copy the gated system's model (+ its index snapshot and corpus) into a release and make it production.

    Returns the new record. ``decision`` must say promote; paths are relative to ``cwd`` (the repo root).
    ``model_config`` (the ``model:`` section) supplies the templates the model card's usage snippet shows.
    ``profile``: the params profile the pipeline ran with (recorded; dvc.lock records it too).
    """
    from searchr3.model.card import datasets_of, model_card

    if not decision.promote or not decision.system:
        raise ValueError(f"refusing to promote: {decision.reason}")
    cwd = Path(cwd)
    now = now or dt.datetime.now(dt.timezone.utc)
    model_dir = model_dir_of(decision.system)
    if model_dir is None or not (cwd / model_dir).is_dir():
        raise FileNotFoundError(f"{cwd / str(model_dir)}: the model of system {decision.system!r} is missing")
    index = matching_index(index_dir, model_dir, cwd)
    corpus = index_corpus(index, cwd)
    name = release_id(now, run_id)
    release_model = str(Path(config.releases) / name / "model")
    card = model_card(cwd / model_dir, metrics=metrics, system=decision.system, release=name,
                      datasets=datasets_of(read_json_if_exists(cwd / PATHS["data"] / "manifest.json")),
                      config=model_config, model_ref=release_model, root=cwd)
    paths = copy_release(cwd / model_dir, index, cwd / config.releases, name, cwd / "dvc.lock", corpus,
                         files={"model/README.md": card})
    previous = read_json_if_exists(cwd / config.record)
    git = git_revision(cwd)
    data = data_provenance(cwd)
    data["added_since_previous"] = rows_added(data["rows"], ((previous or {}).get("data") or {}).get("rows"))
    record = {
        "model": release_model,
        "index": str(Path(config.releases) / name / "index") if paths["index"] else None,
        "corpus": str(Path(config.releases) / name / CORPUS_DIR) if paths["corpus"] else None,
        "model_checksum": (read_json_if_exists(cwd / release_model / "manifest.json") or {}).get("weights_sha256"),
        "model_card": str(Path(release_model) / "README.md"),
        "system": decision.system,
        "profile": profile,
        "source": {"model": model_dir, "index": str(index_dir) if index else None,
                   "corpus": str(corpus.relative_to(cwd)) if corpus else None},
        "gate": {"set": decision.gate_set, "metric": decision.metric, "value": decision.candidate,
                 "production_before": decision.production, "tolerance": decision.tolerance,
                 "outcome": decision.outcome, "reason": decision.reason},
        "metrics": metrics,
        "data": data,
        "git_rev": git["rev"],
        "git_dirty": git["dirty"],
        "git_changed": git["changed"],
        "dvc_lock": {"sha256": file_sha256(cwd / "dvc.lock"),
                     "copy": str(Path(config.releases) / name / "dvc.lock") if paths["dvc_lock"] else None},
        "dvc_remote": dvc_remote,
        "promoted_at": now.isoformat(timespec="seconds"),
        "run": run_id,
        "release": name,
        "previous": {k: previous.get(k) for k in ("release", "model", "model_checksum", "promoted_at", "run")}
        if previous else None,
    }
    write_record(record, cwd / config.record)
    prune_releases(cwd / config.releases, config.keep_releases, name,
                   protect=[(previous or {}).get("release") or ""])
    return record
