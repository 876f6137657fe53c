"""The promotion gate: a retrained model replaces production only if it is not worse on the gate set.

Rule: promote when ``candidate >= production - tolerance`` on ``metric`` (nDCG@10) of the gate set
(``searchr3.eval.sets.gate_set``), both read from ``metrics/eval.json`` shaped
``{dataset: {system: {"ndcg@10": ...}}}``. With no production record the first candidate is promoted.

Promotion (:func:`promote`) copies the candidate model, its index snapshot and the snapshot's corpus into
``production/releases/<release_id>/`` (the workspace's ``models/`` and ``data/`` are overwritten by the next
run, so production must not point at them), writes a model card (``model/README.md``,
``searchr3.model.card``) there, then writes ``production/record.json`` atomically, then prunes old
releases. ``searchr3.release.verify_release`` checks such a release before it is served. The record is written last: a run that crashes at any earlier point leaves production as it
was. A rejection writes nothing.

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
from searchr3.paths import MODELS, PATHS
from searchr3.release import CORPUS_DIR

RELEASES_IGNORE = "# promoted models and index copies: large, recoverable from the DVC remote\n*\n"


@dataclass
class PromoteConfig:
    """``promote:`` section of params.yaml."""

    tolerance: float = 0.005  # promote when candidate >= production - tolerance (metric on the gate set)
    metric: str = "ndcg@10"  # the metric of metrics/eval.json the gate compares
    candidate: str = "rl"  # system of metrics/eval.json that is promoted ("rl", "rl+reasoning" ...)
    fallback: list[str] = field(default_factory=lambda: ["sft"])  # if the candidate was not evaluated: best of these
    record: str = PATHS["record"]  # what the search command serves (searchr3/production.py reads it)
    releases: str = PATHS["releases"]  # promoted model + index copies; git-ignored by a .gitignore inside
    keep_releases: int = 2  # releases kept on disk (the current one included); older ones live in the DVC remote
    dvc_remote: str = "local"  # DVC remote `dvc push` sends the pipeline's outputs to on promotion; "" = no push
    dvc_remote_url: str = ".dvc-remote"  # used to create dvc_remote when missing (a local folder inside the repo,
    #                                      git-ignored by a .gitignore inside; a team sets s3://... or ssh://...)


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


def decide(candidate_metrics: dict, production_record: dict | None, gate_set: str, tolerance: float,
           candidate: str = "rl", fallback: Sequence[str] = ("sft",), metric: str = "ndcg@10") -> Decision:
    """Promote iff the candidate's ``metric`` on ``gate_set`` >= production's - ``tolerance``.

    ``candidate_metrics`` is ``metrics/eval.json``; ``production_record`` is ``production/record.json``
    (None: nothing in production yet, so any evaluated candidate is promoted).
    """
    if tolerance < 0:
        raise ValueError(f"promote.tolerance must be >= 0, got {tolerance}")
    base = {"gate_set": gate_set, "metric": metric, "tolerance": tolerance}
    system = choose_system(candidate_metrics, gate_set, candidate, fallback, metric)
    if system is None:
        tried = ", ".join([candidate, *fallback])
        return Decision(False, f"no candidate ({tried}) has {metric} on the gate set {gate_set!r} in the evaluation "
                               "metrics", None, None, None, **base)
    value = _value(candidate_metrics, gate_set, system, metric)
    note = "" if system == candidate else f" ({candidate} was not evaluated; best fallback is {system})"
    if production_record is None:
        return Decision(True, f"first promotion: {system} {metric}={value:.4f} on {gate_set}{note}", value, None,
                        system, **base)
    current = production_value(production_record, gate_set, metric)
    if current is None:
        return Decision(False, f"production has no {metric} on {gate_set!r} (it was gated on "
                               f"{(production_record.get('gate') or {}).get('set')!r}); the two cannot be compared. "
                               "Evaluate production on this set or promote by hand", value, None, system, **base)
    floor = current - tolerance
    verdict = (f"{system} {metric}={value:.4f} vs production {current:.4f} on {gate_set} "
               f"(tolerance {tolerance}: floor {floor:.4f}){note}")
    if value >= floor:
        return Decision(True, f"promote: {verdict}", value, current, system, **base)
    return Decision(False, f"reject: {verdict}; {value:.4f} < {floor:.4f}", value, current, system, **base)


def file_sha256(path: str | Path) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def git_revision(cwd: str | Path = ".") -> dict:
    """``{"rev": HEAD sha or None, "dirty": bool or None}`` of the git work tree at ``cwd``."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    rev = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if rev else None
    return {"rev": rev, "dirty": None if status is None else bool(status)}


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


def prune_releases(releases: str | Path, keep: int, current: str) -> list[str]:
    """Delete all but the newest ``keep`` releases (names sort by time); never ``current``."""
    folders = sorted(p for p in Path(releases).iterdir() if p.is_dir() and not p.name.startswith("."))
    doomed = [p for p in folders[:-keep] if p.name != current] if keep > 0 else []
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


def promote(decision: Decision, metrics: dict, config: PromoteConfig, *, index_dir: str | Path = PATHS["index"],
            run_id: str | None = None, dvc_remote: str | None = None, now: dt.datetime | None = None,
            cwd: str | Path = ".", model_config=None) -> dict:
    """Copy the gated system's model (+ its index snapshot and corpus) into a release and make it production.

    Returns the new record. ``decision`` must say promote; paths are relative to ``cwd`` (the repo root).
    ``model_config`` (the ``model:`` section) supplies the templates the model card's usage snippet shows.
    """
    from searchr3.model.card import datasets_of, model_card

    if not decision.promote or not decision.system:
        raise ValueError(f"refusing to promote: {decision.reason}")
    cwd = Path(cwd)
    now = now or dt.datetime.now(dt.timezone.utc)
    model_dir = MODELS.get(decision.system.split("+", 1)[0])
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
    record = {
        "model": release_model,
        "index": str(Path(config.releases) / name / "index") if paths["index"] else None,
        "corpus": str(Path(config.releases) / name / CORPUS_DIR) if paths["corpus"] else None,
        "model_checksum": (read_json_if_exists(cwd / release_model / "manifest.json") or {}).get("weights_sha256"),
        "model_card": str(Path(release_model) / "README.md"),
        "system": decision.system,
        "source": {"model": model_dir, "index": str(index_dir) if index else None,
                   "corpus": str(corpus.relative_to(cwd)) if corpus else None},
        "gate": {"set": decision.gate_set, "metric": decision.metric, "value": decision.candidate,
                 "production_before": decision.production, "tolerance": decision.tolerance,
                 "reason": decision.reason},
        "metrics": metrics,
        "git_rev": git["rev"],
        "git_dirty": git["dirty"],
        "dvc_lock": {"sha256": file_sha256(cwd / "dvc.lock"),
                     "copy": str(Path(config.releases) / name / "dvc.lock") if paths["dvc_lock"] else None},
        "dvc_remote": dvc_remote,
        "promoted_at": now.isoformat(timespec="seconds"),
        "run": run_id,
        "release": name,
        "previous": {k: previous.get(k) for k in ("release", "model", "promoted_at", "run")} if previous else None,
    }
    write_record(record, cwd / config.record)
    prune_releases(cwd / config.releases, config.keep_releases, name)
    return record
