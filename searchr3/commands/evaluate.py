"""searchr3 evaluate: score bm25, minilm or a trained model on a BEIR folder; print a table, write JSON."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

BASELINE_CHOICES = "bm25 | minilm | a model folder | a delta folder (searchr3 model delta)"


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="nDCG@10 / Recall@100 / MRR@10 of a system on a BEIR folder",
                              description=__doc__)
    p.add_argument("--model", required=True, help=f"system to evaluate: {BASELINE_CHOICES}")
    p.add_argument("--dataset", required=True, type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    p.add_argument("--reasoning", action="store_true", help="queries reason before embedding (model folders only)")
    p.add_argument("--hybrid", action="store_true",
                   help="fuse the dense ranking with BM25's (reciprocal-rank fusion, evaluate.rrf_k); minilm or a model folder")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON to this file")
    p.add_argument("--max-queries", type=int, default=None, help="evaluate only the first N judged queries")
    p.add_argument("--cap", type=int, default=None,
                   help="cut documents at N tokens for the dense system (default: the first of evaluate.doc_caps)")
    p.add_argument("--base", default=None,
                   help="the base model a delta folder is applied to (default: the path its manifest names)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="our model's dtype (default: model.precision; auto is bf16 on CUDA and on CPUs with native "
                        "bf16, so pass fp32 to rescore a number measured in fp32 on another machine)")
    p.set_defaults(func=run)


def _settings(args):
    """(EvaluateConfig, ModelConfig or None, Bm25Config) from params.yaml; defaults when the file is absent."""
    from searchr3.commands.data import params_or_defaults
    from searchr3.config import section
    from searchr3.data.bm25 import Bm25Config
    from searchr3.eval.config import EvaluateConfig

    params = params_or_defaults(args)
    if not params:
        return EvaluateConfig(), None, Bm25Config()
    from searchr3.model.config import ModelConfig

    return (section(params, "evaluate", EvaluateConfig), section(params, "model", ModelConfig),
            section(params, "bm25", Bm25Config))


def reproduce_command(args) -> str:
    parts = ["searchr3"]
    if args.params != "params.yaml":
        parts += ["--params", str(args.params)]
    if args.profile:
        parts += ["--profile", args.profile]
    for key, value in args.overrides.items():
        parts += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    parts += ["evaluate", "--model", args.model, "--dataset", str(args.dataset), "--split", args.split]
    if args.reasoning:
        parts.append("--reasoning")
    if args.hybrid:
        parts.append("--hybrid")
    if args.max_queries is not None:
        parts += ["--max-queries", str(args.max_queries)]
    if args.cap is not None:
        parts += ["--cap", str(args.cap)]
    if args.base is not None:
        parts += ["--base", args.base]
    if args.precision is not None:
        parts += ["--precision", args.precision]
    if args.out is not None:
        parts += ["--out", str(args.out)]
    return shlex.join(parts)


def run(args) -> int:
    from searchr3.eval.evaluate import BASELINES, evaluate_detailed
    from searchr3.eval.report import render_table

    if args.hybrid and args.model == "bm25":
        print("error: --hybrid fuses BM25 with a dense system; use --model minilm or a model folder", file=sys.stderr)
        return 2
    if args.reasoning and args.model in BASELINES:
        print(f"error: {args.model} cannot reason; --reasoning needs a model folder", file=sys.stderr)
        return 2
    if args.max_queries is not None and args.max_queries < 1:
        print("error: --max-queries must be at least 1", file=sys.stderr)
        return 2
    if args.cap is not None and args.cap < 1:
        print("error: --cap must be at least 1", file=sys.stderr)
        return 2
    if args.base is not None and args.model in BASELINES:
        print(f"error: --base applies to a delta folder, not {args.model}", file=sys.stderr)
        return 2
    from searchr3.data.beir import load_beir
    from searchr3.eval.evaluate import load_encoder

    eval_config, model_config, bm25_config = _settings(args)
    if args.precision is not None:
        from dataclasses import replace

        from searchr3.model.config import ModelConfig

        model_config = replace(model_config or ModelConfig(), precision=args.precision)
    rs = load_beir(args.dataset, args.split)
    encoder = None if args.base is None else load_encoder(args.model, eval_config, model_config, args.cap, base=args.base)
    evaluation = evaluate_detailed(args.model, rs, args.reasoning, split=args.split, max_queries=args.max_queries,
                                   config=eval_config, model_config=model_config, bm25=bm25_config, progress=True,
                                   hybrid=args.hybrid, doc_cap=args.cap, encoder=encoder)
    if args.hybrid:
        evaluation.result["system"] += "+bm25"
    print(render_table([evaluation.result]))
    for i, trace in enumerate(evaluation.example_traces, 1):
        print(f"example trace {i}: {trace!r}")
    print(f"reproduce: {reproduce_command(args)}")
    if args.out is not None:
        from searchr3.files import write_json_atomic

        write_json_atomic(args.out, evaluation.result)
        print(f"wrote {args.out}")
    return 0
