"""The evaluation sets of the data stage (``data/eval/<label>-<split>/``): which ones the evaluate stage
scores, which one gates promotion (and is indexed for search), and scoring every system on them."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from searchr3.data.bm25 import Bm25Config
from searchr3.data.build import eval_set_dirs, load_eval_set
from searchr3.data.errors import ArtifactError
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.evaluate import CAP_SEPARATOR, HYBRID_SUFFIX, evaluate_detailed
from searchr3.paths import PATHS

log = logging.getLogger(__name__)


def gate_dir(config: EvaluateConfig, data_dir: str | Path = PATHS["data"]) -> Path:
    """The folder of ``config.gate_set``; unset: the first ``*-dev`` set, else the first ``*-test`` set, else the first."""
    name = config.gate_set
    dirs = eval_set_dirs(data_dir)
    chosen = ([d for d in dirs if d.name == name] if name else
              [d for d in dirs if d.name.endswith("-dev")] or [d for d in dirs if d.name.endswith("-test")] or dirs)
    if not chosen:
        raise ArtifactError(f"{data_dir}/eval", None, "missing_file", f"no evaluation set {name or ''} (run the data stage)")
    return chosen[0]


def search_dir(config: EvaluateConfig, data_dir: str | Path = PATHS["data"]) -> Path:
    """The set whose corpus the index stage indexes for search and serving: the first ``*-test`` set scored
    (``evaluate.sets``; the held-out corpus the report describes), else the gate set's folder."""
    tests = [d for d in eval_set_dirs(data_dir) if d.name.endswith("-test") and (not config.sets or d.name in config.sets)]
    return tests[0] if tests else gate_dir(config, data_dir)


def gate_set(config: EvaluateConfig, data_dir: str | Path = PATHS["data"]) -> str:
    """The name of the set whose metric the promotion gate reads (``evaluate.gate_set``, or :func:`gate_dir`'s)."""
    return config.gate_set or gate_dir(config, data_dir).name


def _scored(config: EvaluateConfig) -> list[tuple[str, bool, int]]:
    """(system, reasoning, document cap) in scoring order: every system at the headline cap (with reasoning too for
    ``config.reasoning``), then the dense systems at each further cap."""
    if not config.doc_caps or any(c < 1 for c in config.doc_caps) or len(set(config.doc_caps)) != len(config.doc_caps):
        raise ValueError(f"evaluate.doc_caps must be distinct token counts >= 1, got {config.doc_caps}")
    head, *more = config.doc_caps
    out = [(s, r, head) for s in config.systems for r in ([False, True] if s in config.reasoning else [False])]
    return out + [(s, False, cap) for cap in more for s in config.systems if s != "bm25"]


@dataclass
class SetsEvaluation:
    results: dict[str, dict[str, dict]] = field(default_factory=dict)  # {set: {system: metrics}}: metrics/eval.json
    rows: list[dict] = field(default_factory=list)  # one result dict per (set, system), for the report table
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # (set, system, reasoning trace)


@dataclass(frozen=True)
class EvalJob:
    """One (set, system) cell of the evaluation: what a worker needs to score it, and nothing it must share."""

    set_dir: str  # data/eval/<set>
    name: str  # the system's name in metrics/eval.json (``rl+reasoning``, ``rl+bm25``, ``bm25``)
    target: str  # a model folder, or ``bm25`` / ``minilm``
    reasoning: bool
    hybrid: bool
    doc_cap: int | None = None  # documents cut at this many tokens by the dense side (None: evaluate.doc_caps[0])

    @property
    def set_name(self) -> str:
        return Path(self.set_dir).name


@dataclass
class JobResult:
    job: EvalJob
    result: dict  # evaluate_detailed's result dict
    examples: list[str]


def selected_sets(data_dir: str | Path, config: EvaluateConfig) -> list[Path]:
    """The evaluation set folders ``config.sets`` selects (all when unset); ArtifactError when there is none."""
    dirs = [d for d in eval_set_dirs(data_dir) if not config.sets or d.name in config.sets]
    if not dirs:
        raise ArtifactError(f"{data_dir}/eval", None, "missing_file", "no evaluation sets found (run the data stage)")
    return dirs


