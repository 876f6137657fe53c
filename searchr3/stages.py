"""One function per pipeline stage: the single code path behind both ``dvc repro`` and the Prefect flows.

Each stage reads its inputs from the standard paths (which ``dvc.yaml`` declares as deps), writes its
outputs atomically to the standard paths (declared as outs/metrics), and returns a small summary dict.
The CLI (``searchr3 stage NAME``) and the Prefect tasks in ``tasks/`` only call these functions.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from searchr3.config import load_params, section
from searchr3.data.io import write_json_atomic

log = logging.getLogger(__name__)

PATHS = {
    "base": "models/base", "data": "data", "validation": "reports/validation", "traces": "traces/traces.jsonl",
    "sft": "models/sft", "sft_ckpt": "checkpoints/sft", "rl": "models/rl", "rl_ckpt": "checkpoints/rl",
    "rl_index": "indexes/rl", "index": "indexes/production", "metrics": "metrics", "report": "reports/eval.md",
}
STAGES = ("base_model", "data", "validate", "traces", "sft", "rl", "index", "evaluate")


@dataclass
class EvaluateConfig:
    """``evaluate:`` section: which systems are scored on every evaluation set of the data stage."""

    systems: list[str] = field(default_factory=lambda: ["bm25", "minilm", "base", "sft", "rl"])
    reasoning: list[str] = field(default_factory=lambda: ["base", "sft", "rl"])  # also scored with reasoning (+reasoning)
    sets: list[str] | None = None  # evaluation set names (data/eval/<name>); null: all
    max_queries: int | None = None  # per set; null: all judged queries
    gate_set: str | None = None  # the set whose nDCG@10 the promotion gate reads; null: the first


def _params(params: dict | str | None) -> dict:
    return params if isinstance(params, dict) else load_params(params or "params.yaml")


def base_model(params=None, out: str = PATHS["base"]) -> dict:
    from searchr3.model.config import ModelConfig
    from searchr3.model.materialize import materialize

    return materialize(section(_params(params), "model", ModelConfig).base, out)


def data(params=None, out: str = PATHS["data"], progress: bool = True) -> dict:
    from searchr3.data.build import build_data
    from searchr3.data.config import DataConfig

    return build_data(section(_params(params), "data", DataConfig), out, progress=progress)


def validate(params=None, data_dir: str = PATHS["data"], report_dir: str = PATHS["validation"]) -> dict:
    """Raises ``searchr3.validate.runner.ValidationFailed`` (naming dataset, expectation, rows) on bad data."""
    from searchr3.validate.config import ValidateConfig
    from searchr3.validate.runner import validate_data

    summary = validate_data(data_dir, section(_params(params), "validate", ValidateConfig), str(Path(report_dir).resolve()))
    # deterministic content (no timings): downstream stages depend on this file
    write_json_atomic(Path(PATHS["metrics"]) / "validation.json",
                      {"passed": True, "tables": len(summary["tables"]),
                       "expectations": sum(t["expectations"] for t in summary["tables"])})
    return summary


def traces(params=None, base: str = PATHS["base"], data_dir: str = PATHS["data"], out: str = PATHS["traces"]) -> dict:
    """Reasoning traces for SFT's CE/KL terms (``sft.traces``: self | file | none); see ``searchr3.train.traces``."""
    from searchr3.data.build import load_train
    from searchr3.model.config import ModelConfig
    from searchr3.model.embedder import Embedder
    from searchr3.train.sft_config import SFTConfig
    from searchr3.train.traces import read_traces, sample_self_traces, write_traces

    p = _params(params)
    cfg = section(p, "sft", SFTConfig)
    started = time.time()
    if cfg.traces == "self":
        embedder = Embedder.from_pretrained(base, config=section(p, "model", ModelConfig))
        embedder.config.max_doc_tokens = cfg.max_doc_tokens
        rows = [dict(r) for r in load_train(data_dir)]
        records = sample_self_traces(embedder, rows, cfg.trace_queries, cfg.trace_samples, cfg.trace_temperature,
                                     cfg.max_trace_tokens, seed=cfg.seed)
    elif cfg.traces == "file":
        records = read_traces(cfg.traces_file)
    elif cfg.traces == "none":
        records = []
    else:
        raise ValueError(f"sft.traces must be self, file or none, not {cfg.traces!r}")
    kept = [r for r in records if r.get("kept", True)]
    summary = {"source": cfg.traces, "candidates": len(records), "kept": len(kept),
               "queries_with_trace": len({r["query_id"] for r in kept}),
               "emitted_token": sum(1 for r in records if r.get("emitted")), "wall_s": round(time.time() - started, 1)}
    write_traces(out, records, summary)
    return summary


