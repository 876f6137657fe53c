"""One function per pipeline stage: the single code path behind both ``dvc repro`` and the Prefect flows.

Each stage reads its inputs from the standard paths (``searchr3.paths``, which ``dvc.yaml`` declares as deps),
writes its outputs atomically to the standard paths (declared as outs/metrics), and returns a small summary dict.
Every stage has the same signature, ``stage(params=None, <paths>=..., progress=True)``: the CLI
(``searchr3 stage NAME``) and the Prefect tasks in ``tasks/`` call them all alike and do nothing else.
Each stage is decorated with ``searchr3.outputs.writes``: before any work it locks its outputs (a second run
of the same stage fails at once, exit 5), removes the temporary files a killed run left, and checks that they
are writable. This module holds the stage functions only; what they call lives beside the code it belongs to.
"""
from __future__ import annotations

import time
from pathlib import Path

from searchr3.config import load_params, section
from searchr3.files import write_json_atomic
from searchr3.outputs import metrics_with, writes
from searchr3.paths import MODELS, PATHS, metrics_file, summary_beside
from searchr3.ranks import secondary_rank

STAGES = ("base_model", "sources", "data", "validate", "traces", "sft", "rl", "index", "evaluate")


def _params(params: dict | str | None) -> dict:
    return params if isinstance(params, dict) else load_params(params or "params.yaml")


@writes("out")
def base_model(params=None, out: str = PATHS["base"], progress: bool = True) -> dict:
    from searchr3.model.config import ModelConfig
    from searchr3.model.materialize import materialize

    return materialize(section(_params(params), "model", ModelConfig).base, out)


@writes("out")
def sources(params=None, out: str = PATHS["sources"], progress: bool = True) -> dict:
    """Content hash and row counts of every data source (``searchr3.sources``): the data stage's dependency."""
    from searchr3.data.config import DataConfig
    from searchr3.sources import fingerprint_sources

    summary = fingerprint_sources(section(_params(params), "data", DataConfig))
    write_json_atomic(out, summary)
    return summary


@writes("out")
def data(params=None, out: str = PATHS["data"], progress: bool = True) -> dict:
    from searchr3.data.bm25 import Bm25Config
    from searchr3.data.build import build_data
    from searchr3.data.config import DataConfig
    from searchr3.data.rules import Limits
    from searchr3.validate.config import ValidateConfig

    p = _params(params)
    limits = Limits.of(section(p, "validate", ValidateConfig))  # the validator's bounds: one set of rules
    return build_data(section(p, "data", DataConfig), out, progress=progress, bm25=section(p, "bm25", Bm25Config),
                      limits=limits)


@writes("report_dir", also=(metrics_file("validation"),))
def validate(params=None, data_dir: str = PATHS["data"], report_dir: str = PATHS["validation"],
             progress: bool = True) -> dict:
    """Raises ``searchr3.validate.runner.ValidationFailed`` (naming dataset, expectation, rows) on bad data."""
    from searchr3.validate.config import ValidateConfig
    from searchr3.validate.runner import validate_data

    summary = validate_data(data_dir, section(_params(params), "validate", ValidateConfig), str(Path(report_dir).resolve()))
    # deterministic content (no timings): downstream stages depend on this file
    write_json_atomic(metrics_file("validation"),
                      {"passed": True, "tables": len(summary["tables"]),
                       "expectations": sum(t["expectations"] for t in summary["tables"])})
    return summary


@writes("out", also=lambda a: (summary_beside(a["out"]),))
def traces(params=None, base: str = PATHS["base"], data_dir: str = PATHS["data"], out: str = PATHS["traces"],
           progress: bool = True) -> dict:
    """Reasoning traces for SFT's CE/KL terms (``sft.traces``: self | file | none); see ``searchr3.train.traces``."""
    from searchr3.model.config import ModelConfig
    from searchr3.train.sft_config import SFTConfig
    from searchr3.train.traces import collect_traces, trace_summary, write_traces

    p = _params(params)
    cfg = section(p, "sft", SFTConfig)
    started = time.time()
    records = collect_traces(cfg, section(p, "model", ModelConfig), base, data_dir, progress=progress)
    summary = trace_summary(records, cfg.traces, time.time() - started)
    write_traces(out, records, summary)
    return summary


@writes("out", "checkpoint_dir", also=(metrics_file("sft"), "dvclive/sft"))
def sft(params=None, base: str = PATHS["base"], data_dir: str = PATHS["data"], traces_path: str = PATHS["traces"],
        out: str = PATHS["sft"], checkpoint_dir: str = PATHS["sft_ckpt"], progress: bool = True) -> dict:
    from searchr3.data.build import dev_set, load_train
    from searchr3.model.config import ModelConfig
    from searchr3.train.sft import train_sft
    from searchr3.train.sft_config import SFTConfig
    from searchr3.train.traces import candidate_traces

    p = _params(params)
    cfg = section(p, "sft", SFTConfig)
    rows = [dict(r) for r in load_train(data_dir)]

    def train() -> dict:
        return train_sft(cfg, section(p, "model", ModelConfig), base, rows, dev_set(data_dir, cfg.dev_set), out, checkpoint_dir,
                         traces=candidate_traces(traces_path, cfg.traces), progress=progress)

    if secondary_rank():  # train.processes > 1: rank 0 writes the model and the metrics
        return train()
    with metrics_with(metrics_file("sft"), out) as put:  # model and metrics: both or neither
        put(summary := train())
    return summary


