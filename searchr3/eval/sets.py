"""The evaluation sets of the data stage (``data/eval/<label>-<split>/``): which ones the evaluate stage
scores, which one gates promotion (and is indexed for search), and scoring every system on them."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from searchr3.data.bm25 import Bm25Config
from searchr3.data.build import eval_set_dirs, load_eval_set
from searchr3.data.errors import ArtifactError
from searchr3.eval.config import EvaluateConfig
from searchr3.eval.evaluate import HYBRID_SUFFIX, evaluate_detailed
from searchr3.paths import PATHS

log = logging.getLogger(__name__)


def gate_dir(config: EvaluateConfig, data_dir: str | Path = PATHS["data"]) -> Path:
    """The folder of ``config.gate_set``; unset: the first ``*-test`` set, else the first set."""
    name = config.gate_set
    dirs = eval_set_dirs(data_dir)
    chosen = [d for d in dirs if d.name == name] if name else [d for d in dirs if d.name.endswith("-test")] or dirs
    if not chosen:
        raise ArtifactError(f"{data_dir}/eval", None, "missing_file", f"no evaluation set {name or ''} (run the data stage)")
    return chosen[0]


def gate_set(config: EvaluateConfig, data_dir: str | Path = PATHS["data"]) -> str:
    """The name of the set whose metric the promotion gate reads (``evaluate.gate_set``, or :func:`gate_dir`'s)."""
    return config.gate_set or gate_dir(config, data_dir).name


@dataclass
class SetsEvaluation:
    results: dict[str, dict[str, dict]] = field(default_factory=dict)  # {set: {system: metrics}}: metrics/eval.json
    rows: list[dict] = field(default_factory=list)  # one result dict per (set, system), for the report table
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # (set, system, reasoning trace)


def evaluate_sets(data_dir: str | Path, config: EvaluateConfig, models: dict[str, str], *, model_config=None,
                  bm25: Bm25Config | None = None, progress: bool = False) -> SetsEvaluation:
    """Score every ``config.systems`` entry (with reasoning too for ``config.reasoning``) on every selected set.

    ``models`` maps a system name to its model folder (``searchr3.paths.MODELS``); a missing folder is skipped
    with a warning. Other systems (``bm25``, ``minilm``, a folder) go to ``evaluate_detailed`` as they are.
    """
    out = SetsEvaluation()
    for folder in eval_set_dirs(data_dir):
        if config.sets and folder.name not in config.sets:
            continue
        rs = load_eval_set(folder)
        out.results[folder.name] = {}
        for system in config.systems:
            dense, hybrid = system.removesuffix(HYBRID_SUFFIX), system.endswith(HYBRID_SUFFIX)  # rl+bm25: fused
            for reasoning in ([False, True] if system in config.reasoning else [False]):
                name = system + ("+reasoning" if reasoning else "")
                target = models.get(dense, dense)
                if dense in models and not Path(target).is_dir():
                    log.warning("skipping %s: %s does not exist", name, target)
                    continue
                log.info("evaluating %s on %s", name, folder.name)
                ev = evaluate_detailed(target, rs, reasoning, max_queries=config.max_queries, config=config,
                                       model_config=model_config, bm25=bm25, progress=progress, hybrid=hybrid)
                out.results[folder.name][name] = {k: v for k, v in ev.result.items() if k not in ("dataset", "system")}
                out.rows.append({**ev.result, "system": name})
                out.examples += [(folder.name, name, t) for t in ev.example_traces[:2]]
    if not out.results:
        raise ArtifactError(f"{data_dir}/eval", None, "missing_file", "no evaluation sets found (run the data stage)")
    return out