def sft(params=None, base: str = PATHS["base"], data_dir: str = PATHS["data"], traces_path: str = PATHS["traces"],
        out: str = PATHS["sft"], checkpoint_dir: str = PATHS["sft_ckpt"], progress: bool = True) -> dict:
    from searchr3.data.build import eval_set_dirs, load_eval_set, load_train
    from searchr3.model.config import ModelConfig
    from searchr3.train.sft import train_sft
    from searchr3.train.sft_config import SFTConfig
    from searchr3.train.traces import best_kept, read_traces

    p = _params(params)
    cfg = section(p, "sft", SFTConfig)
    rows = [dict(r) for r in load_train(data_dir)]
    trace_map = best_kept(read_traces(traces_path)) if cfg.traces != "none" and _non_empty(traces_path) else {}
    summary = train_sft(cfg, section(p, "model", ModelConfig), base, rows, _dev_set(data_dir, eval_set_dirs, load_eval_set),
                        out, checkpoint_dir, traces=trace_map, progress=progress)
    write_json_atomic(Path(PATHS["metrics"]) / "sft.json", summary)
    return summary


def rl(params=None, start: str = PATHS["sft"], data_dir: str = PATHS["data"], out: str = PATHS["rl"],
       checkpoint_dir: str = PATHS["rl_ckpt"], index_out: str = PATHS["rl_index"], progress: bool = True) -> dict:
    from searchr3.index.config import IndexConfig
    from searchr3.model.config import ModelConfig
    from searchr3.train.grpo import train_grpo
    from searchr3.train.grpo_config import GRPOConfig

    p = _params(params)
    rows, corpus = rl_inputs(data_dir)
    summary = train_grpo(section(p, "rl", GRPOConfig), section(p, "model", ModelConfig), section(p, "index", IndexConfig),
                         start, rows, corpus, out, checkpoint_dir, index_out=index_out, progress=progress)
    write_json_atomic(Path(PATHS["metrics"]) / "rl.json", summary)
    return summary


def rl_inputs(data_dir: str = PATHS["data"]) -> tuple[list[dict], dict[str, str]]:
    """Training rows and corpus of the data stage, as the rl stage feeds them to ``train_grpo``.

    Document ids are unique per source only, so the live index keys them as ``"<source>:<doc_id>"``.
    """
    from searchr3.data.build import load_train, load_train_corpus

    rows = [dict(r, positive_id=f"{r['source']}:{r['positive_id']}",
                 negative_ids=[f"{r['source']}:{d}" for d in r["negative_ids"]]) for r in load_train(data_dir)]
    corpus = {f"{r['source']}:{r['doc_id']}": r["text"] for r in load_train_corpus(data_dir)}
    return rows, corpus


def index(params=None, model: str = PATHS["rl"], corpus_dir: str | None = None, out: str = PATHS["index"]) -> dict:
    """Snapshot of the search index users query: ``model`` over an evaluation corpus (default: the gate set)."""
    from searchr3.index.config import IndexConfig
    from searchr3.index.snapshot import save_snapshot
    from searchr3.index.store import DocumentIndex
    from searchr3.model.config import ModelConfig
    from searchr3.model.embedder import Embedder

    p = _params(params)
    corpus_dir = corpus_dir or str(_gate_dir(p))
    corpus = read_corpus(corpus_dir)
    embedder = Embedder.from_pretrained(model, config=section(p, "model", ModelConfig))
    idx = DocumentIndex.from_config(section(p, "index", IndexConfig))
    ids = list(corpus)
    idx.build(ids, [corpus[d] for d in ids], lambda texts: embedder.encode_documents(texts), version=0, progress=True)
    manifest = {"model_checksum": embedder.checksum, "model_path": str(model), "corpus": str(corpus_dir)}
    save_snapshot(idx, out, manifest)
    return {"documents": len(ids), "out": out, **manifest}