@writes("out", "checkpoint_dir", "index_out", also=(metrics_file("rl"), "dvclive/rl"))
def rl(params=None, start: str = PATHS["sft"], data_dir: str = PATHS["data"], out: str = PATHS["rl"],
       checkpoint_dir: str = PATHS["rl_ckpt"], index_out: str = PATHS["rl_index"], progress: bool = True) -> dict:
    from searchr3.data.build import load_train_with_corpus
    from searchr3.index.config import IndexConfig
    from searchr3.model.config import ModelConfig
    from searchr3.train.grpo import train_grpo
    from searchr3.train.grpo_config import GRPOConfig

    p = _params(params)
    rows, corpus = load_train_with_corpus(data_dir)

    def train() -> dict:
        return train_grpo(section(p, "rl", GRPOConfig), section(p, "model", ModelConfig), section(p, "index", IndexConfig),
                          start, rows, corpus, out, checkpoint_dir, index_out=index_out, progress=progress)

    if secondary_rank():  # train.processes > 1: rank 0 writes the model, the index and the metrics
        return train()
    with metrics_with(metrics_file("rl"), out, index_out) as put:  # model, index and metrics: all or none
        put(summary := train())
    return summary


@writes("out")
def index(params=None, model: str = PATHS["rl"], corpus_dir: str | None = None, out: str = PATHS["index"],
          progress: bool = True, shards=None) -> dict:
    """Snapshot of the search index users query: ``model`` over an evaluation corpus (default: the first test set).

    The vectors go through the evaluation's document-embedding cache (``evaluate.cache_dir``, keyed by model
    checksum, document settings and texts), so the evaluate stage scoring the same model on the same set encodes
    nothing again (and the other way round, whichever stage runs first).
    ``shards``: the corpus's vectors, already encoded in shards (``[(Shard, vectors)]``, ``searchr3.index.shards``:
    the Prefect flow encodes them on Dask workers); this stage then only builds and writes the index."""
    from searchr3.data.beir import read_corpus
    from searchr3.eval.config import EvaluateConfig
    from searchr3.eval.dense import document_embeddings
    from searchr3.eval.sets import search_dir
    from searchr3.index.config import IndexConfig
    from searchr3.index.snapshot import save_snapshot
    from searchr3.index.store import DocumentIndex
    from searchr3.model.config import ModelConfig
    from searchr3.model.embedder import Embedder

    p = _params(params)
    eval_config = section(p, "evaluate", EvaluateConfig)
    corpus_dir = corpus_dir or str(search_dir(eval_config))
    corpus = read_corpus(corpus_dir)
    embedder = Embedder.from_pretrained(model, config=section(p, "model", ModelConfig))
    idx = DocumentIndex.from_config(section(p, "index", IndexConfig))
    ids = list(corpus)
    if shards is not None:
        from searchr3.index.shards import index_from_shards

        index_from_shards(idx, ids, shards, texts=corpus)
    else:
        vectors, _ = document_embeddings(embedder, ids, [corpus[d] for d in ids], eval_config.cache_dir, progress)
        idx.build_from_vectors(ids, vectors, version=0, texts=corpus)
    manifest = {"model_checksum": embedder.checksum, "model_path": str(model), "corpus": str(corpus_dir)}
    save_snapshot(idx, out, manifest)
    return {"documents": len(ids), "out": out, **manifest}


@writes("report", also=lambda a: (Path(a["out_dir"]) / "eval.json", Path(PATHS["plots"]) / "eval_ndcg.json"))
def evaluate(params=None, data_dir: str = PATHS["data"], out_dir: str = PATHS["metrics"],
             report: str = PATHS["report"], progress: bool = True, done=None) -> dict:
    """Score every configured system on every evaluation set → metrics/eval.json, plots data, reports/eval.md.

    ``done``: the scores, already computed (``searchr3.eval.sets.SetsEvaluation``: the Prefect evaluate flow scores
    the (system, set) cells on Dask workers); this stage then only writes them."""
    from searchr3.data.bm25 import Bm25Config
    from searchr3.eval.config import EvaluateConfig
    from searchr3.eval.report import write_report
    from searchr3.eval.sets import evaluate_sets
    from searchr3.model.config import ModelConfig

    p = _params(params)
    if done is None:
        done = evaluate_sets(data_dir, section(p, "evaluate", EvaluateConfig), MODELS,
                             model_config=section(p, "model", ModelConfig), bm25=section(p, "bm25", Bm25Config),
                             progress=progress)
    write_json_atomic(Path(out_dir) / "eval.json", done.results)
    bars = [{"set": ds, "system": s, "ndcg@10": r["ndcg@10"]} for ds, by in done.results.items() for s, r in by.items()]
    write_json_atomic(Path(PATHS["plots"]) / "eval_ndcg.json", bars)
    write_report(report, done.rows, done.examples)
    return done.results
