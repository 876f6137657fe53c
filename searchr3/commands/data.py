"""``searchr3 data build``: the data stage (load sources, mine negatives, mix, write ``data/``)."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from searchr3.config import load_params, section
from searchr3.data.bm25 import Bm25Config
from searchr3.data.config import DataConfig


def register(sub) -> None:
    p = sub.add_parser("data", help="build the training and evaluation data")
    verbs = p.add_subparsers(dest="verb", required=True)
    b = verbs.add_parser("build", help="load params `data:` sources, mine negatives, write train/ and eval/")
    b.add_argument("--out", default="data", help="output folder, replaced atomically (default: data)")
    b.add_argument("--no-progress", action="store_true", help="hide progress bars")
    b.set_defaults(func=_build)


def params_or_defaults(args) -> dict:
    """params.yaml when it exists; an absent default file means every section takes its defaults."""
    if Path(args.params).exists() or args.params != "params.yaml" or args.overrides:
        return load_params(args.params, args.profile, args.overrides)
    print(f"note: {args.params} not found; using default parameters", file=sys.stderr)
    return {}


def _build(args) -> int:
    from searchr3.data.build import build_data
    from searchr3.data.rules import Limits
    from searchr3.validate.config import ValidateConfig

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("searchr3").setLevel(logging.INFO)
    params = params_or_defaults(args)
    limits = Limits.of(section(params, "validate", ValidateConfig))  # the validator's bounds: one set of rules
    manifest = build_data(section(params, "data", DataConfig), args.out, progress=not args.no_progress,
                          bm25=section(params, "bm25", Bm25Config), limits=limits)
    summary = {"out": args.out, "train": manifest["train"],
               "eval_sets": {k: {c: v[c] for c in ("queries", "documents")} for k, v in manifest["eval_sets"].items()},
               "mining": {k: v.get("mining") for k, v in manifest["sources"].items() if v.get("mining")}}
    print(json.dumps(summary, indent=2))
    return 0