def evaluate(params=None, data_dir: str = PATHS["data"], out_dir: str = PATHS["metrics"],
             report: str = PATHS["report"], progress: bool = True) -> dict:
    """Score every configured system on every evaluation set → metrics/eval.json, plots data, reports/eval.md."""
    from searchr3.data.build import eval_set_dirs, load_eval_set
    from searchr3.eval.config import EvalConfig
    from searchr3.eval.evaluate import evaluate_detailed
    from searchr3.eval.report import render_table
    from searchr3.model.config import ModelConfig

    p = _params(params)
    cfg = section(p, "evaluate", EvaluateConfig)
    eval_cfg, model_cfg = section(p, "eval", EvalConfig), section(p, "model", ModelConfig)
    models = {"base": PATHS["base"], "sft": PATHS["sft"], "rl": PATHS["rl"]}
    results: dict[str, dict] = {}
    rows, examples = [], []
    for folder in eval_set_dirs(data_dir):
        if cfg.sets and folder.name not in cfg.sets:
            continue
        rs = load_eval_set(folder)
        results[folder.name] = {}
        for system in cfg.systems:
            for reasoning in ([False, True] if system in cfg.reasoning else [False]):
                name = system + ("+reasoning" if reasoning else "")
                target = models.get(system, system)
                if system in models and not Path(target).is_dir():
                    log.warning("skipping %s: %s does not exist", name, target)
                    continue
                log.info("evaluating %s on %s", name, folder.name)
                ev = evaluate_detailed(target, rs, reasoning, max_queries=cfg.max_queries, config=eval_cfg,
                                       model_config=model_cfg, progress=progress)
                res = {k: v for k, v in ev.result.items() if k not in ("dataset", "system")}
                results[folder.name][name] = res
                rows.append({**ev.result, "system": name})
                examples += [(folder.name, name, t) for t in ev.example_traces[:2]]
    if not results:
        raise ValueError(f"{data_dir}: no evaluation sets found (run the data stage)")
    write_json_atomic(Path(out_dir) / "eval.json", results)
    bars = [{"set": ds, "system": s, "ndcg@10": r["ndcg@10"]} for ds, by in results.items() for s, r in by.items()]
    write_json_atomic(Path("plots") / "eval_ndcg.json", bars)
    lines = ["# Evaluation report", "", render_table(rows), ""]
    if examples:
        lines += ["## Example reasoning traces", ""]
        lines += [f"- **{s}** on {ds}: {t.strip()[:400]!r}" for ds, s, t in examples]
    Path(report).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(report).with_name(f".{Path(report).name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(report)
    return results


def read_corpus(folder: str | Path) -> dict[str, str]:
    """``corpus.jsonl`` of a BEIR folder (title joined to text), for indexing a user's own documents."""
    from searchr3.data.beir import collect_texts
    from searchr3.data.io import read_jsonl

    path = Path(folder) / "corpus.jsonl"
    return collect_texts(read_jsonl(path), path, with_title=True)


def gate_set(params) -> str:
    p = _params(params)
    return section(p, "evaluate", EvaluateConfig).gate_set or _gate_dir(p).name


def _gate_dir(p: dict) -> Path:
    from searchr3.data.build import eval_set_dirs

    name = section(p, "evaluate", EvaluateConfig).gate_set
    dirs = eval_set_dirs(PATHS["data"])
    chosen = [d for d in dirs if d.name == name] if name else [d for d in dirs if d.name.endswith("-test")] or dirs
    if not chosen:
        raise FileNotFoundError(f"no evaluation set {name or ''} under {PATHS['data']}/eval (run the data stage)")
    return chosen[0]


def _dev_set(data_dir, eval_set_dirs, load_eval_set):
    dev = [d for d in eval_set_dirs(data_dir) if d.name.endswith("-dev")]
    return load_eval_set(dev[0]) if dev else None


def _non_empty(path: str) -> bool:
    p = Path(path)
    return p.exists() and p.stat().st_size > 0


def dump(summary) -> str:
    return json.dumps(summary, indent=2, default=str)