def evaluation_jobs(data_dir: str | Path, config: EvaluateConfig, models: dict[str, str]) -> list[EvalJob]:
    """Every (set, system) the evaluate stage scores, in report order: ``config.systems`` (with reasoning too for
    ``config.reasoning``) on every selected set, documents cut at ``config.doc_caps[0]``; each further cap scores the
    dense systems again (without reasoning, whose queries do not depend on the cap) as ``<system>@<cap>``.
    ``models`` maps a system name to its model folder (``searchr3.paths.MODELS``); a missing folder is skipped
    with a warning."""
    jobs = []
    scored = _scored(config)
    for folder in selected_sets(data_dir, config):
        for system, reasoning, cap in scored:
            dense, hybrid = system.removesuffix(HYBRID_SUFFIX), system.endswith(HYBRID_SUFFIX)  # rl+bm25: fused
            name = system + ("+reasoning" if reasoning else "")
            if cap != config.doc_caps[0]:
                name += f"{CAP_SEPARATOR}{cap}"
            target = models.get(dense, dense)
            if dense in models and not Path(target).is_dir():
                log.warning("skipping %s: %s does not exist", name, target)
                continue
            jobs.append(EvalJob(str(folder), name, str(target), reasoning, hybrid, cap))
    return jobs


def run_job(job: EvalJob, config: EvaluateConfig, *, model_config=None, bm25: Bm25Config | None = None,
            progress: bool = False, rs=None) -> JobResult:
    """Score one (set, system) cell; a pure function of its arguments and the files they name (a Dask task).
    ``rs``: the set, already loaded (else read from ``job.set_dir``)."""
    log.info("evaluating %s on %s", job.name, job.set_name)
    started = time.perf_counter()
    rs = rs if rs is not None else load_eval_set(Path(job.set_dir))
    ev = evaluate_detailed(job.target, rs, job.reasoning, max_queries=config.max_queries,
                           config=config, model_config=model_config, bm25=bm25, progress=progress, hybrid=job.hybrid,
                           doc_cap=job.doc_cap)
    log.info("evaluated %s on %s in %.1f s", job.name, job.set_name, time.perf_counter() - started)
    return JobResult(job, ev.result, ev.example_traces[:2])


def collect(sets: list[Path], jobs: list[EvalJob], results: list[JobResult]) -> SetsEvaluation:
    """The results of ``jobs`` (in any order) on ``sets`` as the evaluate stage reports them, in ``jobs`` order."""
    by_job = {r.job: r for r in results}
    out = SetsEvaluation()
    for folder in sets:
        out.results[Path(folder).name] = {}
    for job in jobs:
        r = by_job[job]
        out.results[job.set_name][job.name] = {k: v for k, v in r.result.items() if k not in ("dataset", "system")}
        out.rows.append({**r.result, "system": job.name})
        out.examples += [(job.set_name, job.name, t) for t in r.examples]
    return out


def evaluate_sets(data_dir: str | Path, config: EvaluateConfig, models: dict[str, str], *, model_config=None,
                  bm25: Bm25Config | None = None, progress: bool = False) -> SetsEvaluation:
    """Score every ``config.systems`` entry (with reasoning too for ``config.reasoning``) on every selected set,
    one :class:`EvalJob` after the other (the Prefect evaluate flow runs the same jobs on Dask workers).

    Other systems (``bm25``, ``minilm``, a folder) go to ``evaluate_detailed`` as they are.
    """
    sets, jobs = selected_sets(data_dir, config), evaluation_jobs(data_dir, config, models)
    loaded = {str(d): load_eval_set(d) for d in sets}  # each set read once
    return collect(sets, jobs, [run_job(j, config, model_config=model_config, bm25=bm25, progress=progress,
                                        rs=loaded[j.set_dir]) for j in jobs])
