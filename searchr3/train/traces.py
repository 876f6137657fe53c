"""Reasoning traces for the SFT CE/KL terms.

A small model has no teacher, so the source is a parameter (``sft.traces``):
  ``self``  the reference (base) model samples ``trace_samples`` traces per training query at
            ``trace_temperature`` (the candidates; the base's own margins are recorded for reference);
  ``file``  a JSONL of ``{"query_id", "trace"}`` from any stronger teacher (e.g. a large model on a GPU);
  ``none``  no traces: contrastive terms only.
The output is a JSONL file (one line per candidate), made once and reused. Which candidates SFT trains on is
decided inside SFT (``score_candidates``), by the model being trained after a direct-only warm-up, in the exact
training format: a trace is kept when the query embedded with it separates the positive from its hard
negatives by a wider margin than the query embedded directly (rejection sampling).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from searchr3.data.errors import DataError
from searchr3.errors import ConfigError
from searchr3.data.io import read_jsonl
from searchr3.files import write_json_atomic, write_text_atomic
from searchr3.paths import summary_beside


def margin(q: np.ndarray, pos: np.ndarray, negs: np.ndarray) -> float:
    """cos(q, positive) - max cos(q, negative); vectors are normalised."""
    return float(q @ pos - (negs @ q).max()) if len(negs) else float(q @ pos)


def sample_self_traces(embedder, rows: list[dict], n_queries: int, n_samples: int, temperature: float,
                       max_new_tokens: int, seed: int = 0, progress: bool = True, negatives: int = 3) -> list[dict]:
    """Rejection-sample traces with ``embedder`` (the frozen reference); returns one record per candidate.

    The margin is measured against the first ``negatives`` mined negatives of each row."""
    import torch

    rng = random.Random(seed)
    chosen = rows[:]
    rng.shuffle(chosen)
    chosen = [dict(r, negatives=r["negatives"][:negatives]) for r in chosen if r["negatives"]][:n_queries]
    if not chosen:
        return []
    texts = sorted({r["positive"] for r in chosen} | {n for r in chosen for n in r["negatives"]})
    doc_vec = dict(zip(texts, embedder.encode_documents(texts, progress=progress)))
    direct = embedder.encode_queries([r["query"] for r in chosen]).vectors
    records = []
    torch.manual_seed(seed)
    for sample in range(n_samples):
        gen = embedder.generate_reasoning([r["query"] for r in chosen], temperature=temperature,
                                          max_new_tokens=max_new_tokens, progress=progress, no_repeat_ngram=0)
        vectors = embedder.encode_ids(gen.full_ids)
        for i, r in enumerate(chosen):
            pos, negs = doc_vec[r["positive"]], np.stack([doc_vec[n] for n in r["negatives"]])
            base, score = margin(direct[i], pos, negs), margin(vectors[i], pos, negs)
            records.append({"query_id": r["query_id"], "sample": sample, "trace": gen.traces[i],
                            "emitted": gen.emitted[i], "score": round(score, 6), "baseline": round(base, 6),
                            "kept": score > base})
    return records


def score_candidates(embedder, rows: list[dict], records: list[dict], max_query_tokens: int, max_trace_tokens: int,
                     negatives: int = 3) -> list[dict]:
    """Rejection-score candidate traces with ``embedder`` (the model being trained) in the exact training format.

    Each candidate's query is embedded as ``Embedder.query_sequences`` builds it for training (reasoning prompt +
    trace + closing suffix through the token, which is also what inference embeds) and directly; the candidate is
    kept when its margin (``margin``: positive minus the hardest of the first ``negatives`` mined negatives) beats
    the direct query's. Returns the records with ``score``, ``baseline`` and ``kept`` replaced (``scored_by``:
    ``trainee``); candidates of queries not in ``rows`` or without a negative are dropped.
    """
    by_id = {r["query_id"]: r for r in rows if r["negatives"]}
    todo = [rec for rec in records if rec["query_id"] in by_id and rec["trace"].strip()]
    if not todo:
        return []
    queries = sorted({rec["query_id"] for rec in todo})
    texts = sorted({by_id[q]["positive"] for q in queries} | {n for q in queries for n in by_id[q]["negatives"][:negatives]})
    doc_vec = dict(zip(texts, embedder.encode_documents(texts)))
    direct = dict(zip(queries, embedder.encode_ids(embedder.tokenize_queries([by_id[q]["query"] for q in queries],
                                                                            max_query_tokens))))
    seqs = embedder.query_sequences([by_id[rec["query_id"]]["query"] for rec in todo], [rec["trace"] for rec in todo],
                                    max_query_tokens, max_trace_tokens)
    vectors = embedder.encode_ids([s.ids for s in seqs])
    out = []
    for rec, vec in zip(todo, vectors):
        row = by_id[rec["query_id"]]
        pos, negs = doc_vec[row["positive"]], np.stack([doc_vec[n] for n in row["negatives"][:negatives]])
        base, score = margin(direct[rec["query_id"]], pos, negs), margin(vec, pos, negs)
        out.append(dict(rec, score=round(score, 6), baseline=round(base, 6), kept=score > base, scored_by="trainee"))
    return out


def collect_traces(config, model_config, base_dir: str | Path, data_dir: str | Path,
                   progress: bool = True) -> list[dict]:
    """Every candidate trace of ``config.traces`` (``SFTConfig``): sampled by the base model, read from a file,
    or none."""
    if config.traces == "self":
        from searchr3.data.build import load_train
        from searchr3.model.embedder import Embedder

        embedder = Embedder.from_pretrained(base_dir, config=model_config)
        embedder.config.max_doc_tokens = config.max_doc_tokens
        rows = [dict(r) for r in load_train(data_dir)]
        return sample_self_traces(embedder, rows, config.trace_queries, config.trace_samples, config.trace_temperature,
                                  config.max_trace_tokens, seed=config.seed, progress=progress)
    if config.traces == "file":
        return read_traces(config.traces_file)
    if config.traces == "none":
        return []
    raise ConfigError(f"[sft.traces]: must be self, file or none, not {config.traces!r}")


def trace_summary(records: list[dict], source: str, wall_s: float) -> dict:
    kept = [r for r in records if r.get("kept", True)]
    return {"source": source, "candidates": len(records), "kept": len(kept),
            "queries_with_trace": len({r["query_id"] for r in kept}),
            "emitted_token": sum(1 for r in records if r.get("emitted")), "wall_s": round(wall_s, 1)}


def best_kept(records: list[dict]) -> dict[str, str]:
    """query_id -> the kept trace with the highest score."""
    best: dict[str, dict] = {}
    for r in records:
        if r.get("kept", True) and r["trace"].strip():
            if r["query_id"] not in best or r.get("score", 0) > best[r["query_id"]].get("score", 0):
                best[r["query_id"]] = r
    return {q: r["trace"] for q, r in best.items()}


def read_traces(path: str | Path) -> list[dict]:
    """Read a traces JSONL (``file`` source or our own output); each line needs query_id and trace."""
    records = []
    for line, record in read_jsonl(path):
        for key in ("query_id", "trace"):
            if not isinstance(record.get(key), str):
                raise DataError(path, line, "missing_field", f"{key!r} must be a string")
        records.append(record)
    return records


def candidate_traces(path: str | Path, source: str) -> list[dict]:
    """Every candidate of the traces stage's output (SFT scores them itself); [] when ``source`` is ``none`` or the file is empty."""
    p = Path(path)
    if source == "none" or not p.exists() or p.stat().st_size == 0:
        return []
    return read_traces(p)


def write_traces(path: str | Path, records: list[dict], summary: dict) -> None:
    """The traces JSONL at ``path`` and its summary beside it (``<stem>.summary.json``), each atomically."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    write_json_atomic(summary_beside(path), summary)
